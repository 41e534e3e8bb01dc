"""A two-worker launch gives each worker cpus / 2 threads (torch, OpenMP, MKL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmdev.track import Store
from lmdev.train.launch import threads_per_worker, usable_cpus

pytestmark = pytest.mark.integration

CONFIG = {"name": "threads", "seed": 0, "model": {"type": "mlp", "hidden": [8]},
          "data": {"type": "digits", "batch_size": 32, "check": "off"}, "optimizer": {"type": "sgd", "lr": 0.1},
          "train": {"max_steps": 4, "eval_every": 4, "log_every": 2}, "checkpoint": {"every": 4}, "device": "cpu"}


def test_two_workers_each_get_half_the_cores(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(LMDEV_HOME=str(tmp_path / "home"), NO_COLOR="1")
    res = subprocess.run([sys.executable, "-m", "lmdev", "train", str(cfg), "--nproc", "2", "--json", "--no-telemetry"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    run_id = json.loads(res.stdout)["run_id"]
    n = threads_per_worker(usable_cpus(), 2)
    with Store(tmp_path / "home") as store:
        events = [e.message for e in store.events(store.get_run(run_id))]
    expected = f"{n} thread(s) each (OMP_NUM_THREADS={n}, MKL_NUM_THREADS={n})"
    assert any(expected in m for m in events), events
