"""Training-step overhead: the lmdev engine side by side with a hand-written PyTorch loop and
Lightning's Trainer, in one run, on the same model, data, batch order, optimizer and threads.

Workloads (issue 4):
  mlp  the founding document's MLP (64-128-64-10) on digits, batch 64, SGD lr 0.1
  cnn  the CNN (conv 16, conv 32, dense 64) on digits read as 8x8 images, batch 64, AdamW
  gpt  a ~10M-parameter gpt (6 layers, n_embd 384, 6 heads, byte vocabulary) at sequence
       length 256 on the generated arithmetic corpus, AdamW

Contenders:
  lmdev      lmdev.train.trainer.Trainer with a real tracking run (lmdev.track.init, telemetry on),
             logging every 10 steps (the engine's default)
  raw        a hand-written loop: same model object from lmdev.train.models, same data tensors,
             same batch order (lmdev.train.data.Batches), same optimizer; loss.item() only at
             the log interval
  lightning  lightning.Trainer (progress bar, logger, checkpointing and model summary off) on a
             LightningModule wrapping the same model, fed the same batches in the same order

Each contender's steps/s is timed over the steady part of a run (from the end of step
``warmup`` to the end of step ``steps - 1``: set-up, the final evaluation and the final
checkpoint are outside the window). The contenders run alternately ``--repeats`` times (the
order rotates each round) and the medians are compared.

Budget: lmdev/raw >= 0.97 for every workload, and mlp lmdev/lightning >= 1.5.
Exit status 1 when a budget is missed (the figures are noisy on a shared machine).

    python benchmarks/trainer_overhead.py [--quick] [--threads N] [--repeats R] [--json] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

BUDGET = {"mlp": {"raw": 0.97, "lightning": 1.5}, "cnn": {"raw": 0.97}, "gpt": {"raw": 0.97}}

WORKLOADS: dict[str, dict[str, Any]] = {
    "mlp": {
        "config": {
            "name": "bench-mlp", "seed": 0,
            "model": {"type": "mlp", "hidden": [128, 64], "activation": "relu"},
            "data": {"type": "digits", "batch_size": 64, "val_fraction": 0.2},
            "loss": "cross_entropy",
            "optimizer": {"type": "sgd", "lr": 0.1},
            "train": {"max_steps": 800, "eval_every": 100000, "log_every": 10},
            "checkpoint": {"every": 100000, "keep": 1},
            "precision": "fp32", "device": "cpu",
        },
        "warmup": 100,
    },
    "cnn": {
        "config": {
            "name": "bench-cnn", "seed": 0,
            "model": {"type": "cnn", "channels": [16, 32], "hidden": 64},
            "data": {"type": "digits", "batch_size": 64, "val_fraction": 0.2},
            "loss": "cross_entropy",
            "optimizer": {"type": "adamw", "lr": 1e-3},
            "train": {"max_steps": 300, "eval_every": 100000, "log_every": 10},
            "checkpoint": {"every": 100000, "keep": 1},
            "precision": "fp32", "device": "cpu",
        },
        "warmup": 50,
    },
    "gpt": {
        "config": {
            "name": "bench-gpt", "seed": 0,
            "model": {"type": "gpt", "n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256},
            "data": {"type": "synthetic", "batch_size": 4, "seq_len": 256, "n_examples": 6000,
                     "val_fraction": 0.01},
            "loss": "cross_entropy",
            "optimizer": {"type": "adamw", "lr": 3e-4, "weight_decay": 0.1},
            "train": {"max_steps": 10, "eval_every": 100000, "log_every": 10},
            "checkpoint": {"every": 100000, "keep": 1},
            "precision": "fp32", "device": "cpu",
        },
        "warmup": 2,
    },
}


def _cfg(workload: str, steps: int | None) -> Any:
    from lmdev.train.config import load_config

    raw = json.loads(json.dumps(WORKLOADS[workload]["config"]))
    if steps:
        raw["train"]["max_steps"] = steps
    return load_config(raw)


def _setup(cfg: Any) -> tuple[Any, Any, Any]:
    """The same data, initial model and batch order the engine builds."""
    from lmdev.train.data import Batches, load_data
    from lmdev.train.components.random_state import seed_everything
    from lmdev.train.models import build_model

    seed_everything(cfg.seed)
    data = load_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.shape)
    return data, model, Batches(len(data.train), cfg.data.batch_size, cfg.seed)


def _loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def _optimizer(cfg: Any, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.type == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr)
    return torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _rate(stamps: dict[int, tuple[float, float]], warmup: int, last: int) -> tuple[float, float]:
    """Steps per second of wall time, and per second of this process's CPU time (all its threads:
    the engine's writer and telemetry threads count). The CPU figure is less disturbed by other
    programs competing for the cores."""
    (w0, c0), (w1, c1) = stamps[warmup], stamps[last]
    return (last - warmup) / (w1 - w0), (last - warmup) / (c1 - c0)


# --------------------------------------------------------------------------- contenders


def run_lmdev(cfg: Any, warmup: int, home: Path) -> tuple[float, float]:
    from lmdev import track
    from lmdev.train.trainer import Trainer

    steps = cfg.train.max_steps
    stamps: dict[int, tuple[float, float]] = {}

    def on_progress(p: Any) -> None:
        if p.step in (warmup, steps - 1):
            stamps[p.step] = _now()

    run = track.init(name=cfg.name, config=cfg.model_dump(mode="json"), home=home, telemetry=True)
    try:
        result = Trainer(cfg, run=run, on_progress=on_progress, handle_signals=False).train()
    finally:
        run.finish()
    assert result.status == "finished" and result.steps == steps
    return _rate(stamps, warmup, steps - 1)


def run_raw(cfg: Any, warmup: int) -> tuple[float, float]:
    data, model, batches = _setup(cfg)
    opt = _optimizer(cfg, model)
    steps, log_every = cfg.train.max_steps, cfg.train.log_every
    stamps: dict[int, tuple[float, float]] = {}
    model.train()
    for step in range(steps):
        x, y = data.train.batch(batches.indices(step))
        loss = _loss(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % log_every == 0:
            loss.item()
        if step + 1 in (warmup, steps - 1):
            stamps[step + 1] = _now()
    return _rate(stamps, warmup, steps - 1)


def run_lightning(cfg: Any, warmup: int) -> tuple[float, float]:
    import lightning as L

    data, model, batches = _setup(cfg)
    steps = cfg.train.max_steps

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return _loss(self.model(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return _optimizer(cfg, self.model)

    class StepBatches(torch.utils.data.Dataset):
        """Item k is the k-th global batch of the engine's order."""

        def __len__(self) -> int:
            return steps

        def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
            return data.train.batch(batches.indices(k))

    stamps: dict[int, tuple[float, float]] = {}

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if batch_idx + 1 in (warmup, steps - 1):
                stamps[batch_idx + 1] = _now()

    loader = torch.utils.data.DataLoader(StepBatches(), batch_size=None, shuffle=False, num_workers=0)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, enable_progress_bar=False, logger=False,
                        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[Clock()])
    trainer.fit(Module(), loader)
    return _rate(stamps, warmup, steps - 1)


