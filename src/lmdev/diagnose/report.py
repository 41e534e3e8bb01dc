"""The doctor report: facts plus findings, one source of truth with three views (the CLI's rich
text, the JSON document of docs/schemas/doctor.md, and a self-contained HTML page)."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import time
from dataclasses import dataclass, field
from typing import Any

from lmdev import __version__
from lmdev.diagnose import diagnose
from lmdev.diagnose.types import Finding
from lmdev.probe.source import Source
from lmdev.probe.types import GiB, Facts

SCHEMA = "lmdev.doctor/1"


@dataclass
class Report:
    facts: Facts
    findings: list[Finding]
    collected_at: str = ""
    duration_seconds: float = 0.0
    lmdev_version: str = __version__
    counts: dict[str, int] = field(default_factory=dict)
    bench: dict[str, Any] | None = None  # the latest `lmdev bench` beside the peaks: created, rows

    def __post_init__(self) -> None:
        self.counts = {s: sum(1 for f in self.findings if f.severity == s)
                       for s in ("error", "warning", "info")}

    @property
    def status(self) -> str:
        return "errors" if self.counts["error"] else "warnings" if self.counts["warning"] else "ok"

    @property
    def exit_code(self) -> int:
        return 1 if self.counts["error"] else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "lmdev_version": self.lmdev_version,
            "collected_at": self.collected_at,
            "duration_seconds": round(self.duration_seconds, 4),
            "summary": {"status": self.status, "errors": self.counts["error"],
                        "warnings": self.counts["warning"], "infos": self.counts["info"]},
            "facts": self.facts.to_dict(),
            "findings": [dataclasses.asdict(f) for f in self.findings],
            "bench": self.bench,
        }


def doctor(src: Source | None = None, deep: bool = False, deep_timeout: float = 120.0,
           ranks: int | None = None, bench: dict[str, Any] | None = None) -> Report:
    """Collect the facts (and, with ``deep``, ask each framework in a subprocess), apply the rules.
    ``ranks``: training processes meant for this machine; ``bench``: a saved `lmdev bench` result
    to show beside the peaks."""
    from lmdev.probe.collect import collect

    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc)
    facts = collect(src)
    if ranks:
        facts.host.cpu.ranks = ranks
    if deep:
        from lmdev.probe.deep import frameworks_to_check, run_deep

        facts.deep = run_deep(frameworks_to_check(facts.software), timeout=deep_timeout)
    findings = diagnose(facts)
    return Report(facts, findings, collected_at=started.isoformat(timespec="seconds"),
                  duration_seconds=time.perf_counter() - t0, bench=bench_beside_peaks(bench))


def bench_beside_peaks(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """The saved bench's best matmul per device and dtype with its peak, or None without one."""
    if not result:
        return None
    from lmdev.bench import peak_table

    return {"created": result.get("created"), "quick": bool(result.get("quick")),
            "hostname": result.get("hostname"), "rows": peak_table(result)}


# --------------------------------------------------------------------------- HTML


def _gib(n: int | None) -> str:
    return "—" if n is None else f"{n / GiB:.1f} GiB"


_CSS = """
:root{--bg:#fff;--fg:#1b1f24;--muted:#59636e;--line:#d1d9e0;--card:#f6f8fa;
--error:#cf222e;--warning:#9a6700;--info:#0969da;--ok:#1a7f37}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;
--line:#3d444d;--card:#151b23;--error:#ff7b72;--warning:#d29922;--info:#58a6ff;--ok:#3fb950}}
body{font:14px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;background:var(--bg);
color:var(--fg);max-width:1100px;margin:2rem auto;padding:0 1rem}
h1{font-size:1.6rem;margin:0}h2{font-size:1.15rem;border-bottom:1px solid var(--line);
padding-bottom:.3rem;margin-top:2rem}.muted{color:var(--muted)}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{text-align:left;padding:.3rem .6rem;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600}
.finding{border:1px solid var(--line);border-left:4px solid var(--sev);border-radius:6px;
padding:.6rem .9rem;margin:.6rem 0;background:var(--card)}
.finding h3{margin:0;font-size:1rem}.sev{color:var(--sev);font-weight:700;text-transform:uppercase;
font-size:.75rem;margin-right:.5rem}.error{--sev:var(--error)}.warning{--sev:var(--warning)}
.info{--sev:var(--info)}code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;
background:var(--bg);border:1px solid var(--line);border-radius:4px;padding:.1rem .3rem}
.badge{display:inline-block;padding:.15rem .6rem;border-radius:1rem;color:#fff;font-weight:600}
.b-ok{background:var(--ok)}.b-warnings{background:var(--warning)}.b-errors{background:var(--error)}
"""


