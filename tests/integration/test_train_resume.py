"""Kill-and-resume on the CPU, bit for bit: a run interrupted (SIGTERM, SIGKILL, a crash in the
middle of writing a checkpoint) and resumed with ``--resume`` produces the same loss sequence,
the same final weights and the same validation metrics as an uninterrupted run.

The model sleeps a few milliseconds per training step (``slow_mlp`` below) so that a kill lands
at a predictable place on a loaded machine; it has dropout, and the config uses Adam, a cosine
schedule with warm-up, gradient clipping, gradient accumulation and a log interval that does not
divide the checkpoint interval, so every piece of state a resume must restore is exercised."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmdev.track import Store
from lmdev.train import checkpoint as ckpt

pytestmark = pytest.mark.integration

MODULE = '''
import time
import torch

class SlowMLP(torch.nn.Module):
    """digits MLP with dropout that sleeps per training forward: predictable kill points."""

    def __init__(self, delay):
        super().__init__()
        self.delay = delay
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                       torch.nn.Linear(48, 10))

    def forward(self, x):
        if self.training and self.delay:
            time.sleep(self.delay)
        return self.net(x)

def slow_mlp(delay=0.0):
    return SlowMLP(delay)
'''

CONFIG = """
name: resume-me
seed: 3
model: {type: "python:lmdev_resume_models:slow_mlp", kwargs: {delay: 0.004}}
data: {type: digits, batch_size: 32, val_fraction: 0.2}
loss: {type: cross_entropy, label_smoothing: 0.05}
optimizer: {type: adam, lr: 0.003}
schedule: {type: cosine, warmup_steps: 10, min_lr_ratio: 0.1}
train: {max_steps: 120, eval_every: 1000, log_every: 3, grad_clip: 1.0, grad_accum: 2}
checkpoint: {every: 20, keep: 10}
precision: fp32
device: cpu
"""


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, LMDEV_HOME=str(home), OMP_NUM_THREADS="1", NO_COLOR="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(home.parent), os.environ.get("PYTHONPATH")])))
    env.pop("LMDEV_TEST_CRASH_AT", None)
    env.update(extra)
    return env


def _start(tmp: Path, home: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lmdev", "train", str(tmp / "config.yaml"), "--json", "--no-telemetry", *extra]
    return subprocess.Popen(cmd, cwd=tmp, env=env or _env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, dict | None, str]:
    out, err = proc.communicate(timeout=timeout)
    try:
        doc = json.loads(out) if out.strip() else None
    except ValueError:
        doc = None
    return proc.returncode, doc, err


def _wait_for_checkpoint(home: Path, step: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Until the run has written checkpoint ``step`` (so the training loop is running)."""
    deadline = time.monotonic() + timeout
    while not list((home / "runs").glob(f"*/checkpoints/{ckpt.PREFIX}{step:08d}")):
        assert proc.poll() is None, f"the run ended before checkpoint {step}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"checkpoint {step} did not appear"
        time.sleep(0.01)


def _losses(home: Path, run_id: str) -> list[tuple[int, float]]:
    with Store(home) as store:
        return [(s, v) for s, v, _ in store.metrics(store.get_run(run_id), ["train/loss"]).get("train/loss", [])]


def _run_info(home: Path, run_id: str):
    with Store(home) as store:
        info = store.get_run(run_id)
        return info, store.events(info), store.artifacts(info), store.metrics(info)


def _sha(path: Path) -> str:
    return json.loads((path / "manifest.json").read_text())["model.safetensors"]["sha256"]


