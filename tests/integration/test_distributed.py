"""Several workers through torchrun (gloo, loopback only): the same numbers as one worker, two
launchers as two nodes, elastic restarts, re-sharding a checkpoint, and the bad inputs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from lmdev.track.store import Store

pytestmark = pytest.mark.integration

BASE = {
    "name": "dist",
    "seed": 0,
    "model": {"type": "mlp", "hidden": [32]},
    "data": {"type": "digits", "batch_size": 64},
    "optimizer": {"type": "sgd", "lr": 0.1},
    "train": {"max_steps": 60, "eval_every": 30, "log_every": 10},
    "checkpoint": {"every": 30, "keep": 5},
}
# Summation order differs between one worker and an all-reduce of two halves: float32 rounding.
TOLERANCE = 1e-4


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, LMDEV_HOME=str(home), NO_COLOR="1", OMP_NUM_THREADS="1", PYTHONPATH=str(home.parent))


def _config(tmp: Path, **over) -> Path:
    cfg = json.loads(json.dumps(BASE))
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            cfg[section][field] = value
        else:
            cfg[section] = value
    path = tmp / f"cfg-{abs(hash(json.dumps(cfg, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _lmdev(home: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmdev", "train", *args], capture_output=True, text=True,
                          env=_env(home), cwd=home.parent, timeout=timeout)


def _losses(home: Path, run_id: str) -> list[tuple[int, float]]:
    with Store(home) as store:
        run = store.get_run(run_id)
        return [(step, value) for step, value, _ in store.metrics(run, ["train/loss"])["train/loss"]]


def _summary(res: subprocess.CompletedProcess) -> dict:
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_log_the_same_curve_as_one(tmp_path):
    home = tmp_path / ".lmdev"
    cfg = _config(tmp_path)
    one = _summary(_lmdev(home, str(cfg), "--json", "--no-telemetry"))
    two = _summary(_lmdev(home, str(cfg), "--json", "--no-telemetry", "--nproc", "2"))
    a, b = _losses(home, one["run_id"]), _losses(home, two["run_id"])
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(10, 61, 10))
    for (_, x), (_, y) in zip(a, b):
        assert abs(x - y) <= TOLERANCE * abs(x)
    assert abs(one["val"]["val/loss"] - two["val"]["val/loss"]) <= TOLERANCE * one["val"]["val/loss"]
    with Store(home) as store:
        events = [e.message for e in store.events(store.get_run(two["run_id"]))]
    assert any("on 2 workers (gloo, ddp)" in m for m in events)


def test_two_launchers_as_two_nodes(tmp_path):
    home = tmp_path / ".lmdev"
    cfg = _config(tmp_path, train__max_steps=20, train__eval_every=10, checkpoint__every=10)
    port = str(_free_port())
    common = ["--nproc", "1", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", port,
              "--no-telemetry", "--json", "--join-timeout", "120"]
    procs = [subprocess.Popen([sys.executable, "-m", "lmdev", "train", str(cfg), "--node-rank", str(r), *common],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(home),
                              cwd=tmp_path) for r in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    summary = json.loads(outs[0][0])
    assert summary["steps"] == 20 and summary["status"] == "finished"
    assert [s for s, _ in _losses(home, summary["run_id"])] == [10, 20]


SLOW_MODEL = """
import time
import torch

class Slow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))

    def forward(self, x):
        time.sleep(0.01)
        return self.net(x)

def build():
    return Slow()