# --------------------------------------------------------------------------- driver


def measure(workloads: list[str], repeats: int, steps: dict[str, int | None], home: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for w in workloads:
        cfg, warmup = _cfg(w, steps.get(w)), WORKLOADS[w]["warmup"]
        contenders = {"lmdev": lambda c=cfg, k=warmup: run_lmdev(c, k, home),
                      "raw": lambda c=cfg, k=warmup: run_raw(c, k),
                      "lightning": lambda c=cfg, k=warmup: run_lightning(c, k)}
        order = list(contenders)
        samples: dict[str, list[float]] = {k: [] for k in order}
        cpu: dict[str, list[float]] = {k: [] for k in order}
        for r in range(repeats):
            for name in order[r % 3:] + order[:r % 3]:  # rotate who goes first
                wall, per_cpu = contenders[name]()
                samples[name].append(wall)
                cpu[name].append(per_cpu)
                print(f"  {w} round {r + 1} {name:9s} {wall:9.2f} steps/s wall, {per_cpu:9.2f} per CPU-second "
                      f"(threads {torch.get_num_threads()})", file=sys.stderr)
        med = {k: statistics.median(v) for k, v in samples.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        results[w] = {"steps": cfg.train.max_steps, "warmup": warmup, "batch": cfg.data.batch_size,
                      "samples": samples, "median": med, "cpu_samples": cpu, "cpu_median": med_cpu,
                      "ratio": {"lmdev/raw": med["lmdev"] / med["raw"],
                                "lmdev/lightning": med["lmdev"] / med["lightning"]},
                      "cpu_ratio": {"lmdev/raw": med_cpu["lmdev"] / med_cpu["raw"],
                                    "lmdev/lightning": med_cpu["lmdev"] / med_cpu["lightning"]}}
    return results


def profile_lmdev(workload: str, steps: int | None, home: Path, top: int = 25) -> None:
    import cProfile
    import pstats

    cfg, warmup = _cfg(workload, steps), WORKLOADS[workload]["warmup"]
    run_lmdev(cfg, warmup, home)  # warm: imports and first-call costs out of the profile
    prof = cProfile.Profile()
    prof.enable()
    run_lmdev(cfg, warmup, home)
    prof.disable()
    pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for every contender (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--workload", choices=["mlp", "cnn", "gpt", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke test, not a measurement)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--profile", action="store_true", help="cProfile the lmdev engine on the workload(s)")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("LMDEV_TELEMETRY", "1")
    workloads = ["mlp", "cnn", "gpt"] if args.workload == "all" else [args.workload]
    steps = {"mlp": 300, "cnn": 120, "gpt": 6} if args.quick else {}
    with tempfile.TemporaryDirectory(prefix="lmdev-bench-") as tmp:
        home = Path(tmp) / "home"
        cwd = os.getcwd()
        os.chdir(tmp)  # the engine's ./checkpoints and ./.lmdev land in the temporary folder
        try:
            if args.profile:
                for w in workloads:
                    profile_lmdev(w, steps.get(w), home)
                return 0
            results = measure(workloads, args.repeats, steps, home)
        finally:
            os.chdir(cwd)
    ok = True
    if args.json:
        print(json.dumps({"threads": args.threads, "repeats": args.repeats, "results": results,
                          "torch": torch.__version__, "python": platform.python_version()}, indent=1))
    print(f"trainer overhead: torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} "
          "alternating rounds", file=sys.stderr if args.json else sys.stdout)
    for w, r in results.items():
        m, q = r["median"], r["ratio"]
        line = (f"{w:4s} batch {r['batch']:3d}: lmdev {m['lmdev']:8.2f}  raw {m['raw']:8.2f}  lightning "
                f"{m['lightning']:8.2f} steps/s | lmdev/raw {q['lmdev/raw']:.3f}  lmdev/lightning {q['lmdev/lightning']:.2f}")
        misses = [f"lmdev/{k} {q[f'lmdev/{k}']:.3f} < {v}" for k, v in BUDGET[w].items() if q[f"lmdev/{k}"] < v]
        ok &= not misses
        print(line + ("   MISSES " + ", ".join(misses) if misses else "   within budget"),
              file=sys.stderr if args.json else sys.stdout)
        c, cq = r["cpu_median"], r["cpu_ratio"]
        print(f"{'':4s} per CPU-s: lmdev {c['lmdev']:8.2f}  raw {c['raw']:8.2f}  lightning {c['lightning']:8.2f} "
              f"        | lmdev/raw {cq['lmdev/raw']:.3f}  lmdev/lightning {cq['lmdev/lightning']:.2f}",
              file=sys.stderr if args.json else sys.stdout)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
