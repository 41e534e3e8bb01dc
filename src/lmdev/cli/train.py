"""``lmdev train CONFIG``: train a model from a YAML config, tracked in the run store."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lmdev.cli.argtypes import positive_int

HELP = "train a model from a config (YAML/TOML), tracked in the run store"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train", help=HELP,
        description="Train a model described by CONFIG. Checkpoints, metrics, events and system "
        "telemetry go to the run store (LMDEV_HOME, default ./.lmdev). SIGTERM / Ctrl-C save a "
        "checkpoint and stop; --resume continues the same run exactly where it left off; --fork "
        "starts a new run from another run's checkpoint (e.g. with another learning rate).",
    )
    p.add_argument("config", metavar="CONFIG", help="the config file (.yaml, .yml, .toml or .json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set optimizer.lr=0.01 (repeatable)")
    p.add_argument("--name", help="the run's name (default: the config's name)")
    origin = p.add_mutually_exclusive_group()
    origin.add_argument("--resume", nargs="?", const="", metavar="RUN",
                        help="continue RUN (id prefix, name or checkpoint path) from its latest checkpoint: "
                        "the same run, its steps past the checkpoint replaced; without RUN, the latest "
                        "run of this config's name")
    origin.add_argument("--fork", metavar="RUN[@STEP]",
                        help="start a new run from RUN's checkpoint at STEP (or the latest before it; "
                        "default its latest), linked to RUN as its parent; the model must match, the "
                        "optimizer, schedule and steps may change")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout, nothing else")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-telemetry", action="store_true", help="do not sample system metrics")
    d = p.add_argument_group("several workers (torchrun's elastic launcher; gloo on CPU, NCCL on GPU)")
    d.add_argument("--nproc", type=positive_int, metavar="N", help="workers on this machine (one GPU each)")
    d.add_argument("--nnodes", type=positive_int, default=1, metavar="M", help="machines taking part (default 1)")
    d.add_argument("--node-rank", type=int, default=0, metavar="R", help="this machine's rank, 0..M-1")
    d.add_argument("--master-addr", metavar="ADDR", help="address of the node with rank 0")
    d.add_argument("--master-port", type=_port, metavar="PORT", help="its port (default 29500)")
    d.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="a c10d rendezvous endpoint instead of master addr/port")
    d.add_argument("--max-restarts", type=int, default=0, metavar="K",
                   help="restart failed workers up to K times; they resume from the latest checkpoint")
    d.add_argument("--join-timeout", type=_seconds, default=300.0, metavar="SECONDS",
                   help="how long to wait for every node to join (default 300)")
    d.add_argument("--dry-run", action="store_true",
                   help="print the torchrun command line and the per-rank batch, and exit")
    p.add_argument("--on", metavar="NAME", help="train on a remote or cluster (see `lmdev remote`, `lmdev cluster`)")
    p.add_argument("--slurm", action="store_true", help="with --on: submit through Slurm (sbatch) on that login node")
    p.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="with --slurm: an #SBATCH option (nodes=2, partition=gpu, ...)")
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, not {text!r}")
    return value


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError("a port is at most 65535")
    return value


def run(args: argparse.Namespace) -> int:
    if getattr(args, "on", None) or getattr(args, "slurm", False):  # lmdev remote / lmdev cluster
        from lmdev.cli.cluster import train_on

        return train_on(args)
    from lmdev.train.config import load_config

    cfg = load_config(args.config, args.overrides)
    if args.name:
        cfg = cfg.model_copy(update={"name": args.name})
    if args.print_config:
        import yaml

        sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        return 0
    from lmdev.train.preflight import preflight
    from lmdev.train.session import require_store, train_session

    base_dir = Path(args.config).resolve().parent
    # before anything starts (workers, the progress bar, a run): the data and the store
    preflight(cfg, base_dir)
    if not args.dry_run:
        require_store(None)  # checkpoints live in the store
    distributed = args.nproc is not None or args.nnodes > 1 or args.dry_run
    if distributed and not _inside_worker():
        return _launch(cfg, args)

    if _inside_worker() and not _is_rank_zero():  # rank 0 speaks for all
        result = train_session(cfg, resume=args.resume, fork=args.fork, base_dir=base_dir, telemetry=not args.no_telemetry)
        return exit_code(result)
    if args.json:
        result = train_session(cfg, resume=args.resume, fork=args.fork, base_dir=base_dir, telemetry=not args.no_telemetry)
        json.dump(result.to_dict(), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
        return exit_code(result)
    result = _with_progress(cfg, args, base_dir)
    _summary(result)
    return exit_code(result)


def exit_code(result: Any) -> int:
    """0 finished; 128 + N for a run stopped by signal N (after its checkpoint was saved), as a
    shell reports a process a signal ended; 1 otherwise (diverged, stopped by another worker)."""
    if result.status == "finished":
        return 0
    if result.status == "killed" and result.signal:
        return 128 + int(result.signal)
    return 1


def _is_rank_zero() -> bool:
    from lmdev.train.launch import worker_place

    return worker_place(os.environ).rank == 0


def _inside_worker() -> bool:
    from lmdev.train.launch import worker_place

    return worker_place(os.environ).launched


def _worker_args(args: argparse.Namespace) -> list[str]:
    """The ``lmdev train`` arguments each worker gets (everything but the launcher's own)."""
    out = [str(Path(args.config).resolve())]
    for item in args.overrides:
        out += ["--set", item]
    if args.name:
        out += ["--name", args.name]
    if args.resume is not None:
        out += ["--resume"] + ([args.resume] if args.resume else [])
    if args.fork is not None:
        out += ["--fork", args.fork]
    if args.json:
        out.append("--json")
    if args.no_telemetry:
        out.append("--no-telemetry")
    return out


def _launch(cfg: Any, args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    from lmdev.errors import LmdevError
    from lmdev.train.launch import check_global_batch, check_rendezvous_id, port_in_use, torchrun_command, worker_thread_env

    nproc = args.nproc or 1
    world = nproc * args.nnodes
    check_global_batch(cfg.data.batch_size, world, cfg.train.grad_accum)
    if cfg.device.startswith("cuda") or cfg.device == "auto":
        gpus = _visible_gpus()
        if cfg.device.startswith("cuda") and gpus == 0:
            raise LmdevError(f"device {cfg.device} asked for, but no GPU is visible", "use device: cpu or auto")
        if gpus and nproc > gpus:
            raise LmdevError(f"--nproc {nproc} is more than the {gpus} GPU(s) on this machine",
                             f"use --nproc {gpus} (one GPU per worker), or device: cpu")
    if args.nnodes > 1 and not (args.master_addr or args.rdzv_endpoint):
        raise LmdevError("--nnodes > 1 needs --master-addr (and --master-port) or --rdzv-endpoint",
                         "give the address of the node with --node-rank 0")
    if not 0 <= args.node_rank < args.nnodes:
        raise LmdevError(f"--node-rank {args.node_rank} is outside 0..{args.nnodes - 1}")
    if args.nnodes > 1 and not args.dry_run:
        check_rendezvous_id(args.nnodes, os.environ)  # two launches must not share torchrun's run id
    port = args.master_port or 29500
    if args.nnodes > 1 and args.node_rank == 0 and not args.rdzv_endpoint and not args.dry_run \
            and port_in_use(args.master_addr or "127.0.0.1", port):
        raise LmdevError(f"port {port} on {args.master_addr} is already in use",
                         f"choose another with --master-port (e.g. {port + 1})")
    cmd = torchrun_command(_worker_args(args), nproc, args.nnodes, args.node_rank, args.master_addr,
                           args.master_port, args.rdzv_endpoint, args.max_restarts, args.join_timeout)
    per_rank = cfg.data.batch_size // world
    micro = per_rank // cfg.train.grad_accum
    plan = (f"{world} worker(s) ({nproc} per node x {args.nnodes} node(s)); global batch "
            f"{cfg.data.batch_size} = {per_rank} per rank" + (f" in {cfg.train.grad_accum} micro-batches of {micro}"
                                                             if cfg.train.grad_accum > 1 else ""))
    if args.dry_run:
        print(plan)
        print(shlex.join(cmd))
        return 0
    print(f"lmdev: launching {plan}", file=sys.stderr)
    env = worker_thread_env(os.environ, nproc)  # cores / workers threads each, unless the user set them
    import time

    t0 = time.monotonic()
    code = subprocess.run(cmd, env=env).returncode
    if code != 0 and args.nnodes > 1 and time.monotonic() - t0 >= args.join_timeout:
        raise LmdevError(f"not every node joined within {args.join_timeout:g} s (expected {args.nnodes} nodes)",
                         "start `lmdev train --nnodes ...` on every node, check the address and "
                         "firewall, or raise --join-timeout")
    if code != 0:
        print(f"lmdev: the workers failed (exit status {code}); see their output above", file=sys.stderr)
    return 1 if code else 0


def _visible_gpus() -> int:
    from lmdev.probe.collect import collect

    return sum(1 for g in collect().accelerators.gpus if g.vendor == "nvidia")


def _with_progress(cfg: Any, args: argparse.Namespace, base_dir: Path) -> Any:
    from rich.console import Console

    from lmdev.train.session import train_session

    console = Console(highlight=False)
    with progress_bar(console, cfg) as on_progress:
        return train_session(cfg, resume=args.resume, fork=args.fork, base_dir=base_dir, on_progress=on_progress,
                             telemetry=not args.no_telemetry, announce=console.print)


@contextlib.contextmanager
def progress_bar(console: Any, cfg: Any) -> Iterator[Callable[[Any], None]]:
    """A rich progress bar (step, loss, validation, throughput, ETA); yields the callback."""
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=30), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(escape(cfg.name), total=cfg.train.max_steps, info="starting")

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
    from rich.markup import escape

    console = Console(highlight=False)
    colour = {"finished": "green", "diverged": "red"}.get(result.status, "yellow")
    console.print(f"[bold {colour}]{result.status}[/] after {result.steps} steps in {result.seconds:.1f} s "
                  f"on {result.device} ({result.precision}), {result.parameters:,} parameters")
    shown = {**result.train, **result.val}
    keys = [k for k in ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "val/perplexity") if k in shown]
    if keys:
        console.print("  " + "  ".join(f"{k} [bold]{shown[k]:.4f}[/]" for k in keys))
    if result.run_id:
        run_id = escape(str(result.run_id))
        console.print(f"  run [cyan]{run_id}[/] · checkpoints in {escape(str(result.checkpoint_dir))}")
        console.print(f"  look at it: [cyan]lmdev runs show {run_id}[/]")
    if result.status == "diverged":
        console.print("  the loss or the weights are no longer finite: lower optimizer.lr, set train.grad_clip, "
                      "or use train.nan_policy: rollback")
    if result.status == "killed":
        console.print(f"  continue with: [cyan]lmdev train CONFIG --resume {escape(str(result.run_id or ''))}[/]")
