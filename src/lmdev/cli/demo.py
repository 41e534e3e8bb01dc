"""``lmdev demo``: the README's main job, a walk through what lmdev does on this machine."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "walk through lmdev on this machine with bundled data"

# Stages that later capabilities add to the demo, in the order they will run.

def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("demo", help=HELP, description="Run lmdev's stages on this machine, on "
                       "bundled and generated data, in a few minutes: doctor, then training a "
                       "digits MLP and a small GPT, each tracked in the run store.")
    p.add_argument("--quick", action="store_true", help="train for a few steps only (a smoke test)")
    return p


def demo_configs(quick: bool) -> list[Any]:
    """The two training configs of the demo, as validated TrainConfigs."""
    from lmdev.train.config import load_config

    digits = load_config({
        "name": "demo-digits-mlp", "seed": 0,
        "model": {"type": "mlp", "hidden": [128, 64], "activation": "relu"},
        "data": {"type": "digits", "batch_size": 64, "val_fraction": 0.2},
        "loss": "cross_entropy",
        "optimizer": {"type": "sgd", "lr": 0.1},
        "train": {"max_steps": 30 if quick else 1500, "eval_every": 10 if quick else 250, "log_every": 10},
        "checkpoint": {"every": 30 if quick else 500, "keep": 2},
    })
    gpt = load_config({
        "name": "demo-arithmetic-gpt", "seed": 0,
        "model": {"type": "gpt", "n_layer": 4, "n_head": 4, "n_kv_head": 2, "n_embd": 128, "block_size": 64},
        "data": {"type": "synthetic", "batch_size": 32, "seq_len": 64, "n_examples": 40000, "val_fraction": 0.05},
        "optimizer": {"type": "adamw", "lr": 3e-3, "weight_decay": 0.1, "betas": [0.9, 0.95]},
        "schedule": {"type": "cosine", "warmup_steps": 5 if quick else 50, "min_lr_ratio": 0.1},
        "train": {"max_steps": 20 if quick else 600, "eval_every": 10 if quick else 200, "log_every": 10 if quick else 20,
                  "grad_clip": 1.0},
        "checkpoint": {"every": 20 if quick else 300, "keep": 2},
        "precision": "auto",
    })
    return [digits, gpt]


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lmdev.cli.doctor import render
    from lmdev.diagnose.report import doctor

    console = Console(highlight=False)
    console.rule("[bold]Stage 1 of 3 — lmdev doctor: is this machine set up right?")
    render(doctor())
    _setup_plan(console)

    from lmdev.cli.train import _summary, progress_bar
    from lmdev.train.session import train_session

    results = []
    stages = [("Stage 2 of 3 — lmdev train: the founding document's MLP on handwritten digits",),
              ("Stage 3 of 3 — lmdev train: a small GPT learns arithmetic from a generated corpus",)]
    for (title,), cfg in zip(stages, demo_configs(args.quick)):
        console.rule(f"[bold]{title}")
        console.print(f"[dim]{_describe(cfg)}[/]")
        with progress_bar(console, cfg) as on_progress:
            result = train_session(cfg, on_progress=on_progress, announce=console.print)
        _summary(result)
        results.append(result)
        if result.status != "finished":
            return 1

    console.rule("[bold]What you can do now")
    for r in results:
        console.print(f"  [cyan]lmdev runs show {r.run_id}[/]   metrics, events and checkpoints of {r.run_id}")
    console.print("  [cyan]lmdev runs list[/]   every run in this store (.lmdev/)")
    if len(results) == 2:
        console.print(f"  [cyan]lmdev runs compare {results[0].run_id} {results[1].run_id}[/]")
    console.print("  [cyan]lmdev ui[/]   the dashboard: these runs' curves, hardware and the machine (open the printed URL)")
    console.print("  [cyan]lmdev train examples/digits_mlp.yaml --set optimizer.lr=0.05[/]   train your own")
    console.print("  [cyan]lmdev plan llama-3-8b --task lora --hardware all[/]   will a bigger model fit, and on what")
    console.print("  [cyan]lmdev doctor --deep[/]   also test each installed framework")
    console.print("  [cyan]lmdev setup --verify[/]   check this environment on every device; "
                  "[cyan]lmdev init DIR[/] starts a locked project")
    if results:
        first = results[0].run_id
        console.print(f"  [cyan]lmdev compress {first}[/]   quantise or prune the MLP, measured against fp32 here")
        console.print(f"  [cyan]lmdev explain {first}[/]   which pixels drove the MLP's predictions")
    console.print("  [cyan]lmdev data check examples/digits_mlp.yaml[/]   duplicates, leaks and label errors in the data")
    console.print("  [cyan]lmdev secure scan PATH[/]   is a model file safe to load; "
                  "[cyan]lmdev remote add[/] NAME HOST for a GPU box over SSH")
    return 0


def _setup_plan(console: Any) -> None:
    """What `lmdev setup` would install on this machine (the plan only: nothing changes)."""
    from lmdev.cli.setup import render_plan
    from lmdev.errors import LmdevError
    from lmdev.setup.engine import SetupOptions, dry_run

    console.rule("[bold]lmdev setup --dry-run: the framework builds this machine needs")
    try:
        render_plan(dry_run(SetupOptions(stacks=["torch"])))
    except LmdevError as exc:
        console.print(f"[yellow]no setup plan: {exc}[/]")


def _describe(cfg: Any) -> str:
    m = cfg.model
    if m.type == "mlp":
        model = f"MLP {'-'.join(map(str, m.hidden))}, {m.activation}"
    else:
        model = (f"GPT {m.n_layer} layers × {m.n_embd} wide, {m.n_head} heads ({m.n_kv_head or m.n_head} kv), "
                 f"{m.position}, {m.norm}, {m.mlp}")
    return (f"{model}; data {cfg.data.type}, batch {cfg.data.batch_size}; {cfg.optimizer.type} lr "
            f"{cfg.optimizer.lr}; {cfg.train.max_steps} steps")
