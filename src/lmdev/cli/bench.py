"""``lmdev bench``: what this machine really does: matmul, memory, transfers, disk, all-reduce."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "measure this machine: matmul per dtype, memory and host-device bandwidth, disk, all-reduce"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help=HELP, description=HELP + ". Results are saved under LMDEV_HOME "
                       "(bench/latest.json) and used by `lmdev plan`. Docs: docs/commands/bench.md.")
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats: a few seconds")
    p.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/bench.md)")
    p.add_argument("--no-save", action="store_true", help="do not save the results")
    return p


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    from lmdev.bench import run_bench, save
    from lmdev.errors import LmdevError

    try:
        import torch  # noqa: F401
    except ImportError:
        raise LmdevError("lmdev bench needs PyTorch", "pip install 'lmdev[torch]'") from None

    def progress(msg: str) -> None:
        if not args.json:
            print(f"  {msg}...", file=sys.stderr, flush=True)

    result = run_bench(quick=args.quick, progress=progress)
    path = None if args.no_save else save(result)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(result)
        if path:
            print(f"Saved to {path} (used by `lmdev plan`)")
    return 0


def _rate(v: float | None, unit: str = "B/s") -> str:
    if not v:
        return "-"
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= size:
            return f"{v / size:.1f} {prefix}{unit}"
    return f"{v:.0f} {unit}"


def _pct(p: float | None) -> str:
    return f"{p:.0f}%" if p is not None else "-"


def render(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console(highlight=False)
    cpu = r["cpu"]
    c.print(f"[bold]lmdev bench[/bold] {'(quick) ' if r['quick'] else ''}on {r['hostname']}, torch {r['torch']}, "
            f"{r['threads']} threads")
    t = Table(title="Matmul throughput (best size; % of peak)")
    for col in ("device", "dtype", "best", "size", "% of peak", "peak"):
        t.add_column(col, justify="left" if col in ("device", "dtype") else "right")
    devices = [(f"CPU ({cpu['model'] or '?'}, {cpu['cores']} cores)", cpu)] + \
        [(f"GPU {g['index']} {g['name']}", g) for g in r["gpus"]]
    for label, dev in devices:
        for dtype, rows in dev["matmul"].items():
            ok = [x for x in rows if x.get("flops")]
            if not ok:
                t.add_row(label, dtype, "unsupported", "-", "-", "-")
                continue
            best = max(ok, key=lambda x: x["flops"])
            peak = (dev.get("peak_flops") or {}).get(dtype)
            t.add_row(label, dtype, _rate(best["flops"], "FLOP/s"), str(best["size"]), _pct(best["percent_of_peak"]),
                      _rate(peak, "FLOP/s"))
            label = ""
    c.print(t)
    b = Table(title="Bandwidth")
    for col in ("what", "figure", "% of peak"):
        b.add_column(col, justify="left" if col == "what" else "right")
    b.add_row("CPU memory (copy)", _rate(cpu.get("memory_bandwidth_bytes_s")), "-")
    for g in r["gpus"]:
        b.add_row(f"GPU {g['index']} memory (copy)", _rate(g.get("memory_bandwidth_bytes_s")),
                  _pct(g.get("memory_bandwidth_percent_of_peak")))
        for way in ("h2d", "d2h"):
            for kind in ("pinned", "pageable"):
                b.add_row(f"GPU {g['index']} {way.upper()} {kind}", _rate(g[f"{way}_bytes_s"][kind]), "-")
    d = r["disk"]
    b.add_row(f"disk write ({d['path']})", _rate(d["write_bytes_s"]), "-")
    b.add_row("disk read" + ("" if d["cache_dropped"] else " (may be cached)"), _rate(d["read_bytes_s"]), "-")
    ar = r.get("allreduce")
    if ar and "bus_bandwidth_bytes_s" in ar:
        b.add_row(f"all-reduce bus bandwidth ({ar['devices']} GPUs)", _rate(ar["bus_bandwidth_bytes_s"]),
                  _pct(ar.get("percent_of_peak")))
    elif ar and ar.get("error"):
        b.add_row("all-reduce", "failed: " + ar["error"][:60], "-")
    c.print(b)
