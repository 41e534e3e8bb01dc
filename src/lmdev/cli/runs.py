"""``lmdev runs``: list, show, compare, export and remove the runs of the store (LMDEV_HOME)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

HELP = "list, show, compare, export and remove tracked runs"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "runs", help=HELP,
        description="The runs recorded in the store ($LMDEV_HOME/lmdev.db, default ./.lmdev). "
        "RUN is a run id, a unique id prefix, or a run name. Docs: docs/commands/runs.md.")
    p.add_argument("--home", metavar="DIR", help="the store folder (default: $LMDEV_HOME or ./.lmdev)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p))
    ls = verbs.add_parser("list", help="the runs, newest first")
    ls.add_argument("--project", help="only this project's runs")
    ls.add_argument("--status", choices=["running", "finished", "failed", "killed"])
    ls.add_argument("--limit", type=int, metavar="N", help="at most N runs")
    ls.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/runs.md)")
    show = verbs.add_parser("show", help="a run: fields, config, metrics, events, artifacts")
    show.add_argument("run", metavar="RUN")
    show.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/runs.md)")
    show.add_argument("--system", action="store_true", help="with --json: also the system metrics")
    cmp = verbs.add_parser("compare", help="two or more runs side by side: config and final metrics")
    cmp.add_argument("runs", metavar="RUN", nargs="+")
    cmp.add_argument("--json", action="store_true", help="print one JSON document")
    ex = verbs.add_parser("export", help="write a run as CSV, JSON or TensorBoard event files")
    ex.add_argument("run", metavar="RUN")
    ex.add_argument("--format", choices=["csv", "json", "tensorboard"], default="csv")
    ex.add_argument("--out", "-o", metavar="PATH",
                    help="file (csv, json) or folder (tensorboard); default: ./<run-id>.csv, "
                    "./<run-id>.json or ./tb/<run-id>")
    rm = verbs.add_parser("rm", help="delete runs and their folders")
    rm.add_argument("runs", metavar="RUN", nargs="+")
    rm.add_argument("--force", action="store_true", help="also delete runs that are still running")
    return p


def run(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError
    from lmdev.track.store import DB_NAME, Store, home

    if not args.verb:
        raise LmdevError("lmdev runs needs a verb", "one of list, show, compare, export, rm")
    path = home(args.home) / DB_NAME
    if not path.exists():  # reading commands do not create a store
        if args.verb == "list":
            _print_json({"schema": "lmdev.runs/1", "runs": []}) if args.json else \
                print(f"No runs: there is no store at {path} (set LMDEV_HOME or --home).")
            return 0
        raise LmdevError(f"no run store at {path}", "set LMDEV_HOME or --home to the folder of lmdev.db")
    with Store(args.home) as store:
        store.reap()
        return int(_VERBS[args.verb](store, args))


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.6g}"


_STATUS_STYLE = {"running": "cyan", "finished": "green", "failed": "red", "killed": "yellow"}


def _print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


def _list(store: Any, args: argparse.Namespace) -> int:
    from lmdev.track.export import list_document

    runs = store.list_runs(project=args.project, status=args.status, limit=args.limit)
    if args.json:
        _print_json(list_document(store, runs))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not runs:
        console.print(f"No runs in {store.path}. Start one with lmdev.init() or `lmdev run SCRIPT.py`.")
        return 0
    table = Table(box=None, header_style="bold")
    for col in ("id", "name", "project", "status", "started", "duration", "metrics"):
        table.add_column(col, no_wrap=col in ("id", "status", "started", "duration"))
    for r in runs:
        last = {s.key: s.last for s in store.summaries(r)}
        shown = [k for k in ("val_accuracy", "val/accuracy", "val_acc", "val_loss", "loss") if k in last]
        metrics = "  ".join(f"{k}={_num(last[k])}" for k in (shown or list(last)[:2]))
        style = _STATUS_STYLE.get(r.status, "")
        table.add_row(r.id, r.name, r.project, f"[{style}]{r.status}[/]", _when(r.start_time),
                      _dur(r.duration), metrics)
    console.print(table)
    return 0


def _show(store: Any, args: argparse.Namespace) -> int:
    r = store.get_run(args.run)
    if args.json:
        from lmdev.track.export import run_document

        _print_json(run_document(store, r, system=args.system))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    style = _STATUS_STYLE.get(r.status, "")
    console.print(f"[bold]{r.name}[/]  {r.id}  [{style}]{r.status}[/]"
                  + (f" (exit code {r.exit_code})" if r.exit_code is not None else ""))
    console.print(f"  project {r.project}, started {_when(r.start_time)}, duration {_dur(r.duration)}, "
                  f"host {r.host}, pid {r.pid}")
    if r.git_commit:
        console.print(f"  git {r.git_commit[:12]}{' (dirty)' if r.git_dirty else ''}")
    if r.command:
        console.print("  command " + " ".join(r.command))
    if r.config:
        console.print("[bold]config")
        for k, v in sorted(r.config.items()):
            console.print(f"  {k} = {json.dumps(v)}")
    summaries = store.summaries(r)
    if summaries:
        t = Table(title="metrics", title_justify="left", box=None, header_style="bold")
        for col in ("key", "points", "steps", "last", "min", "max", "NaN/Inf"):
            t.add_column(col, justify="left" if col == "key" else "right")
        for s in summaries:
            t.add_row(s.key, str(s.count), f"{s.first_step}-{s.last_step}", _num(s.last), _num(s.min),
                      _num(s.max), str(s.nonfinite or ""))
        console.print(t)
    system = store.system(r)
    if system:
        series: dict[str, list[float]] = {}
        for s in system:
            series.setdefault(f"{s.device} {s.key}" + (f" (rank {s.rank})" if s.rank else ""), []).append(s.value)
        t = Table(title="system", title_justify="left", box=None, header_style="bold")
        for col in ("metric", "samples", "mean", "max"):
            t.add_column(col, justify="left" if col == "metric" else "right")
        for key, values in series.items():
            t.add_row(key, str(len(values)), _num(sum(values) / len(values)), _num(max(values)))
        console.print(t)
    events = store.events(r)
    if events:
        console.print("[bold]events")
        for e in events[-20:]:
            console.print(f"  {_when(e.time)} {e.level:7} {e.message}")
    artifacts = store.artifacts(r)
    if artifacts:
        console.print("[bold]artifacts")
        for a in artifacts:
            console.print(f"  {a.path}  {a.kind}  {a.size} B  sha256 {a.sha256[:16]}")
    return 0


def _compare(store: Any, args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError
    from lmdev.track.export import json_number

    if len(args.runs) < 2:
        raise LmdevError("compare needs at least two runs", "lmdev runs compare RUN RUN")
    runs = [store.get_run(ref) for ref in args.runs]
    configs = [r.config for r in runs]
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    lasts = [{s.key: s for s in store.summaries(r)} for r in runs]
    metric_keys = sorted({k for m in lasts for k in m})
    if args.json:
        _print_json({
            "schema": "lmdev.compare/1",
            "runs": [{"id": r.id, "name": r.name, "status": r.status} for r in runs],
            "config": {k: [c.get(k) for c in configs] for k in differing},
            "metrics": {k: [None if k not in m else {"last": json_number(m[k].last),
                                                     "min": m[k].min, "max": m[k].max}
                            for m in lasts] for k in metric_keys},
        })
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    t.add_column("")
    for r in runs:
        t.add_column(f"{r.name}\n{r.id}", justify="right")
    t.add_row("[bold]status", *[r.status for r in runs])
    t.add_row("duration", *[_dur(r.duration) for r in runs])
    for k in differing:
        t.add_row(f"config {k}", *[json.dumps(c.get(k)) if k in c else "-" for c in configs])
    for k in metric_keys:
        t.add_row(f"{k} (last)", *[_num(m[k].last) if k in m else "-" for m in lasts])
    Console(highlight=False).print(t)
    return 0


def _export(store: Any, args: argparse.Namespace) -> int:
    from lmdev.track.export import export

    r = store.get_run(args.run)
    default = {"csv": f"{r.id}.csv", "json": f"{r.id}.json", "tensorboard": f"tb/{r.id}"}[args.format]
    out = Path(args.out or default)
    files = export(store, r, args.format, out)
    for f in files:
        print(f)
    if args.format == "tensorboard":
        print(f"view with: tensorboard --logdir {out}", file=sys.stderr)
    return 0


def _rm(store: Any, args: argparse.Namespace) -> int:
    import shutil

    from lmdev.errors import LmdevError
    from lmdev.track.store import run_dir

    runs = [store.get_run(ref) for ref in args.runs]
    running = [r.id for r in runs if r.status == "running"]
    if running and not args.force:
        raise LmdevError(f"run {', '.join(running)} is still running", "stop it first, or use --force")
    for r in runs:
        store.delete_run(r)
        shutil.rmtree(run_dir(store.home, r.id), ignore_errors=True)
        print(f"removed {r.id} ({r.name})")
    return 0


_VERBS = {"list": _list, "show": _show, "compare": _compare, "export": _export, "rm": _rm}
