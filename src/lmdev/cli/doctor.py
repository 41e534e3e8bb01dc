"""``lmdev doctor``: is this machine set up right for large-model work, and what can it do?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "check this machine: hardware, drivers, frameworks; findings with fixes"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "doctor",
        help=HELP,
        description="Collect facts about this machine (host, GPUs, frameworks) without importing "
        "any ML framework, and diagnose the common breakages, each with its fix. "
        "Exit code 0: no error found; 1: errors found; 2: bad usage.",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/doctor.md)")
    p.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report to PATH")
    p.add_argument("--deep", action="store_true",
                   help="also import each installed framework in its own subprocess and run a tiny "
                   "operation on each device it sees")
    p.add_argument("--deep-timeout", type=_positive, default=120.0, metavar="SECONDS",
                   help="time limit of each --deep check (default: 120)")
    out.add_argument("--rules", action="store_true", help="list the rules doctor applies and exit")
    p.add_argument("--record", metavar="PATH",
                   help="also save everything doctor read as a snapshot file (for a bug report)")
    p.add_argument("--from", dest="snapshot", metavar="PATH",
                   help="diagnose a snapshot saved with --record instead of this machine")
    p.add_argument("--nproc", type=_ranks, default=None, metavar="N",
                   help="training processes you mean to run here: checked against the cores and thread settings")
    return p


def _ranks(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def run(args: argparse.Namespace) -> int:
    if args.rules:
        return _list_rules()
    from lmdev.bench import load_latest
    from lmdev.diagnose.report import doctor, to_html
    from lmdev.errors import LmdevError
    from lmdev.fsutil import atomic_write_text, check_target
    from lmdev.probe.source import LocalSource, RecordingSource

    for out in (args.html, args.record):
        if out:
            check_target(Path(out))  # before the probes run: a folder, device or symlink is refused
    if args.snapshot and (args.record or args.deep):
        raise LmdevError("--from cannot be combined with --record or --deep",
                         "a snapshot is diagnosed as it was recorded")
    src: Any = None
    if args.snapshot:
        src = _load_snapshot(args.snapshot)
    elif args.record:
        src = RecordingSource(LocalSource())
    if args.deep and not args.json:
        print("Running deep checks (importing each framework in its own process)...", file=sys.stderr)
    try:
        report = doctor(src, deep=args.deep, deep_timeout=args.deep_timeout, ranks=args.nproc,
                        bench=None if args.snapshot else load_latest())
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
        if not args.snapshot:
            raise
        # a snapshot is input: a value of the wrong shape deep inside it (the probes read what
        # NVML or a command would answer) is the snapshot's problem, said in one line
        raise LmdevError(f"snapshot {args.snapshot} holds a value of the wrong type or shape "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                         "record one with `lmdev doctor --record PATH`") from None
    if args.record:
        atomic_write_text(args.record, json.dumps(src.fixture(f"recorded by lmdev doctor on {src.hostname}"),
                                                  indent=1, sort_keys=True))
    if args.html:
        atomic_write_text(args.html, to_html(report))
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(report)
        for label, path in (("HTML report", args.html), ("Snapshot", args.record)):
            if path:
                print(f"{label} written to {path}")
    return report.exit_code


def _load_snapshot(path: str) -> Any:
    from lmdev.errors import LmdevError
    from lmdev.fsutil import read_limited
    from lmdev.probe.source import FixtureSource

    raw = read_limited(path, 64 * 1024**2, "snapshot")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_not_json)  # no NaN / Infinity
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
        return FixtureSource.from_dict(data)
    except FileNotFoundError:
        raise LmdevError(f"snapshot {path} does not exist", "record one with `lmdev doctor --record PATH`") from None
    except RecursionError:
        raise LmdevError(f"snapshot {path} is nested too deeply to be a doctor snapshot",
                         "record one with `lmdev doctor --record PATH`") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise LmdevError(f"snapshot {path} is not a doctor snapshot ({exc})",
                         "record one with `lmdev doctor --record PATH`") from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _list_rules() -> int:
    from rich.console import Console
    from rich.table import Table

    from lmdev.diagnose.rules import RULES

    table = Table("id", "severity", "what it checks", box=None)
    for r in RULES:
        table.add_row(r.id, _SEV_STYLE[r.severity].format(r.severity), r.summary)
    Console().print(table)
    return 0


_SEV_STYLE = {"error": "[bold red]{}[/]", "warning": "[bold yellow]{}[/]", "info": "[bold blue]{}[/]"}
_SEV_ICON = {"error": "✖", "warning": "▲", "info": "●"}


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.1f} GiB"


def render(report: Any) -> None:
    """The terminal view: facts in short sections, then the findings with their fixes."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    f = report.facts
    h, acc, sw = f.host, f.accelerators, f.software
    console.print(f"[bold]lmdev doctor[/] — {escape(h.hostname)}  "
                  f"[dim]{report.collected_at} · {report.duration_seconds:.2f} s[/]")

    console.rule("[bold]Host", align="left")
    env = ", ".join(x for x in (h.container and f"{h.container} container", h.wsl and "WSL2",
                                h.virtual_machine and f"VM ({h.virtual_machine})") if x)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("OS", escape(f"{h.os_name or h.os} · kernel {h.kernel}" + (f" · {env}" if env else "")))
    venv = h.python.virtualenv or h.python.conda_env
    grid.add_row("Python", escape(f"{h.python.version} {h.python.executable}"
                                  + (f" (env {venv})" if venv else " (no virtual environment)")))
    cpu = h.cpu
    grid.add_row("CPU", escape(f"{cpu.model or '?'} · {cpu.cores or '?'} cores / {cpu.threads or '?'} threads"
                               + (f" · quota {cpu.quota_cores:g}" if cpu.quota_cores else "")
                               + (f" · {' '.join(cpu.features)}" if cpu.features else "")))
    mem = h.memory
    grid.add_row("Memory", f"{_gib(mem.available_bytes)} free of {_gib(mem.total_bytes)}"
                 + (f" · limit {_gib(mem.cgroup_limit_bytes)}" if mem.cgroup_limit_bytes else "")
                 + f" · swap {_gib(mem.swap_total_bytes)}"
                 + (f" · /dev/shm {_gib(h.shm_bytes)}" if h.shm_bytes is not None else ""))
    seen: set[tuple[Any, Any]] = set()
    for d in h.disks:
        key = (d.total_bytes, d.free_bytes)
        if key in seen:
            continue
        seen.add(key)
        same = [x.purpose for x in h.disks if (x.total_bytes, x.free_bytes) == key]
        grid.add_row("Disk", escape(f"{_gib(d.free_bytes)} free of {_gib(d.total_bytes)} · {', '.join(same)}"))
    console.print(grid)

    console.rule("[bold]Accelerators", align="left")
    if not acc.gpus:
        console.print("[dim]none found[/]")
    else:
        if acc.driver_version:
            console.print(f"[dim]driver[/] {acc.driver_version}  [dim]CUDA (driver)[/] "
                          f"{acc.cuda_driver_version or '?'}  [dim]via[/] {acc.source}")
        table = Table("#", "name", "memory used / total", "cc", "PCIe", "temp", "power", "util", box=None)
        for g in acc.gpus:
            pcie = (f"Gen{g.pcie_gen_current}/{g.pcie_gen_max} x{g.pcie_width_current}/{g.pcie_width_max}"
                    if g.pcie_width_max else "")
            table.add_row(str(g.index), escape(g.name), f"{_gib(g.memory_used_bytes)} / {_gib(g.memory_total_bytes)}",
                          g.compute_capability or "", pcie,
                          f"{g.temperature_c} °C" if g.temperature_c is not None else "",
                          f"{g.power_w:.0f} W" if g.power_w is not None else "",
                          f"{g.utilization_percent}%" if g.utilization_percent is not None else "")
        console.print(table)
        if acc.topology:
            topo = Table("", *[f"GPU{i}" for i in range(len(acc.topology))], box=None)
            for i, row in enumerate(acc.topology):
                topo.add_row(f"GPU{i}", *row)
            console.print(topo)

    console.rule("[bold]Software", align="left")
    if sw.packages:
        console.print("  ".join(f"{escape(k)} [dim]{escape(v)}[/]" for k, v in sw.packages.items()))
    else:
        console.print("[dim]no ML frameworks installed in this environment[/]")
    if sw.torch:
        kind = f"CUDA {sw.torch.cuda}" if sw.torch.cuda else f"ROCm {sw.torch.hip}" if sw.torch.hip else "CPU only"
        console.print(f"[dim]torch build[/] {kind}")
    if sw.cuda_toolkit.cuda_version:
        console.print(f"[dim]nvcc[/] CUDA {sw.cuda_toolkit.cuda_version} ({escape(sw.cuda_toolkit.nvcc_path or '')})")
    if sw.keras_backend:
        console.print(f"[dim]keras backend[/] {sw.keras_backend}")

    if f.deep is not None:
        console.rule("[bold]Deep checks", align="left")
        if not f.deep:
            console.print("[dim]no framework installed to check[/]")
        for d in f.deep:
            if d.ok:
                ops = ", ".join(f"{k} {'[green]ok[/]' if v == 'ok' else '[red]' + escape(v) + '[/]'}"
                                for k, v in d.op_results.items())
                console.print(f"{d.framework} {d.version} · import {d.import_seconds:.2f} s · {ops}")
            else:
                console.print(f"{d.framework} [red]{escape(d.error or 'failed')}[/]")

    _render_bench(console, report.bench)

    console.rule("[bold]Findings", align="left")
    if not report.findings:
        console.print("[green]No findings: this machine looks right.[/]")
    for x in report.findings:
        style = _SEV_STYLE[x.severity]
        console.print(style.format(f"{_SEV_ICON[x.severity]} {x.severity.upper()}") + f" {escape(x.title)}")
        console.print(f"  [dim]{escape(x.evidence)}[/]")
        console.print(f"  [bold]fix:[/] [cyan]{escape(x.fix)}[/]  [dim]({x.id})[/]")
    c = report.counts
    summary = f"{c['error']} error(s), {c['warning']} warning(s), {c['info']} info"
    colour = {"errors": "red", "warnings": "yellow", "ok": "green"}[report.status]
    console.print(f"\n[bold {colour}]{report.status.upper()}[/] — {summary}")


def _render_bench(console: Any, bench: dict[str, Any] | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    from lmdev.diagnose.report import bench_cells

    console.rule("[bold]Bench beside the peaks", align="left")
    if bench is None:
        console.print("[dim]no saved bench: `lmdev bench` measures matmul and memory bandwidth[/]")
        return
    console.print(f"[dim]lmdev bench of {escape(str(bench['created']))}"
                  + (" (--quick)" if bench["quick"] else "") + "[/]")
    table = Table("device", "what", "measured", "peak", "% of peak", box=None)
    for row in bench["rows"]:
        table.add_row(*(escape(c) for c in bench_cells(row)))
    console.print(table)
