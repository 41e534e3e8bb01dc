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
MAX_LIMIT = (1 << 63) - 1


def _limit(text: str) -> int:
    """--limit: a whole number from 0 to 2**63-1 (SQLite's largest); anything else is a usage error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be from 0 to {MAX_LIMIT}, got {text}")
    return value


def _read_only_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--read-only", action="store_true",
                   help="open the store read-only, writing nothing (read-only media); also LMDEV_READ_ONLY=1")


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
    ls.add_argument("--limit", type=_limit, metavar="N", help="at most N runs")
    ls.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/runs.md)")
    ls.add_argument("--wide", action="store_true",
                    help="every column in full, however wide (default: fit the terminal, cutting metric "
                    "values and the least useful columns before names)")
    _read_only_flag(ls)
    show = verbs.add_parser("show", help="a run: fields, config, metrics, events, artifacts")
    show.add_argument("run", metavar="RUN")
    show.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/runs.md)")
    show.add_argument("--system", action="store_true",
                      help="also the system metrics (a table of each series; with --json, every sample)")
    _read_only_flag(show)
    cmp = verbs.add_parser("compare", help="two or more runs side by side: config and final metrics")
    cmp.add_argument("runs", metavar="RUN", nargs="+")
    cmp.add_argument("--json", action="store_true", help="print one JSON document")
    _read_only_flag(cmp)
    ex = verbs.add_parser("export", help="write a run as CSV, JSON or TensorBoard event files")
    ex.add_argument("run", metavar="RUN")
    ex.add_argument("--format", choices=["csv", "json", "tensorboard"], default="csv")
    ex.add_argument("--out", "-o", metavar="PATH",
                    help="file (csv, json) or folder (tensorboard); default: ./<run-id>.csv, "
                    "./<run-id>.json or ./tb/<run-id>")
    _read_only_flag(ex)
    rm = verbs.add_parser("rm", help="delete runs and their folders")
    rm.add_argument("runs", metavar="RUN", nargs="+")
    rm.add_argument("--force", action="store_true", help="also delete runs that are still running")
    rm.add_argument("--yes", "-y", action="store_true",
                    help="delete without asking (needed where there is no terminal to ask on)")
    return p


def run(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError
    from lmdev.track.store import DB_NAME, Store, home, read_only_requested

    if not args.verb:
        raise LmdevError("lmdev runs needs a verb", "one of list, show, compare, export, rm")
    path = home(args.home) / DB_NAME
    try:
        found = path.exists()
    except OSError as exc:  # a name too long, ...
        raise LmdevError(f"cannot use the store folder {path.parent}: {exc.strerror or exc}",
                         "set LMDEV_HOME or --home to the folder of lmdev.db") from None
    if not found:  # reading commands do not create a store
        if args.verb == "list":
            _print_json({"schema": "lmdev.runs/1", "runs": []}) if args.json else \
                print(f"No runs: there is no store at {path} (set LMDEV_HOME or --home).")
            return 0
        raise LmdevError(f"no run store at {path}", "set LMDEV_HOME or --home to the folder of lmdev.db")
    read_only = read_only_requested(getattr(args, "read_only", False))
    if read_only and args.verb == "rm":
        raise LmdevError("lmdev runs rm cannot work on a store opened read-only (LMDEV_READ_ONLY is set)",
                         "unset LMDEV_READ_ONLY to remove runs")
    with Store(args.home, read_only=read_only) as store:
        store.reap()
        return int(_VERBS[args.verb](store, args))


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _num(value: float | None, key: str = "") -> str:
    """A metric value; one whose key names bytes in human units (``709.3 MiB``, not ``7.438e+08``)."""
    if value is None:
        return "-"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if _is_bytes(key):
        from lmdev.plan.memory import human

        return human(value) + ("/s" if key.lower().endswith("_per_s") else "")
    return f"{value:.6g}"


def _is_bytes(key: str) -> bool:
    low = key.lower()
    return "bytes" in low or low.endswith(("_mem", "/mem", "memory_used", "memory_total"))


_STATUS_STYLE = {"running": "cyan", "finished": "green", "failed": "red", "killed": "yellow"}


def _print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, indent=1)
    sys.stdout.write("\n")


def _warn_damaged(damaged: list[Any]) -> None:
    for exc in damaged:
        print(f"lmdev: warning: {exc.message}; skipped — {exc.hint}", file=sys.stderr)


def _last_values(store: Any, run: Any, damaged: list[Any]) -> dict[str, float]:
    from lmdev.track.store import DamagedRun

    try:
        return {s.key: s.last for s in store.summaries(run)}
    except DamagedRun as exc:
        damaged.append(exc)
        return {}


def _list(store: Any, args: argparse.Namespace) -> int:
    from lmdev.track.export import list_document

    runs = store.list_runs(project=args.project, status=args.status, limit=args.limit)
    damaged = list(store.damaged)
    if args.json:
        doc = list_document(store, runs)
        damaged += doc.pop("damaged", [])
        doc["damaged"] = [{"id": e.run_id, "message": e.message} for e in damaged]
        _print_json(doc)
        _warn_damaged(damaged)
        return 1 if damaged else 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text as T

    console = Console(highlight=False)
    if not runs:
        console.print(T(f"No runs in {store.path}. Start one with lmdev.init() or `lmdev run SCRIPT.py`."))
        _warn_damaged(damaged)
        return 1 if damaged else 0
    from lmdev.track.metric_names import by_canonical

    rows = []
    for r in runs:
        last = by_canonical(_last_values(store, r, damaged))  # Keras' val_loss is val/loss
        shown = [k for k in ("val/accuracy", "val/acc", "val/loss", "loss") if k in last]
        metrics = "  ".join(f"{k}={_num(last[k], k)}" for k in (shown or list(last)[:2]))
        name = r.name if r.parent_id is None else f"{r.name} ⑂{r.parent_id[:8]}@{r.fork_step}"
        rows.append({"id": r.id, "name": name, "project": r.project, "status": r.status,
                     "started": _when(r.start_time), "duration": _dur(r.duration), "metrics": metrics})
    cols = _fit_columns(rows, console.width, args.wide)
    if args.wide:
        console = Console(highlight=False, width=max(console.width, _table_width(rows, cols)))
    table = Table(box=None, header_style="bold")
    for col in cols:  # only the metrics are cut (with …) when the terminal is narrow; names never are
        table.add_column(col, no_wrap=col != "metrics", min_width=min(_col_width(rows, col), 40)
                         if col in ("id", "name") else None)
    for row in rows:
        table.add_row(*[_status(row[c]) if c == "status" else
                        T(row[c], no_wrap=True, overflow="ellipsis") for c in cols])
    console.print(table)
    _warn_damaged(damaged)
    return 1 if damaged else 0


LIST_COLUMNS = ("id", "name", "project", "status", "started", "duration", "metrics")
# dropped in this order when the table does not fit (the metrics are cut with … rather than dropped)
DROP_ORDER = ("project", "started", "duration")
MIN_METRICS = 16


def _col_width(rows: list[dict[str, str]], col: str) -> int:
    return max([len(col)] + [len(r[col]) for r in rows])


def _table_width(rows: list[dict[str, str]], cols: list[str]) -> int:
    return sum(_col_width(rows, c) + 2 for c in cols)  # box=None: one space each side


def _fit_columns(rows: list[dict[str, str]], width: int, wide: bool) -> list[str]:
    """The columns of ``runs list`` that fit ``width``: all with --wide; otherwise the least useful
    ones are dropped until the rest fits with room for the metrics."""
    cols = list(LIST_COLUMNS)
    if wide:
        return cols
    for col in DROP_ORDER:
        rest = [c for c in cols if c != "metrics"]
        if _table_width(rows, rest) + min(MIN_METRICS, _col_width(rows, "metrics")) + 2 <= width:
            break
        cols.remove(col)
    return cols


def _status(status: str) -> Any:
    """The status as rich Text (user text is never parsed as markup)."""
    from rich.text import Text

    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _show(store: Any, args: argparse.Namespace) -> int:
    r = store.get_run(args.run)
    if args.json:
        from lmdev.track.export import run_document

        _print_json(run_document(store, r, system=args.system))
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text as T

    console = Console(highlight=False)
    console.print(T.assemble((r.name, "bold"), f"  {r.id}  ", _status(r.status),
                             f" (exit code {r.exit_code})" if r.exit_code is not None else ""))
    console.print(T(f"  project {r.project}, started {_when(r.start_time)}, duration {_dur(r.duration)}, "
                    f"host {r.host}, pid {r.pid}"))
    if r.tags:
        console.print(T("  tags " + ", ".join(r.tags)))
    if r.git_commit:
        console.print(T(f"  git {r.git_commit[:12]}{' (dirty)' if r.git_dirty else ''}"))
    if r.command:
        console.print(T("  command " + " ".join(r.command)))
    _print_lineage(console, store, r)
    if r.config:
        from lmdev.track.export import flatten_config

        console.print("[bold]config")
        for k, v in sorted(flatten_config(r.config).items()):
            console.print(T(f"  {k} = {_config_value(v)}"))
    summaries = store.summaries(r)
    if summaries:
        t = Table(title="metrics", title_justify="left", box=None, header_style="bold")
        for col in ("key", "points", "steps", "last", "min", "max", "NaN/Inf"):
            t.add_column(col, justify="left" if col == "key" else "right")
        for s in summaries:
            t.add_row(T(s.key), str(s.count), f"{s.first_step}-{s.last_step}", _num(s.last, s.key),
                      _num(s.min, s.key), _num(s.max, s.key), str(s.nonfinite or ""))
        console.print(t)
    _print_summary(console, store, r)
    media = store.media_keys(r)
    if media:
        console.print(T("media  " + ", ".join(f"{k} ({kind})" for k, kind in media.items())))
    _print_system(console, store.system(r), args.system)
    events = store.events(r)
    if events:
        console.print("[bold]events")
        for ev in events[-20:]:
            console.print(T(f"  {_when(ev.time)} {ev.level:7} {ev.message}"))
    artifacts = store.artifacts(r)
    if artifacts:
        console.print("[bold]artifacts")
        for a in artifacts:
            console.print(T(f"  {a.path}  {a.kind}  {_num(a.size, 'bytes')}  sha256 {str(a.sha256)[:16]}"))
    return 0


def _print_lineage(console: Any, store: Any, r: Any) -> None:
    """Fork parent and step, resumes, and the runs forked from this one."""
    from rich.text import Text as T

    from lmdev.track.export import lineage

    line = lineage(store, r)
    if line["parent_id"]:
        try:
            parent = store.get_run(line["parent_id"]).name
        except Exception:
            parent = "deleted"
        console.print(T(f"  forked from {line['parent_id']} ({parent}) at step {line['fork_step']}"))
    if line["resumes"]:
        steps = ", ".join(f"{x['step']} ({x['dropped']} replaced)" for x in line["resumes"])
        console.print(T(f"  resumed {len(line['resumes'])} time(s), at step {steps}"))
    for f in line["forks"]:
        console.print(T(f"  fork {f['id']} ({f['name']}, {f['status']}) from step {f['fork_step']}"))


def _print_summary(console: Any, store: Any, r: Any) -> None:
    """The values the user set with ``run.summary[...]`` (the metrics' last values are in the
    metrics table)."""
    from rich.text import Text as T

    if r.summary:
        console.print("[bold]summary")
        for k, v in sorted(r.summary.items()):
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            console.print(T(f"  {k} = {_num(v, k) if number else _config_value(v)}"))


def _print_system(console: Any, system: list[Any], full: bool) -> None:
    """The run's system metrics: a table of each series with --system, else one line saying so."""
    from rich.table import Table
    from rich.text import Text as T

    series: dict[str, tuple[str, list[float]]] = {}
    for s in system:
        if isinstance(s.value, (int, float)):
            name = f"{s.device} {s.key}" + (f" (rank {s.rank})" if s.rank else "")
            series.setdefault(name, (s.key, []))[1].append(float(s.value))
    if not series:
        return
    if not full:
        console.print(T(f"system: {len(series)} series sampled (--system shows them)", style="dim"))
        return
    t = Table(title="system", title_justify="left", box=None, header_style="bold")
    for col in ("metric", "samples", "mean", "max", "last"):
        t.add_column(col, justify="left" if col == "metric" else "right")
    for name, (key, values) in series.items():
        t.add_row(T(name), str(len(values)), _num(sum(values) / len(values), key), _num(max(values), key),
                  _num(values[-1], key))
    console.print(t)


