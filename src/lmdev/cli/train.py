"""``lmdev train CONFIG``: train a model from a YAML config, tracked in the run store."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HELP = "train a model from a config (YAML/TOML), tracked in the run store"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", help=HELP,
        description="Train a model described by CONFIG. Checkpoints, metrics, events and system "
        "telemetry go to the run store (LMDEV_HOME, default ./.lmdev). SIGTERM / Ctrl-C save a "
        "checkpoint and stop; --resume continues exactly where it left off.",
    )
    p.add_argument("config", metavar="CONFIG", help="the config file (.yaml, .yml, .toml or .json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set optimizer.lr=0.01 (repeatable)")
    p.add_argument("--name", help="the run's name (default: the config's name)")
    p.add_argument("--resume", nargs="?", const="", metavar="RUN",
                   help="continue from the latest checkpoint of RUN (id prefix, name or checkpoint "
                   "path); without RUN, the latest run of this config's name")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout, nothing else")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-telemetry", action="store_true", help="do not sample system metrics")
    return p


def run(args: argparse.Namespace) -> int:
    from lmdev.train.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.name:
        cfg = cfg.model_copy(update={"name": args.name})
    if args.print_config:
        import yaml

        sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return 0
    from lmdev.train.session import train_session

    base_dir = Path(args.config).resolve().parent
    if args.json:
        result = train_session(cfg, resume=args.resume, base_dir=base_dir, telemetry=not args.no_telemetry)
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if result.status == "finished" else 1
    result = _with_progress(cfg, args, base_dir)
    _summary(result)
    return 0 if result.status == "finished" else 1


def _with_progress(cfg: Any, args: argparse.Namespace, base_dir: Path) -> Any:
    from rich.console import Console

    from lmdev.train.session import train_session

    console = Console(highlight=False)
    with progress_bar(console, cfg) as on_progress:
        return train_session(cfg, resume=args.resume, base_dir=base_dir, on_progress=on_progress,
                             telemetry=not args.no_telemetry, announce=console.print)


@contextlib.contextmanager
def progress_bar(console: Any, cfg: Any) -> Iterator[Callable[[Any], None]]:
    """A rich progress bar (step, loss, validation, throughput, ETA); yields the callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(cfg.name, total=cfg.train.max_steps, info="starting")

        def on_progress(p: Any) -> None:
            m = p.metrics
            parts = []
            if "train/loss" in m:
                parts.append(f"loss {m['train/loss']:.4f}")
            if "val/accuracy" in m:
                parts.append(f"val acc {m['val/accuracy']:.3f}")
            elif "val/loss" in m:
                parts.append(f"val loss {m['val/loss']:.4f}")
            rate = m.get("train/tokens_per_s") or m.get("train/samples_per_s")
            if rate:
                parts.append(f"{rate:,.0f} {'tok' if 'train/tokens_per_s' in m else 'samples'}/s")
            bar.update(task, completed=p.step, info=" · ".join(parts))

        yield on_progress


def _summary(result: Any) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    colour = "green" if result.status == "finished" else "yellow"
    console.print(f"[bold {colour}]{result.status}[/] after {result.steps} steps in {result.seconds:.1f} s "
                  f"on {result.device} ({result.precision}), {result.parameters:,} parameters")
    shown = {**result.train, **result.val}
    keys = [k for k in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "val/perplexity") if k in shown]
    if keys:
        console.print("  " + "  ".join(f"{k} [bold]{shown[k]:.4f}[/]" for k in keys))
    if result.run_id:
        console.print(f"  run [cyan]{result.run_id}[/] · checkpoints in {result.checkpoint_dir}")
        console.print(f"  look at it: [cyan]lmdev runs show {result.run_id}[/]")
    if result.status == "killed":
        console.print(f"  continue with: [cyan]lmdev train CONFIG --resume {result.run_id or ''}[/]")
