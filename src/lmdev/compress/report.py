"""The compression report: one dataclass, three views (rich text, JSON, HTML).

Every verdict is read off the measurements: a variant whose p50 latency is not below 0.9x the
baseline's at batch 1 or at the large batch is "no speed-up on this machine"; a model for which
no variant is faster is "below the size where compression pays" when it is small."""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from lmdev.compress.measure import FASTER, Measurement, is_faster, quality_drop, speedup

SCHEMA = "lmdev.compress/1"
SMALL_MODEL = 1_000_000  # parameters: below this, per-call overheads dominate on CPUs
NO_SPEEDUP = "no speed-up on this machine"


@dataclass
class VariantReport:
    name: str
    method: str
    backend: str
    settings: dict[str, Any] = field(default_factory=dict)
    measurement: Measurement | None = None
    speedup: list[float] = field(default_factory=list)  # baseline p50 / variant p50, per latency batch
    size_ratio: float | None = None  # variant file bytes / baseline's
    memory_ratio: float | None = None  # weights held in memory / baseline's
    peak_memory_ratio: float | None = None  # peak memory (fresh process: load, run the large batch) / baseline's
    quality_drop: float | None = None  # accuracy: points lost; perplexity / loss: percent worse
    faster: bool = False
    within_drop: bool | None = None
    pareto: bool = False
    verdict: str = ""
    error: str | None = None  # why the backend could not make this variant
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    source: dict[str, Any]
    machine: dict[str, Any]
    method: str
    target: str
    max_drop: float
    baseline: VariantReport
    variants: list[VariantReport] = field(default_factory=list)
    chosen: str | None = None  # the backend of the chosen variant
    out: str | None = None
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    distill: dict[str, Any] | None = None  # the KD search and the plainly trained twin
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def judge(v: VariantReport, base: Measurement, max_drop: float) -> None:
    """Fill in the ratios and the verdict of a measured variant."""
    m = v.measurement
    if m is None:
        v.verdict = "failed (see the notes)" if v.error else "not measured"
        return
    v.speedup = speedup(m, base)
    v.size_ratio = m.file_bytes / base.file_bytes if base.file_bytes else None
    v.memory_ratio = m.memory_bytes / base.memory_bytes if base.memory_bytes else None
    if m.peak_memory_bytes is not None and base.peak_memory_bytes:
        v.peak_memory_ratio = m.peak_memory_bytes / base.peak_memory_bytes
    v.quality_drop = quality_drop(m, base)
    v.faster = is_faster(m, base)
    v.within_drop = within(v, max_drop)
    parts = []
    if v.faster:
        best = max(v.speedup)
        parts.append(f"{best:.2f}x faster")
    else:
        parts.append(NO_SPEEDUP)
        slowest = min(v.speedup, default=1.0)
        if slowest > 0 and slowest <= FASTER:
            parts.append(f"{1 / slowest:.2f}x slower")
    if v.size_ratio is not None and v.size_ratio < 0.95:
        parts.append(f"{v.size_ratio:.2f}x size")
    elif v.size_ratio is not None and v.size_ratio > 1.05:
        parts.append(f"{v.size_ratio:.2f}x larger")
    if v.peak_memory_ratio is not None and v.peak_memory_ratio > 1.1:
        parts.append(f"{v.peak_memory_ratio:.2f}x the peak memory")
    if v.within_drop is False:
        parts.append(f"quality drop beyond {max_drop:g}")
    v.verdict = "; ".join(parts)


def within(v: VariantReport, max_drop: float) -> bool | None:
    m = v.measurement
    if m is None or m.quality is None:
        return None
    if v.quality_drop is not None:
        return v.quality_drop <= max_drop
    if m.quality.top1_agreement is not None:  # no labels: agreement with the baseline stands in
        return (1 - m.quality.top1_agreement) * 100 <= max_drop
    return None


def cost(v: VariantReport, target: str) -> float | None:
    m = v.measurement
    if m is None:
        return None
    if target == "size":
        return float(m.file_bytes)
    if target == "memory":
        return float(m.peak_memory_bytes if m.peak_memory_bytes is not None else m.memory_bytes)
    if v.speedup and v.speedup[0] > 0:
        # batch-1 latency relative to fp32 timed in alternation with it: p50s taken at different moments
        # of a shared machine's load are not comparable with each other, the paired ratios are
        return 1.0 / v.speedup[0]
    return m.latency[0].p50_ms if m.latency else None