MAX = 120


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run: its loss sequence, final weights and validation metrics."""
    tmp = tmp_path_factory.mktemp("reference")
    home = _setup(tmp)
    code, doc, err = _finish(_start(tmp, home))
    assert code == 0 and doc and doc["status"] == "finished", err
    losses = _losses(home, doc["run_id"])
    assert [s for s, _ in losses] == list(range(3, MAX + 1, 3))  # MAX is a multiple of 3
    final = Path(doc["checkpoint_dir"]) / f"step-{MAX:08d}"
    return {"losses": losses, "val": doc["val"], "sha": _sha(final), "doc": doc, "tmp": tmp, "home": home}


def _setup(tmp_path: Path) -> Path:
    (tmp_path / "lmdev_resume_models.py").write_text(MODULE)
    (tmp_path / "config.yaml").write_text(CONFIG)
    return tmp_path / "home"


def _resume_and_compare(tmp_path: Path, home: Path, first_id: str, reference: dict) -> dict:
    """Resume the newest run of the config's name: the same run continues; its one loss curve
    equals the reference bit for bit (the points logged past the checkpoint were replaced)."""
    folder = home / "runs" / first_id / "checkpoints"
    good = [p for p in ckpt.list_checkpoints(folder) if ckpt.verify(p) is None]
    assert good, "the interrupted run left no complete checkpoint"
    resumed_from = int(good[-1].name[len(ckpt.PREFIX):])
    assert 0 < resumed_from < MAX
    code, doc, err = _finish(_start(tmp_path, home, "--resume"))
    assert code == 0 and doc and doc["status"] == "finished", err
    assert doc["run_id"] == first_id and doc["steps"] == MAX  # one training, one run
    info, events, _artifacts, _ = _run_info(home, first_id)
    assert info.parent_id is None and info.status == "finished"
    with Store(home) as store:
        assert [r.id for r in store.list_runs()] == [first_id]
    assert any(f"step-{resumed_from:08d}" in e.message and "resumed" in e.message for e in events), \
        [e.message for e in events]
    resumes = [e.data for e in events if e.data.get("kind") == "resume"]
    assert [r["step"] for r in resumes] == [resumed_from]
    joined = _losses(home, first_id)
    assert [s for s, _ in joined] == [s for s, _ in reference["losses"]]
    for (step, got), (_, want) in zip(joined, reference["losses"]):
        assert got == want, f"train/loss differs at step {step}: {got!r} != {want!r}"  # exact, not approx
    assert doc["val"] == reference["val"]
    assert _sha(Path(doc["checkpoint_dir"]) / f"step-{MAX:08d}") == reference["sha"]  # same final weights
    return {"doc": doc, "resumed_from": resumed_from, "events": events}


@pytest.fixture(scope="module")
def sigterm_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A run stopped by SIGTERM somewhere after its checkpoint at step 40."""
    tmp = tmp_path_factory.mktemp("sigterm")
    home = _setup(tmp)
    proc = _start(tmp, home)
    _wait_for_checkpoint(home, 40, proc)  # the loop runs: the signal handlers are installed
    time.sleep(random.uniform(0.0, 0.05))
    proc.send_signal(signal.SIGTERM)
    code, doc, err = _finish(proc)
    return {"tmp": tmp, "home": home, "code": code, "doc": doc, "err": err}


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(sigterm_run: dict) -> None:
    code, doc, err, home = sigterm_run["code"], sigterm_run["doc"], sigterm_run["err"], sigterm_run["home"]
    assert code == 143 and doc is not None, err  # the JSON summary; 128 + 15, after the save
    assert "Traceback" not in err
    assert doc["status"] == "killed" and 40 <= doc["steps"] < MAX
    info, events, _artifacts, _ = _run_info(home, doc["run_id"])
    assert info.status == "killed"
    assert any("stopped by signal 15" in e.message for e in events), [e.message for e in events]
    folder = home / "runs" / doc["run_id"] / "checkpoints"
    assert ckpt.list_checkpoints(folder)[-1].name == f"step-{doc['steps']:08d}"
    assert ckpt.verify(folder / f"step-{doc['steps']:08d}") is None


def test_sighup_behaves_like_sigterm(tmp_path: Path) -> None:
    home = _setup(tmp_path)
    proc = _start(tmp_path, home)
    _wait_for_checkpoint(home, 20, proc)
    proc.send_signal(signal.SIGHUP)
    code, doc, err = _finish(proc)
    assert code == 128 + signal.SIGHUP and doc is not None and doc["status"] == "killed", (code, err)
    folder = home / "runs" / doc["run_id"] / "checkpoints"
    assert ckpt.verify(folder / f"step-{doc['steps']:08d}") is None
    info, events, _artifacts, _ = _run_info(home, doc["run_id"])
    assert info.status == "killed" and any("stopped by signal 1" in e.message for e in events)