def to_html(report: Report) -> str:
    """One self-contained page: inline CSS, no scripts, no external assets."""
    e = html.escape
    f = report.facts
    h, acc, sw = f.host, f.accelerators, f.software

    def rows(pairs: list[tuple[str, Any]]) -> str:
        return "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in pairs
                       if v not in (None, "", []))

    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width,initial-scale=1'>",
        f"<title>lmdev doctor — {e(h.hostname)}</title><style>{_CSS}</style></head><body>",
        f"<h1>lmdev doctor — {e(h.hostname)}</h1>",
        f"<p class='muted'>{e(report.collected_at)} · lmdev {e(report.lmdev_version)} · "
        f"{report.duration_seconds:.2f} s</p>",
        f"<p><span class='badge b-{report.status}'>{e(report.status)}</span> "
        f"{report.counts['error']} error(s), {report.counts['warning']} warning(s), "
        f"{report.counts['info']} info</p>",
        "<h2>Findings</h2>",
    ]
    if not report.findings:
        parts.append("<p>No findings: this machine looks right.</p>")
    for x in report.findings:
        parts.append(
            f"<div class='finding {e(x.severity)}'><h3><span class='sev'>{e(x.severity)}</span>"
            f"{e(x.title)}</h3><p class='muted'>{e(x.evidence)}</p>"
            f"<p><b>Fix:</b> <code>{e(x.fix)}</code></p><p class='muted'><small>{e(x.id)}</small></p></div>"
        )
    parts.append("<h2>Bench beside the peaks</h2>")
    if report.bench is None:
        parts.append("<p class='muted'>No saved bench: run <code>lmdev bench</code>.</p>")
    else:
        parts.append(f"<p class='muted'>lmdev bench of {e(str(report.bench['created']))}</p><table>"
                     "<tr><th>device</th><th>what</th><th>measured</th><th>peak</th><th>% of peak</th></tr>")
        for r in report.bench["rows"]:
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in bench_cells(r)) + "</tr>")
        parts.append("</table>")
    cpu, mem = h.cpu, h.memory
    parts += [
        "<h2>Host</h2><table>",
        rows([
            ("OS", f"{h.os_name or h.os} (kernel {h.kernel})"),
            ("Environment", ", ".join(x for x in (h.container and f"container: {h.container}",
                                                  h.wsl and "WSL2",
                                                  h.virtual_machine and f"VM: {h.virtual_machine}") if x)),
            ("Python", f"{h.python.version} {h.python.executable}"),
            ("Virtual env", h.python.virtualenv or h.python.conda_env or "none"),
            ("CPU", f"{cpu.model} — {cpu.cores} cores / {cpu.threads} threads ({cpu.architecture})"),
            ("CPU features", ", ".join(cpu.features)),
            ("RAM", f"{_gib(mem.available_bytes)} available of {_gib(mem.total_bytes)}"),
            ("Swap", _gib(mem.swap_total_bytes)),
            ("/dev/shm", _gib(h.shm_bytes) if h.shm_bytes is not None else None),
        ]),
        "</table><table><tr><th>Disk</th><th>Path</th><th>Free</th><th>Total</th></tr>",
        "".join(f"<tr><td>{e(d.purpose)}</td><td>{e(d.path)}</td><td>{_gib(d.free_bytes)}</td>"
                f"<td>{_gib(d.total_bytes)}</td></tr>" for d in h.disks),
        "</table><h2>Accelerators</h2>",
    ]
    if acc.gpus:
        parts.append(f"<p class='muted'>source: {e(acc.source or '')} · driver {e(acc.driver_version or '—')}"
                     f" · CUDA (driver) {e(acc.cuda_driver_version or '—')}</p>")
        parts.append("<table><tr><th>#</th><th>Name</th><th>Memory used / total</th><th>CC</th>"
                     "<th>PCIe</th><th>Temp</th><th>Power</th></tr>")
        for g in acc.gpus:
            pcie = (f"Gen{g.pcie_gen_current}/{g.pcie_gen_max} x{g.pcie_width_current}/{g.pcie_width_max}"
                    if g.pcie_width_max else "—")
            parts.append(
                f"<tr><td>{g.index}</td><td>{e(g.name)}</td><td>{_gib(g.memory_used_bytes)} / "
                f"{_gib(g.memory_total_bytes)}</td><td>{e(g.compute_capability or '—')}</td>"
                f"<td>{e(pcie)}</td><td>{'—' if g.temperature_c is None else str(g.temperature_c) + ' °C'}</td>"
                f"<td>{'—' if g.power_w is None else f'{g.power_w:.0f} W'}</td></tr>")
        parts.append("</table>")
        if acc.topology:
            n = len(acc.topology)
            parts.append("<table><tr><th>Topology</th>" + "".join(f"<th>GPU{i}</th>" for i in range(n)) + "</tr>")
            parts += [f"<tr><th>GPU{i}</th>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                      for i, row in enumerate(acc.topology)]
            parts.append("</table>")
    else:
        parts.append("<p>None found.</p>")
    parts.append("<h2>Software</h2><table><tr><th>Package</th><th>Version</th></tr>")
    parts += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in sw.packages.items()]
    parts.append("</table><table>")
    tb, nvcc = sw.torch, sw.cuda_toolkit
    parts.append(rows([
        ("torch build", tb and (f"CUDA {tb.cuda}" if tb.cuda else f"ROCm {tb.hip}" if tb.hip else "CPU only")),
        ("CUDA toolkit (nvcc)", nvcc.cuda_version and f"{nvcc.cuda_version} at {nvcc.nvcc_path}"),
        ("Keras backend", sw.keras_backend),
        *sorted(sw.env.items()),
    ]))
    parts.append("</table>")
    if f.deep is not None:
        parts.append("<h2>Deep checks</h2><table><tr><th>Framework</th><th>Version</th><th>Import</th>"
                     "<th>Devices</th><th>Result</th></tr>")
        for d in f.deep:
            result = d.error or ", ".join(f"{k}: {v}" for k, v in d.op_results.items())
            imp = f"{d.import_seconds:.2f} s" if d.import_seconds is not None else "—"
            parts.append(f"<tr><td>{e(d.framework)}</td><td>{e(d.version or '—')}</td><td>{imp}</td>"
                         f"<td>{e(', '.join(d.devices))}</td><td>{e(result)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _rate(value: float | None, unit: str) -> str:
    if not value:
        return "—"
    for prefix, size in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= size:
            return f"{value / size:.2f} {prefix}{unit}"
    return f"{value:.0f} {unit}"


def bench_cells(row: dict[str, Any]) -> list[str]:
    """A bench row as text: device, dtype (or memory), measured, peak, percent of the peak."""
    if row["dtype"] == "memory":
        measured, peak = _rate(row.get("measured_bytes_s"), "B/s"), "—"
    else:
        measured, peak = _rate(row["measured_flops"], "FLOP/s"), _rate(row["peak_flops"], "FLOP/s")
    return [row["device"], row["dtype"], measured, peak, "—" if row["percent"] is None else f"{row['percent']:g}%"]