"""


def _workers(launcher: psutil.Process) -> list[psutil.Process]:
    return [p for p in launcher.children(recursive=True)
            if "lmdev" in " ".join(p.cmdline()) and "torch.distributed.run" not in " ".join(p.cmdline())]


def test_a_killed_worker_is_restarted_and_resumes(tmp_path):
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    home = tmp_path / ".lmdev"
    cfg = _config(tmp_path, model={"type": "python:slowmodel:build"},
                  train={"max_steps": 400, "eval_every": 100, "log_every": 20}, checkpoint={"every": 40, "keep": 3})
    proc = subprocess.Popen([sys.executable, "-m", "lmdev", "train", str(cfg), "--nproc", "2", "--max-restarts", "1",
                             "--json", "--no-telemetry"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(home), cwd=tmp_path)
    launcher = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 180
        killed = None
        while time.monotonic() < deadline and killed is None:
            if list(home.glob("runs/*/checkpoints/step-00000040")):
                victims = [w for w in _workers(launcher) if w.environ().get("RANK") == "1"]
                if victims:
                    killed = victims[0].pid
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        assert killed is not None, "no checkpoint appeared in time"
        out, err = proc.communicate(timeout=300)
    finally:  # never leave a launcher or its workers behind
        for p in [*launcher.children(recursive=True), launcher] if launcher.is_running() else []:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["steps"] == 400 and summary["status"] == "finished"
    with Store(home) as store:
        run = store.get_run(summary["run_id"])
        events = [e.message for e in store.events(run)]
        steps = [s for s, _, _ in store.metrics(run, ["train/loss"])["train/loss"]]
    assert any("restarted by the elastic launcher" in m for m in events), events
    assert steps[-1] == 400


def test_a_two_worker_checkpoint_resumes_on_one_worker(tmp_path):
    home = tmp_path / ".lmdev"
    cfg = _config(tmp_path, train__max_steps=60)
    two = _summary(_lmdev(home, str(cfg), "--json", "--no-telemetry", "--nproc", "2", "--set", "train.max_steps=30"))
    resumed = _summary(_lmdev(home, str(cfg), "--json", "--no-telemetry", "--resume", two["run_id"]))
    straight = _summary(_lmdev(home, str(cfg), "--json", "--no-telemetry"))
    assert resumed["steps"] == 60
    a = dict(_losses(home, resumed["run_id"]))
    b = dict(_losses(home, straight["run_id"]))
    for step in (40, 50, 60):
        assert abs(a[step] - b[step]) <= TOLERANCE * b[step]


def test_dry_run_prints_the_torchrun_command(tmp_path):
    home = tmp_path / ".lmdev"
    res = _lmdev(home, str(_config(tmp_path)), "--nproc", "2", "--nnodes", "2", "--node-rank", "1",
                 "--master-addr", "10.1.2.3", "--master-port", "29999", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "4 worker(s)" in res.stdout and "64 = 16 per rank" in res.stdout
    assert "torch.distributed.run --nproc-per-node=2" in res.stdout
    assert "--nnodes=2 --node-rank=1 --master-addr=10.1.2.3 --master-port=29999" in res.stdout
    assert not home.exists()  # nothing ran


@pytest.mark.parametrize("args,needle", [
    (["--nproc", "3"], "does not split evenly over 3 worker(s)"),
    (["--nproc", "2", "--nnodes", "2"], "needs --master-addr"),
    (["--nproc", "0"], "must be at least 1"),
    (["--nproc", "1", "--nnodes", "2", "--node-rank", "2", "--master-addr", "127.0.0.1"], "outside 0..1"),
])
def test_bad_launch_options(tmp_path, args, needle):
    res = _lmdev(tmp_path / ".lmdev", str(_config(tmp_path)), *args)
    assert res.returncode == 2
    assert needle in res.stderr and "Traceback" not in res.stderr


def test_a_port_in_use_is_named(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _lmdev(tmp_path / ".lmdev", str(_config(tmp_path)), "--nproc", "1", "--nnodes", "2",
                     "--master-addr", "127.0.0.1", "--master-port", str(port))
    assert res.returncode == 2
    assert f"port {port}" in res.stderr and "already in use" in res.stderr and "--master-port" in res.stderr


def test_a_node_that_never_joins_times_out(tmp_path):
    res = _lmdev(tmp_path / ".lmdev", str(_config(tmp_path)), "--nproc", "1", "--nnodes", "2", "--node-rank", "0",
                 "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "--join-timeout", "5",
                 "--no-telemetry", timeout=120)
    assert res.returncode == 2
    assert "not every node joined within 5 s" in res.stderr


def test_different_configs_across_nodes_are_refused(tmp_path):
    home = tmp_path / ".lmdev"
    cfg = _config(tmp_path)
    port = str(_free_port())
    common = ["--nproc", "1", "--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", port,
              "--no-telemetry", "--join-timeout", "120"]
    procs = [subprocess.Popen([sys.executable, "-m", "lmdev", "train", str(cfg), "--node-rank", str(r), *common,
                               "--set", f"optimizer.lr={0.1 * (r + 1)}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(home),
                              cwd=tmp_path) for r in (0, 1)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode != 0 for p in procs)
    assert any("started with different configs" in err for _, err in outs)


FSDP_GPT = {"model": {"type": "gpt", "n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32},
            "data": {"type": "synthetic", "batch_size": 16, "seq_len": 32, "n_examples": 4000},
            "optimizer": {"type": "adamw", "lr": 0.003},
            "train": {"max_steps": 40, "eval_every": 20, "log_every": 10},
            "checkpoint": {"every": 20, "keep": 3}, "strategy": "fsdp"}


def test_fsdp_matches_one_worker_and_reshards_to_one(tmp_path):
    home = tmp_path / ".lmdev"
    cfg = _config(tmp_path, **FSDP_GPT)
    sharded = _summary(_lmdev(home, str(cfg), "--json", "--no-telemetry", "--nproc", "2"))
    one = _summary(_lmdev(home, str(cfg), "--json", "--no-telemetry"))
    for (_, x), (_, y) in zip(_losses(home, sharded["run_id"]), _losses(home, one["run_id"])):
        assert abs(x - y) <= TOLERANCE * abs(y)
    ckpt = Path(sharded["checkpoint_dir"])
    if not ckpt.is_absolute():
        ckpt = tmp_path / ckpt
    last = ckpt / "step-00000040"
    assert (last / "dcp" / ".metadata").is_file() and not (last / "model.safetensors").exists()
    with Store(home) as store:
        events = [e.message for e in store.events(store.get_run(sharded["run_id"]))]
    assert any("2 workers (gloo, fsdp)" in m for m in events)

    # the 2-worker sharded checkpoint continues on 1 worker exactly as 1 worker would have
    resumed = _summary(_lmdev(home, str(cfg), "--json", "--no-telemetry", "--set", "train.max_steps=60",
                              "--resume", sharded["run_id"]))
    straight = _summary(_lmdev(home, str(cfg), "--json", "--no-telemetry", "--set", "train.max_steps=60"))
    a, b = dict(_losses(home, resumed["run_id"])), dict(_losses(home, straight["run_id"]))
    assert resumed["run_id"] == sharded["run_id"]  # one training, one run
    assert [s for s in a if s > 40] == [50, 60]
    for step in (50, 60):
        assert abs(a[step] - b[step]) <= TOLERANCE * b[step]

    # and exports to one safetensors file that loads into the model
    out = tmp_path / "weights.safetensors"
    res = subprocess.run([sys.executable, "-m", "lmdev", "checkpoint", "export", str(last), str(out)],
                         capture_output=True, text=True, env=_env(home), cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    from safetensors.torch import load_file

    from lmdev.train.config import load_config
    from lmdev.train.models import DataShape, build_model

    model_cfg = load_config(str(cfg)).model.model_copy(update={"vocab_size": 256})
    model = build_model(model_cfg, DataShape("tokens", (32,), 256, "language_modeling"))
    model.load_state_dict(load_file(str(out)), strict=True)

    verify = subprocess.run([sys.executable, "-m", "lmdev", "checkpoint", "verify", str(last)],
                            capture_output=True, text=True, env=_env(home), cwd=tmp_path, timeout=60)
    assert verify.returncode == 0 and "ok (sharded" in verify.stdout
    shard = next((last / "dcp").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    verify = subprocess.run([sys.executable, "-m", "lmdev", "checkpoint", "verify", str(last)],
                            capture_output=True, text=True, env=_env(home), cwd=tmp_path, timeout=60)
    assert verify.returncode == 1 and "does not match its sha256" in verify.stdout


def test_plan_prints_the_launch_of_a_training_config(tmp_path):
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-m", "lmdev", "plan", str(root / "examples" / "arithmetic_gpt.yaml"),
                          "--devices", "4", "--json"], capture_output=True, text=True, timeout=120,
                         env=_env(tmp_path / ".lmdev"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    launch = json.loads(res.stdout)["launch"]
    assert launch["workers"] == 4 and launch["per_rank_batch"] == 8
    assert "--nproc-per-node=4" in launch["torchrun"] and launch["lmdev"][-2:] == ["--nproc", "4"]