def _compare(store: Any, args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError
    from lmdev.track.export import json_number

    if len(args.runs) < 2:
        raise LmdevError("compare needs at least two runs", "lmdev runs compare RUN RUN")
    runs = [store.get_run(ref) for ref in args.runs]
    configs = [r.config for r in runs]
    keys = sorted({k for c in configs for k in c})
    differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]
    from lmdev.track.metric_names import aliases, by_canonical

    stored = [{s.key: s for s in store.summaries(r)} for r in runs]
    lasts = [by_canonical(m) for m in stored]  # val_loss (Keras) and val/loss (lmdev) on one row
    metric_keys = sorted({k for m in lasts for k in m})
    spellings = aliases({k for m in stored for k in m})
    renamed = {k: v for k, v in spellings.items() if v != [k]}
    if args.json:
        _print_json({
            "schema": "lmdev.compare/1",
            "runs": [{"id": r.id, "name": r.name, "status": r.status} for r in runs],
            "config": {k: [c.get(k) for c in configs] for k in differing},
            "metrics": {k: [None if k not in m else {"last": json_number(m[k].last),
                                                     "min": m[k].min, "max": m[k].max}
                            for m in lasts] for k in metric_keys},
            "aliases": renamed,
        })
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text as T

    from lmdev.track.export import flatten_config

    t = Table(box=None, header_style="bold")
    t.add_column("")
    for r in runs:
        t.add_column(T(f"{r.name}\n{r.id}"), justify="right")
    t.add_row("[bold]status", *[_status(r.status) for r in runs])
    t.add_row("duration", *[_dur(r.duration) for r in runs])
    flat = [flatten_config(c) for c in configs]  # one row per leaf: optimizer.lr, not a JSON blob
    for k in sorted({k for f in flat for k in f}):
        if len({json.dumps(f.get(k, "\0missing"), sort_keys=True) for f in flat}) > 1:
            t.add_row(T(f"config {k}"), *[T(_config_value(f[k])) if k in f else "-" for f in flat])
    for k in metric_keys:
        also = [a for a in renamed.get(k, []) if a != k]
        t.add_row(T(f"{k} (last" + (f"; also {', '.join(also)})" if also else ")")),
                  *[_num(m[k].last, k) if k in m else "-" for m in lasts])
    Console(highlight=False).print(t)
    return 0


