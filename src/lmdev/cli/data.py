"""``lmdev data check``: is this data sound before training on it?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lmdev.cli.argtypes import positive_int

HELP = "check training data: duplicates, leaks between splits, label errors, broken columns, text hygiene"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("data", help=HELP, description=HELP + ".")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    c = verbs.add_parser(
        "check", help="check a training config's data, or data files",
        description="Check the data a training config names (its splits as training makes them), or "
        "files given directly (csv, npy, npz, parquet, text; or the bundled sets digits and synthetic). "
        "Tables and text are read in chunks; label errors and leakage look at a random sample. "
        "Exit code 0: nothing severe; 1: a severe finding; 2: bad usage.")
    c.add_argument("target", metavar="CONFIG|PATH", help="a training config (.yaml/.toml/.json) or a data file")
    c.add_argument("--val", metavar="PATH", help="a validation file, checked for overlap with train")
    c.add_argument("--test", metavar="PATH", help="a test file, checked for overlap with train")
    c.add_argument("--label", metavar="COLUMN", help="the label column of a table, name or index (default: the last)")
    c.add_argument("--sample", type=positive_int, default=None, metavar="N",
                   help="rows the slow checks (label errors, leakage) look at (default 20000)")
    c.add_argument("--max-tokens", type=positive_int, default=None, metavar="N",
                   help="text: a sample longer than this is overlong (default: the config's data.seq_len, else 128)")
    c.add_argument("--fast", action="store_true", help="skip the model-based label-error check")
    c.add_argument("--out", metavar="DIR", help="write report.json and each finding's full row list here "
                   "(default: $LMDEV_HOME/data-checks/<time>)")
    c.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/data.md)")
    return p


def run(args: argparse.Namespace) -> int:
    import time

    from lmdev.data.check import SAMPLE_SIZE, CheckOptions, check
    from lmdev.track.store import home

    out = Path(args.out) if args.out else home() / "data-checks" / time.strftime("%Y%m%d-%H%M%S")
    label: str | int | None = args.label
    if isinstance(label, str) and label.lstrip("-").isdigit():
        label = int(label)
    opts = CheckOptions(val=args.val, test=args.test, label=label, out_dir=out,
                        sample_size=args.sample or SAMPLE_SIZE, fast=args.fast, max_tokens=args.max_tokens)
    report = check(args.target, opts)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        render(report)
    return report.exit_code


_STYLE = {"severe": "bold red", "warn": "bold yellow", "info": "bold blue"}
_ICON = {"severe": "✖", "warn": "▲", "info": "●"}


def render(report: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"[bold]lmdev data check[/] — {escape(report.source)}  [dim]{report.seconds:.2f} s[/]")
    table = Table("split", "source", "kind", "rows", "features", "label", "classes", box=None)
    for s in report.splits:
        table.add_row(s.name, escape(s.source), s.kind, f"{s.rows:,}", str(s.columns or ""),
                      escape(s.label or ""), str(s.classes or ""))
    console.print(table)
    if report.sample_size and report.splits and report.splits[0].kind == "table":
        console.print(f"[dim]label errors and leakage checked on a random sample of {report.sample_size:,} "
                      f"train rows[/]")
    console.rule("[bold]Findings", align="left")
    for f in report.sorted_findings():
        console.print(f"[{_STYLE[f.severity]}]{_ICON[f.severity]} {f.severity.upper()}[/] {escape(f.message)}  "
                      f"[dim]({f.id})[/]")
        if f.rows:
            more = f" … all {f.count:,} in {escape(f.rows_file)}" if f.rows_file else ""
            console.print(f"  [dim]rows ({f.split}):[/] {', '.join(map(str, f.rows))}{more}")
        if f.severity != "info":
            console.print(f"  [bold]fix:[/] [cyan]{escape(f.fix)}[/]")
    c = report.counts
    colour = "red" if c["severe"] else "yellow" if c["warn"] else "green"
    status = "SEVERE" if c["severe"] else "WARNINGS" if c["warn"] else "OK"
    console.print(f"\n[bold {colour}]{status}[/] — {c['severe']} severe, {c['warn']} warning(s), {c['info']} info"
                  + (f"  [dim]report: {escape(report.out_dir)}/report.json[/]" if report.out_dir else ""))