def test_a_second_sigterm_during_the_save_waits_for_it(tmp_path: Path) -> None:
    """Every save pauses after writing its weights; the second SIGTERM lands in the pause of the
    save the first one asked for. The save completes, then the run exits 143."""
    home = _setup(tmp_path)
    proc = _start(tmp_path, home, env=_env(home, LMDEV_TEST_PAUSE_AT="after_weights=2"))
    _wait_for_checkpoint(home, 20, proc)
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 60
    while not list((home / "runs").glob("*/checkpoints/.step-*.tmp/model.safetensors")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    code, doc, err = _finish(proc)
    assert code == 143 and doc is not None and doc["status"] == "killed", (code, err)
    folder = home / "runs" / doc["run_id"] / "checkpoints"
    assert ckpt.list_checkpoints(folder)[-1].name == f"step-{doc['steps']:08d}"
    assert ckpt.verify(folder / f"step-{doc['steps']:08d}") is None
    assert not list(folder.glob(".*.tmp"))


def test_sigterm_then_resume_is_bit_exact(sigterm_run: dict, reference: dict) -> None:
    doc = sigterm_run["doc"]
    assert doc is not None and doc["status"] == "killed", sigterm_run["err"]
    result = _resume_and_compare(sigterm_run["tmp"], sigterm_run["home"], doc["run_id"], reference)
    assert result["resumed_from"] == doc["steps"]


def test_sigkill_after_a_checkpoint_resumes_bit_exactly(tmp_path: Path, reference: dict) -> None:
    home = _setup(tmp_path)
    proc = _start(tmp_path, home)
    _wait_for_checkpoint(home, 60, proc)
    time.sleep(random.uniform(0.0, 0.08))
    proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    (run_folder,) = (home / "runs").iterdir()
    result = _resume_and_compare(tmp_path, home, run_folder.name, reference)
    assert result["resumed_from"] >= 60


@pytest.mark.parametrize("point, crash_step, fallback, corrupt", [
    ("before_rename", 60, 40, False),
    # and a crash after the weights of step 80, with step 60's weights corrupted too: back to 40
    ("after_weights", 80, 40, True),
])
def test_crash_while_writing_a_checkpoint_falls_back_and_resumes_bit_exactly(
        tmp_path: Path, reference: dict, point: str, crash_step: int, fallback: int, corrupt: bool) -> None:
    home = _setup(tmp_path)
    proc = _start(tmp_path, home, env=_env(home, LMDEV_TEST_CRASH_AT=f"{point}:{crash_step}"))
    code, doc, err = _finish(proc)
    assert code == 137 and doc is None, err
    (run_folder,) = (home / "runs").iterdir()
    folder = run_folder / "checkpoints"
    assert list(folder.glob(f".step-{crash_step:08d}.*.tmp")), "the crash left no partial save behind"
    assert not (folder / f"step-{crash_step:08d}").exists()
    if corrupt:
        weights = folder / f"step-{crash_step - 20:08d}" / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-3] ^= 0x01
        weights.write_bytes(bytes(data))
    assert ckpt.load_latest(folder).step == fallback
    result = _resume_and_compare(tmp_path, home, run_folder.name, reference)
    assert result["resumed_from"] == fallback
    if corrupt:
        warnings = [e.message for e in result["events"] if e.level == "warning"]
        assert any(f"step-{crash_step - 20:08d}" in m and "corrupt" in m for m in warnings), warnings
    assert not list(Path(result["doc"]["checkpoint_dir"]).glob(".*.tmp"))


def test_resume_with_a_changed_model_is_refused_showing_the_difference(reference: dict) -> None:
    tmp, home = reference["tmp"], reference["home"]
    proc = _start(tmp, home, "--resume", reference["doc"]["run_id"], "--set", "model.kwargs.delay=0.001")
    code, out, err = _finish(proc)
    assert code == 2 and out is None, err
    assert "Traceback" not in err
    assert "model config changed" in err and "model.kwargs" in err and "0.001" in err, err


# slow steps (~2 s between checkpoints, longer than the store's 1 s flush interval) so that a
# kill lands after points past the newest checkpoint have reached the store
THRICE = CONFIG.replace("name: resume-me", "name: thrice").replace("delay: 0.004", "delay: 0.03").replace(
    "max_steps: 120", "max_steps: 120").replace("log_every: 3", "log_every: 1").replace(
    "every: 20, keep: 10", "every: 30, keep: 10")