def mark_pareto(reports: list[VariantReport], target: str) -> None:
    """A variant is on the front when no other is at least as cheap and as good, and better in one."""
    scored = [(r, cost(r, target), r.quality_drop if r.quality_drop is not None else 0.0) for r in reports]
    pts = [(r, c, q) for r, c, q in scored if c is not None]
    for r, c, q in pts:
        r.pareto = not any((c2 <= c and q2 <= q) and (c2 < c or q2 < q) for r2, c2, q2 in pts if r2 is not r)


def choose(variants: list[VariantReport], target: str, forced: str | None) -> VariantReport | None:
    """The cheapest variant (by ``target``) within the allowed drop that actually pays."""
    if forced:
        return next((v for v in variants if v.backend == forced and v.measurement is not None), None)
    ok = [v for v in variants if v.measurement is not None and v.within_drop is not False]
    if target == "latency":
        ok = [v for v in ok if v.faster]
    else:
        ok = [v for v in ok if ((v.size_ratio if target == "size" else _memory_ratio(v)) or 1.0) < 0.95]
    return min(ok, key=lambda v: cost(v, target) or math.inf, default=None)


def _memory_ratio(v: VariantReport) -> float | None:
    return v.peak_memory_ratio if v.peak_memory_ratio is not None else v.memory_ratio


def summary_notes(report: Report, n_params: int) -> None:
    measured = [v for v in report.variants if v.measurement is not None]
    if measured and not any(v.faster for v in measured):
        if n_params < SMALL_MODEL:
            report.notes.append(f"the model ({n_params:,} parameters) is below the size where compression pays "
                                "on this machine: no variant is faster than fp32")
        else:
            report.notes.append("no variant is faster than fp32 on this machine")
    for v in report.variants:
        if v.error:
            report.notes.append(f"{v.backend}: {v.error}")
        report.notes.extend(f"{v.backend}: {n}" for n in v.notes)


# --------------------------------------------------------------------------- views


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _metric(m: Measurement | None) -> str:
    q = m.quality if m is not None else None
    if q is None or q.value is None:
        return "-"
    return f"{q.value * 100:.2f}%" if q.metric == "accuracy" else f"{q.value:.4g}"


def rows(report: Report) -> list[list[str]]:
    """One row per variant for the text and HTML tables (the JSON has every figure)."""
    out = []
    for v in [report.baseline, *report.variants]:
        m = v.measurement
        mark = ("*" if v.pareto else "") + (">" if report.chosen == v.backend else "")
        if m is None:
            out.append([mark, v.backend, "-", "-", "-", "-", "-", "-", "-", v.verdict])
            continue
        lat = [f"{lt.p50_ms:.3g}" + (f" {1 / s:.2f}x" if s else "") for lt, s in
               zip(m.latency, v.speedup or [0.0] * len(m.latency))]
        q = m.quality
        out.append([mark, v.backend, _mb(m.file_bytes) + (f" {v.size_ratio:.2f}x" if v.size_ratio else ""),
                    *(lat + ["-"] * (2 - len(lat))),
                    _mb(m.peak_memory_bytes) + (f" {v.peak_memory_ratio:.2f}x" if v.peak_memory_ratio else ""),
                    _metric(m) + ("" if v.quality_drop is None else f" {-v.quality_drop:+.2f}"),
                    "-" if q is None or q.top1_agreement is None else f"{q.top1_agreement * 100:.1f}%",
                    "-" if q is None or q.rel_logit_error is None else f"{q.rel_logit_error:.2%}",
                    v.verdict or "baseline"])
    return out


HEADERS = ["", "variant", "file", "b=1 p50 ms", "b=N p50 ms", "peak mem", "metric", "top-1 agree", "logit err", "verdict"]


