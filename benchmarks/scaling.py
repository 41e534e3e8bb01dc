"""Throughput of `lmdev train` at 1 and 2 workers on this machine, with the scaling efficiency.

Each configuration runs as a real `lmdev train --json` process (2 workers through torchrun,
gloo on the CPU); the figure is the median of the logged `train/samples_per_s` after the first
log interval (warm-up). Efficiency = throughput(N workers) / (N x throughput(1 worker, same
threads per worker)).

    .venv/bin/python benchmarks/scaling.py [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

MODELS = {
    "mlp (digits, batch 64)": {
        "model": {"type": "mlp", "hidden": [128, 64]},
        "data": {"type": "digits", "batch_size": 64},
        "optimizer": {"type": "sgd", "lr": 0.1},
    },
    "gpt 4x128 (seq 64, batch 32)": {
        "model": {"type": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64},
        "data": {"type": "synthetic", "batch_size": 32, "seq_len": 64, "n_examples": 40000},
        "optimizer": {"type": "adamw", "lr": 0.003},
    },
}


def measure(cfg: dict, steps: int, nproc: int, threads: int, home: Path) -> float:
    cfg = dict(cfg, name="scaling", train={"max_steps": steps, "eval_every": steps, "log_every": max(steps // 10, 1)},
               checkpoint={"every": steps, "keep": 1})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(cfg, f)
    argv = [sys.executable, "-m", "lmdev", "train", f.name, "--json", "--no-telemetry"]
    if nproc > 1:
        argv += ["--nproc", str(nproc)]
    env = dict(os.environ, LMDEV_HOME=str(home), OMP_NUM_THREADS=str(threads))
    res = subprocess.run(argv, capture_output=True, text=True, env=env, check=True)
    run_id = json.loads(res.stdout)["run_id"]
    from lmdev.track.store import Store

    with Store(home) as store:
        series = store.metrics(store.get_run(run_id), ["train/samples_per_s"])["train/samples_per_s"]
    return statistics.median(v for _, v, _ in series[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {cores} CPU cores; gloo on loopback; {args.steps} steps per run")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".lmdev"
        for name, cfg in MODELS.items():
            one_1 = measure(cfg, args.steps, 1, 1, home)
            one_all = measure(cfg, args.steps, 1, cores, home)
            two = measure(cfg, args.steps, 2, max(1, cores // 2), home)
            eff = two / (2 * one_1)
            print(f"{name}:")
            print(f"  1 worker x 1 thread:        {one_1:10.0f} samples/s")
            print(f"  1 worker x {cores} threads:       {one_all:10.0f} samples/s")
            print(f"  2 workers x {max(1, cores // 2)} thread(s):     {two:10.0f} samples/s")
            print(f"  scaling efficiency 2 workers vs 2x one worker (same threads each): {eff:.2f}")
            print(f"  2 workers vs 1 worker using all {cores} cores: {two / one_all:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