def _logged_past_checkpoint(home: Path, newer_than: int, resumes: int) -> int | None:
    """The newest checkpoint step, once it is > ``newer_than``, the run has been resumed
    ``resumes`` times (this process has rewound) and the store holds a loss past it."""
    found = [int(p.name[len(ckpt.PREFIX):]) for p in (home / "runs").glob(f"*/checkpoints/{ckpt.PREFIX}*")
             if p.name[len(ckpt.PREFIX):].isdigit()]
    newest = max(found, default=0)
    if newest <= newer_than:
        return None
    (run_folder,) = (home / "runs").iterdir()
    info, events, _, metrics = _run_info(home, run_folder.name)
    if sum(e.data.get("kind") == "resume" for e in events) != resumes:
        return None
    steps = [s for s, _, _ in metrics.get("train/loss", [])]
    return newest if steps and steps[-1] > newest else None


def test_killed_three_times_one_run_one_curve(tmp_path: Path) -> None:
    """SIGKILL three times, each after points past the newest checkpoint reached the store;
    --resume each time: one run whose curve equals an uninterrupted run's step for step."""
    ref_dir, tmp = tmp_path / "ref", tmp_path / "killed"
    ref_dir.mkdir()
    tmp.mkdir()
    homes = {}
    for folder in (ref_dir, tmp):
        homes[folder] = _setup(folder)
        (folder / "config.yaml").write_text(THRICE)
    reference = _start(ref_dir, homes[ref_dir])
    home = homes[tmp]
    last = 0
    for kill in range(3):
        proc = _start(tmp, home, *(["--resume"] if kill else []))
        deadline = time.monotonic() + 120
        while (step := _logged_past_checkpoint(home, last, kill)) is None:
            assert proc.poll() is None, f"run {kill} ended before it could be killed: {proc.communicate()}"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.kill()
        proc.communicate()
        last = step
    code, doc, err = _finish(_start(tmp, home, "--resume"))
    assert code == 0 and doc and doc["status"] == "finished", err
    ref_code, ref_doc, ref_err = _finish(reference)
    assert ref_code == 0 and ref_doc, ref_err
    (run_folder,) = (home / "runs").iterdir()
    assert doc["run_id"] == run_folder.name
    want = _losses(homes[ref_dir], ref_doc["run_id"])
    got = _losses(home, doc["run_id"])
    assert [s for s, _ in want] == list(range(1, 121))
    assert got == want  # step for step, bit for bit: no point of a killed process survives
    info, events, _, _ = _run_info(home, doc["run_id"])
    resumes = [e.data for e in events if e.data.get("kind") == "resume"]
    assert len(resumes) == 3 and all(r["dropped"] > 0 for r in resumes), resumes
    assert info.status == "finished" and info.parent_id is None


def test_fork_starts_a_new_run_from_a_checkpoint_with_other_hyperparameters(reference: dict) -> None:
    tmp, home = reference["tmp"], reference["home"]
    parent = reference["doc"]["run_id"]
    code, doc, err = _finish(_start(tmp, home, "--fork", f"{parent}@50", "--set", "optimizer.lr=0.0005",
                                    "--set", "train.max_steps=90"))
    assert code == 0 and doc and doc["status"] == "finished", err
    assert doc["run_id"] != parent
    info, events, _, metrics = _run_info(home, doc["run_id"])
    assert info.parent_id == parent and info.fork_step == 40  # the newest checkpoint at or before 50
    assert info.config["optimizer"]["lr"] == 0.0005
    lrs = [v for s, v, _ in metrics["train/lr"] if s > 40]
    assert lrs and max(lrs) <= 0.0005  # trained with the fork's learning rate, not the parent's 0.003
    steps = [s for s, _, _ in metrics["train/loss"]]
    assert steps[0] > 40 and steps[-1] == 90
    assert any(e.data.get("kind") == "fork" for e in events)
    assert not [e for e in events if e.data.get("kind") == "resume"]
    with Store(home) as store:
        assert [r.id for r in store.forks(store.get_run(parent))] == [doc["run_id"]]
        assert _losses(home, parent) == reference["losses"]  # the parent is untouched