def render_text(report: Report, console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    src = report.source
    lat = report.baseline.measurement.latency if report.baseline.measurement else []
    batches = " and ".join(str(lt.batch) for lt in lat)
    console.print(f"[bold]lmdev compress[/] {escape(str(src.get('ref')))} — {src.get('parameters', 0):,} parameters; "
                  f"method {report.method}, target {report.target}, max drop {report.max_drop:g}; "
                  f"{report.machine.get('threads')} thread(s), batches {batches}")
    table = Table(show_lines=False, pad_edge=False, box=None)
    for h in HEADERS:
        table.add_column(h, overflow="fold")
    for r in rows(report):
        table.add_row(*(escape(c) for c in r))
    console.print(table)
    console.print("* on the Pareto front (" + report.target + " vs quality); > chosen. Ratios are variant/fp32 "
                  "(below 1 is smaller or faster); metric change: accuracy points or percent.")
    if report.distill:
        _render_distill(report.distill, console)
    for n in report.notes:
        console.print(f"note: {escape(n)}")
    if report.chosen:
        console.print(f"chosen: {escape(report.chosen)}" + (f" -> {escape(report.out)}" if report.out else ""))
    else:
        console.print("chosen: none (no variant pays within the limits; nothing written)")
    if report.run_id:
        console.print(f"recorded as run {report.run_id}")


def _render_distill(d: dict[str, Any], console: Any) -> None:
    from rich.markup import escape

    console.print("distillation search (held-out " + escape(str(d.get("metric"))) + "):")
    for row in d.get("search", []):
        console.print(f"  T={row['temperature']:g} alpha={row['alpha']:g}: {row['held_out']:.4g}")
    console.print(f"  on the evaluation data: plainly trained twin {_num(d.get('twin_eval'))}, distilled student "
                  f"{_num(d.get('student_eval'))}: {escape(str(d.get('verdict')))}")


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}"


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=1, allow_nan=False)


def render_html(report: Report) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in HEADERS)
    body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows(report))
    notes = "".join(f"<li>{e(n)}</li>" for n in report.notes)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>lmdev compress {e(str(report.source.get('ref')))}"
            "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}</style></head><body>"
            f"<h1>lmdev compress: {e(str(report.source.get('ref')))}</h1>"
            f"<p>method {e(report.method)}, target {e(report.target)}, machine {e(str(report.machine.get('cpu')))}, "
            f"{report.machine.get('threads')} thread(s)</p>{scatter_svg(report)}"
            f"<table><tr>{head}</tr>{body}</table><ul>{notes}</ul>"
            f"<script type='application/json' id='report'>{e(render_json(report))}</script></body></html>")


def scatter_svg(report: Report, w: int = 520, h: int = 300) -> str:
    """Cost (log scale) against quality drop, the Pareto front joined by a line."""
    scored = [(v, cost(v, report.target), v.quality_drop or 0.0) for v in [report.baseline, *report.variants]]
    pts = [(v, c, q) for v, c, q in scored if c]
    if not pts:
        return ""
    xs = [math.log10(c) for _, c, _ in pts]
    x0, x1 = min(xs) - 0.1, max(xs) + 0.1
    q0, q1 = min(q for *_, q in pts) - 0.5, max(q for *_, q in pts) + 0.5

    def xy(c: float, q: float) -> tuple[float, float]:
        return 50 + (math.log10(c) - x0) / (x1 - x0) * (w - 70), 20 + (q - q0) / (q1 - q0) * (h - 60)

    dots = "".join(f"<circle cx='{xy(c, q)[0]:.1f}' cy='{xy(c, q)[1]:.1f}' r='5' fill='{'#d33' if v.pareto else '#888'}'>"
                   f"<title>{html.escape(v.name)}</title></circle><text x='{xy(c, q)[0] + 7:.1f}' "
                   f"y='{xy(c, q)[1] + 4:.1f}' font-size='11'>{html.escape(v.backend)}</text>" for v, c, q in pts)
    front = sorted((xy(c, q) for v, c, q in pts if v.pareto))
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in front)
    unit = {"latency": "batch-1 p50 latency, x fp32 (log)", "size": "file size, bytes (log)",
            "memory": "weights in memory, bytes (log)"}[report.target]
    return (f"<svg width='{w}' height='{h}' xmlns='http://www.w3.org/2000/svg'><polyline points='{line}' fill='none' "
            f"stroke='#d33'/>{dots}<text x='50' y='{h - 10}' font-size='12'>{unit}; down = worse quality</text></svg>")
