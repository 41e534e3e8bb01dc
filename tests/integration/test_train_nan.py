"""The NaN / Inf loss policy, in real processes: skip (events, the steps are skipped, the run
finishes), rollback (back to the last checkpoint, with an event) and stop (exit 1, a clear
message, no traceback)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmdev.track import Store

pytestmark = pytest.mark.integration

DATA = '''
import numpy as np
from lmdev.train.data import Batches, load_digits

def _digits():
    x, y = load_digits()
    return x / 16.0, y

def inf_rows():
    """digits with every 97th row infinite: about one batch in three has a non-finite loss."""
    x, y = _digits()
    x[::97] = np.inf
    return x, y

def one_bad_batch():
    """digits with one infinite row, in the batch of training step 12 (val_fraction 0, seed 0)."""
    x, y = _digits()
    train_order = np.random.default_rng(0).permutation(len(x))
    x[train_order[int(Batches(len(x), 32, 0).indices(12)[0])]] = np.inf
    return x, y

def last_batch_bad():
    """digits with one infinite row, in the batch of the last step of a 60-step run."""
    x, y = _digits()
    train_order = np.random.default_rng(0).permutation(len(x))
    x[train_order[int(Batches(len(x), 32, 0).indices(59)[0])]] = np.inf
    return x, y
'''

BASE = """
name: nan-{policy}
seed: 0
model: {{type: mlp, hidden: [32]}}
data: {{type: "python:lmdev_nan_data:{data}", batch_size: 32, val_fraction: 0.0}}
optimizer: {{type: sgd, lr: {lr}}}
train: {{max_steps: {steps}, eval_every: 1000, log_every: 5, nan_policy: {policy}, max_nan_skips: {skips}}}
checkpoint: {{every: 5, keep: 3}}
device: cpu
"""


def _write(tmp: Path, policy: str, data: str = "inf_rows", lr: float = 0.1, steps: int = 60, skips: int = 1000) -> Path:
    (tmp / "lmdev_nan_data.py").write_text(DATA)
    cfg = tmp / f"{policy}.yaml"
    cfg.write_text(BASE.format(policy=policy, data=data, lr=lr, steps=steps, skips=skips))
    return cfg


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ, LMDEV_HOME=str(tmp / "home"), OMP_NUM_THREADS="1", NO_COLOR="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(tmp), os.environ.get("PYTHONPATH")])))
    env.pop("LMDEV_TEST_CRASH_AT", None)
    return env


def _train(tmp: Path, cfg: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmdev", "train", str(cfg), "--json", "--no-telemetry", *extra],
                          cwd=tmp, env=_env(tmp), capture_output=True, text=True, check=False, timeout=180)


def _record(tmp: Path, run_id: str):
    with Store(tmp / "home") as store:
        info = store.get_run(run_id)
        return info, store.events(info), store.metrics(info)


def test_skip_records_events_skips_the_steps_and_finishes(tmp_path: Path) -> None:
    res = _train(tmp_path, _write(tmp_path, "skip"))
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "finished" and doc["steps"] == 60
    info, events, metrics = _record(tmp_path, doc["run_id"])
    assert info.status == "finished"
    skipped = [e.message for e in events if "non-finite loss" in e.message and "skipped" in e.message]
    assert 5 <= len(skipped) < 60, skipped  # about one batch in three holds an infinite row
    logged = [s for s, _, _ in metrics["train/loss"]]
    losses = [v for _, v, _ in metrics["train/loss"]]
    assert len(logged) >= 8 and all(s % 5 == 0 for s in logged), logged
    assert all(math.isfinite(v) for v in losses), losses  # skipped steps are not averaged in
    assert losses[-1] < losses[0]  # the good steps still train


def test_a_skipped_last_step_still_ends_with_a_final_checkpoint(tmp_path: Path) -> None:
    res = _train(tmp_path, _write(tmp_path, "skip", data="last_batch_bad"))
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["steps"] == 60
    _, events, metrics = _record(tmp_path, doc["run_id"])
    assert any("non-finite loss at step 59" in e.message for e in events)  # the 60th batch
    assert (Path(doc["checkpoint_dir"]) / "step-00000060").is_dir()
    assert metrics["train/loss"][-1][0] == 60


def test_skip_gives_up_after_max_nan_skips_and_rolls_back(tmp_path: Path) -> None:
    # the default policy: skip up to N times, then roll back; with no checkpoint yet it must stop
    res = _train(tmp_path, _write(tmp_path, "skip", skips=2), "--set", "checkpoint.every=1000")
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert "no checkpoint to roll back to" in res.stderr


def test_stop_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    # a learning rate of 1e30 makes the weights, then the loss, non-finite within a few steps
    res = _train(tmp_path, _write(tmp_path, "stop", data="one_bad_batch", lr=1e30))
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("lmdev: error: loss is not finite at step "), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    with Store(tmp_path / "home") as store:
        (info,) = store.list_runs()
    assert info.status == "failed"


def test_rollback_goes_back_to_the_last_checkpoint_and_terminates(tmp_path: Path) -> None:
    cfg = _write(tmp_path, "rollback", data="one_bad_batch", steps=40)
    proc = subprocess.Popen([sys.executable, "-m", "lmdev", "train", str(cfg), "--json", "--no-telemetry"],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # a correct engine rolls back a bounded number of times; stop watching after 25 rollbacks
    rollbacks: list[str] = []
    deadline = time.monotonic() + 150
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
        if not (tmp_path / "home" / "lmdev.db").exists():
            continue
        with Store(tmp_path / "home") as store:
            runs = store.list_runs()
            if runs:
                rollbacks = [e.message for e in store.events(runs[0]) if "rolled back" in e.message]
        if len(rollbacks) > 25:
            proc.kill()
            break
    out, err = proc.communicate(timeout=60)
    assert len(rollbacks) <= 25, f"rolled back {len(rollbacks)} times: {rollbacks[:2]}"
    # one bad batch: one rollback, then the exact replay skips that batch and the run finishes
    assert proc.returncode == 0, err
    assert json.loads(out)["status"] == "finished" and json.loads(out)["steps"] == 40
    with Store(tmp_path / "home") as store:
        (info,) = store.list_runs()
        events = [e.message for e in store.events(info)]
    assert info.status == "finished"
    assert [m for m in events if "rolled back" in m] == ["non-finite loss at step 12: rolled back to step-00000010"]
    assert any("step 12: skipping the batch" in m for m in events), events
