"""``lmdev cluster``: several remotes as one distributed environment — create, check, train."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "several SSH hosts as one: create, check (all-reduce, versions, clocks), train"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "cluster", help=HELP,
        description="Group remotes (see `lmdev remote add`) into a cluster, check that they form one "
        "distributed environment, and train across them with torchrun. Docs: docs/commands/cluster.md.")
    cs = p.add_subparsers(dest="cluster_cmd", metavar="SUBCOMMAND", required=True)
    c = cs.add_parser("create", help="group remotes into a cluster (the first is node rank 0)")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--hosts", required=True, metavar="A,B,...", help="remote names, comma-separated")
    c.add_argument("--master-addr", metavar="ADDR", help="the address the nodes reach the first one at "
                   "(default: its host)")
    c.add_argument("--port", type=int, default=29500, help="the rendezvous port on the first node (default 29500)")
    r = cs.add_parser("rm", help="forget a cluster (its remotes stay)")
    r.add_argument("name", metavar="NAME")
    k = cs.add_parser("check", help="every node reachable and alike; a real all-reduce across them")
    k.add_argument("name", metavar="NAME")
    k.add_argument("--mbytes", type=float, default=16.0, help="all-reduce size in MB (default 16)")
    k.add_argument("--json", action="store_true")
    t = cs.add_parser("train", help="train CONFIG on every node (torchrun), one run in the local store")
    t.add_argument("name", metavar="NAME")
    t.add_argument("config", metavar="CONFIG")
    t.add_argument("--sync", metavar="DIR", help="the project folder to send (default: CONFIG's git work tree "
                   "or folder)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--nproc", type=int, default=1, help="workers per node (default 1)")
    return p


def run(args: argparse.Namespace) -> int:
    return int({"create": _create, "rm": _rm, "check": _check, "train": _train}[args.cluster_cmd](args) or 0)


def _create(args: argparse.Namespace) -> int:
    from lmdev.remote import cluster

    c = cluster.create(args.name, [h.strip() for h in args.hosts.split(",") if h.strip()], args.master_addr,
                       args.port)
    print(f"cluster {c.name}: {', '.join(c.hosts)} (rank 0: {c.hosts[0]}, rendezvous port {c.port})")
    return 0


def _rm(args: argparse.Namespace) -> int:
    from lmdev.remote import hosts

    reg = hosts.load()
    hosts.get_cluster(args.name)
    del reg.clusters[args.name]
    hosts.save(reg)
    print(f"removed cluster {args.name}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.console import Console
    from rich.markup import escape

    from lmdev.remote import cluster

    rep = cluster.check(args.name, mbytes=args.mbytes)
    if args.json:
        json.dump({"cluster": rep.cluster, "ok": rep.ok, "nodes": rep.nodes, "allreduce": rep.allreduce,
                   "findings": [asdict(f) for f in rep.findings]}, sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
        return 0 if rep.ok else 1
    console = Console(highlight=False)
    for f in rep.findings:
        mark = "[green]ok[/]  " if f.ok else "[bold red]FAIL[/]"
        where = f"{escape(f.node)}: " if f.node else ""
        console.print(f"{mark} {escape(f.check)} · {where}{escape(f.detail)}")
        if not f.ok and f.fix:
            console.print(f"      [bold]fix:[/] [cyan]{escape(f.fix)}[/]")
    console.print("[bold green]cluster ready[/]" if rep.ok else "[bold red]cluster not ready[/]")
    return 0 if rep.ok else 1


def train_cluster(name: str, config: str, sync: str | None, overrides: list[str], nproc: int = 1) -> int:
    from lmdev.cli.remote import follow_printer
    from lmdev.errors import LmdevError
    from lmdev.remote import cluster, ops

    cfg = Path(config).resolve()
    if not cfg.is_file():
        raise LmdevError(f"config {config} does not exist", "give the path of a training config")
    folder = Path(sync).resolve() if sync else ops.default_sync_dir(cfg)
    if not cfg.is_relative_to(folder):
        raise LmdevError(f"config {config} is not inside the project folder {folder}", "pass --sync DIR")
    res = cluster.train(name, cluster.Launch(cfg, folder, overrides, nproc), follow_printer())
    failed = [s for s in res.states if s["exit_code"] != 0]
    for s, node in zip(res.states, hosts_of(name)):
        print(f"lmdev: {node}: {s['state']} (exit status {s['exit_code']})", file=sys.stderr)
    if res.run_id:
        print(f"lmdev: run {res.run_id} is in the local store; node logs in {res.logs[0].parent if res.logs else '-'}",
              file=sys.stderr)
    return 1 if failed else 0


def hosts_of(name: str) -> list[str]:
    from lmdev.remote import hosts

    return hosts.get_cluster(name)[0].hosts


def _train(args: argparse.Namespace) -> int:
    return train_cluster(args.name, args.config, args.sync, args.overrides, args.nproc)


def train_on(args: argparse.Namespace) -> int:
    """``lmdev train CONFIG --on NAME``: a cluster, or a single remote."""
    from lmdev.cli.remote import TrainRequest, sbatch_options, train_remote
    from lmdev.errors import LmdevError
    from lmdev.remote import hosts

    if not args.on:
        raise LmdevError("--slurm needs --on LOGIN (a remote that is a Slurm login node)",
                         "add it with `lmdev remote add LOGIN HOST`, then `lmdev train CONFIG --on LOGIN --slurm`")
    sbatch = sbatch_options(getattr(args, "slurm", False), getattr(args, "sbatch", []) or [])
    clusters = hosts.load().clusters
    if args.on in clusters:
        if sbatch is not None:
            n = len(clusters[args.on].hosts)
            raise LmdevError(f"{args.on} is a cluster of SSH hosts; Slurm places a job on its nodes itself",
                             f"add the Slurm login node as a remote and run `lmdev train {args.config} --on LOGIN "
                             f"--slurm --sbatch nodes={n}`")
        return train_cluster(args.on, args.config, None, args.overrides, args.nproc or 1)
    return train_remote(TrainRequest(args.on, args.config, overrides=args.overrides, run_name=args.name,
                                     pull=True, sbatch=sbatch))  # the run lands in the local store
