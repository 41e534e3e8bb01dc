"""A prepared run store for the dashboard's tests: two finished runs shaped like `lmdev demo`'s."""

from __future__ import annotations

import math
import time
from pathlib import Path

from lmdev import track


def make_store(home: Path) -> dict[str, str]:
    """Write two runs (an MLP and a small GPT) into ``home``; returns {name: run id}."""
    ids = {}
    mlp = track.init("digits-mlp", config={"lr": 0.01, "model": {"kind": "mlp", "width": 64}, "epochs": 3},
                     tags=["demo", "mlp"], home=home, telemetry=False, flush_interval=0.05)
    t0 = time.time()
    for step in range(200):
        mlp.log({"train/loss": 2.0 * math.exp(-step / 40) + 0.1, "train/tokens_per_s": 1000.0 + step}, step=step)
        if step % 20 == 0:
            mlp.log({"val/loss": 2.0 * math.exp(-step / 40) + 0.15, "val/accuracy": 1 - math.exp(-step / 40)}, step=step)
    mlp.log({"train/grad_norm": float("nan")}, step=200)
    mlp.log({"train/grad_norm": 1.5}, step=201)
    mlp.log({"train/grad_norm": float("inf")}, step=202)
    mlp.log({"train/grad_norm": 1.2}, step=203)
    mlp._add_system([(t0 + i, 0, "host", "cpu_percent", 10.0 + i) for i in range(10)]
                    + [(t0 + i, 0, "gpu:0", "gpu_util_percent", 50.0 + i) for i in range(10)])
    mlp.event("checkpoint saved", step=100)
    mlp.event("loss spike", level="warning", step=150)
    ckpt_dir = mlp.dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / "step-200.safetensors"
    ckpt.write_bytes(b"weights" * 100)
    mlp.log_artifact(ckpt, kind="checkpoint")
    (mlp.dir / "stdout.log").write_text("".join(f"line {i}\n" for i in range(100)) + "done training\n")
    mlp.finish()
    ids["digits-mlp"] = mlp.id
    gpt = track.init("tiny-gpt", config={"lr": 0.001, "model": {"kind": "gpt", "width": 128}, "epochs": 3},
                     tags=["demo", "gpt"], home=home, telemetry=False, flush_interval=0.05)
    for step in range(150):
        gpt.log({"train/loss": 4.0 * math.exp(-step / 60) + 0.5}, step=step)
        if step % 25 == 0:
            gpt.log({"val/loss": 4.0 * math.exp(-step / 60) + 0.6}, step=step)
    gpt.finish()
    ids["tiny-gpt"] = gpt.id
    return ids


def make_sweep(home: Path, project: str = "sweep") -> dict[str, str]:
    """Four runs of one project with different learning rates and widths; the lower the
    learning rate, the lower the final val/loss (Keras' spelling val_loss in one of them)."""
    ids = {}
    for i, (lr, width) in enumerate(((1e-4, 64), (1e-3, 128), (1e-2, 64), (1e-1, 256))):
        run = track.init(f"lr-{lr:g}", project=project, home=home, telemetry=False, flush_interval=0.05,
                         config={"optimizer": {"name": "adamw", "lr": lr}, "model": {"width": width}, "seed": 0})
        final = 0.2 + i * 0.3
        key = "val_loss" if i == 2 else "val/loss"
        for step in range(0, 101, 10):
            run.log({"train/loss": final + 2.0 * math.exp(-step / 20), key: final + 2.2 * math.exp(-step / 20),
                     "train/lr": lr}, step=step)
        run.finish()
        ids[run.name] = run.id
    return ids