def _config_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _export(store: Any, args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError
    from lmdev.names import is_run_id
    from lmdev.track.export import export

    r = store.get_run(args.run)
    if not args.out and not is_run_id(r.id):
        raise LmdevError(f"run id {r.id!r} cannot name a file", "give the file to write with --out")
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
    from lmdev.names import InvalidName
    from lmdev.track.store import run_dir

    runs = list({r.id: r for r in (store.get_run(ref) for ref in args.runs)}.values())
    running = [r.id for r in runs if r.status == "running"]
    if running and not args.force:
        raise LmdevError(f"run {', '.join(running)} is still running", "stop it first, or use --force")
    if not args.yes and not _confirm(runs):
        print("nothing removed", file=sys.stderr)
        return 1
    problems = 0
    for r in runs:
        try:
            folder: Path | None = run_dir(store.home, r.id)  # checked to stay inside the store
        except InvalidName as exc:
            folder = None
            problems += 1
            print(f"lmdev: warning: {exc.message}; its folder is left alone", file=sys.stderr)
        store.delete_run(r)
        if folder is not None and folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
        print(f"removed {r.id} ({r.name})")
    return 1 if problems else 0


def _confirm(runs: list[Any]) -> bool:
    """Ask on the terminal before deleting; without one, refuse (a script must say --yes)."""
    from lmdev.errors import LmdevError

    if not sys.stdin.isatty():
        raise LmdevError("lmdev runs rm asks before deleting, and there is no terminal to ask on",
                         "pass --yes to delete without asking")
    for r in runs:
        print(f"  {r.id}  {r.name}  ({r.status})", file=sys.stderr)
    print(f"Delete {len(runs)} run{'s' if len(runs) > 1 else ''} and {'their' if len(runs) > 1 else 'its'} "
          "folder? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


_VERBS = {"list": _list, "show": _show, "compare": _compare, "export": _export, "rm": _rm}
