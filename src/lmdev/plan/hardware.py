"""The hardware a plan is for: catalog GPUs by name, or this machine (its GPUs, else its CPU and RAM)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmdev.catalog.gpus import GpuSpec, find_gpu, get_gpu, gpus
from lmdev.errors import LmdevError


@dataclass
class Hardware:
    name: str  # catalog name, or "cpu"
    label: str
    kind: str  # "gpu" or "cpu"
    memory_bytes: int  # per device
    used_bytes: int = 0  # already in use (this machine only)
    count: int = 1  # devices of this kind available (this machine); catalog entries: 1
    peak_flops: dict[str, float | None] = field(default_factory=dict)
    measured_flops: dict[str, float] = field(default_factory=dict)  # best matmul from `lmdev bench`
    bandwidth_bytes_s: float | None = None
    price_usd: float | None = None
    power_w: float | None = None
    this_machine: bool = False
    catalog: str | None = None  # the catalog entry it matched
    vendor: str | None = None
    unsupported: dict[str, str] = field(default_factory=dict)  # dtype -> why the chip has no path for it
    slow: dict[str, str] = field(default_factory=dict)  # dtype -> why it runs, but emulated (CPU without units)

    def supports(self, dtype: str) -> tuple[bool, str]:
        """Whether a precision can be planned here, and why not (catalog rule, with its source)."""
        if dtype in self.unsupported:
            return False, self.unsupported[dtype]
        return True, ""

    @property
    def available_bytes(self) -> int:
        return max(0, self.memory_bytes - self.used_bytes)

    def throughput(self, dtype: str) -> tuple[float | None, str]:
        """FLOP/s to apply MFU to, and where it comes from."""
        if self.measured_flops.get(dtype):
            return self.measured_flops[dtype], "bench"
        peak = self.peak_flops.get(dtype)
        if dtype == "fp32" and self.kind == "gpu" and self.peak_flops.get("tf32"):
            peak = self.peak_flops["tf32"]  # fp32 matmuls run on tf32 tensor cores when allowed
        if peak is None and dtype in ("bf16", "fp16"):
            peak = self.peak_flops.get("fp16") or self.peak_flops.get("fp32")
        return peak, ("cpu-estimate" if self.kind == "cpu" else "catalog")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["available_bytes"] = self.available_bytes
        return d


PLANNED_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8", "int4")
CPU_UNSUPPORTED = {"fp8": "CPUs have no fp8 arithmetic: PyTorch's CPU fp8 matmul (torch._scaled_mm) runs 3-20x "
                          "slower than fp32 (measured: docs/figures/compress.md); fp8 needs Ada Lovelace, Hopper "
                          "or CDNA 3 tensor cores"}


def cpu_slow_dtypes(features: list[str] | set[str], architecture: str = "x86_64") -> dict[str, str]:
    """Half precisions this CPU runs without matmul units for them: PyTorch converts to fp32 and
    back (oneDNN's reference path), several times slower than fp32. x86: bf16 needs AVX512-BF16
    or AMX-BF16, fp16 AVX512-FP16 or AMX-FP16; Arm: the BF16 / FP16 (fphp, asimdhp) extensions."""
    f = {x.lower() for x in features}
    arm = architecture in ("aarch64", "arm64")
    native = {"bf16": {"bf16", "sve_bf16", "svebf16"} if arm else {"avx512_bf16", "amx_bf16"},
              "fp16": {"fphp", "asimdhp"} if arm else {"avx512_fp16", "amx_fp16"}}
    names = {"bf16": "BF16" if arm else "AVX512-BF16 or AMX-BF16", "fp16": "FP16 (asimdhp)" if arm else
             "AVX512-FP16 or AMX-FP16"}
    return {d: f"this CPU has no {names[d]}: {d} matmuls are emulated, several times slower than fp32 "
               f"(plan fp32, or measure with `lmdev bench`)" for d, units in native.items() if not f & units}


def from_catalog(g: GpuSpec) -> Hardware:
    limits = {d: why for d in PLANNED_DTYPES for ok, why in [g.supports(d)] if not ok}
    return Hardware(name=g.name, label=g.label, kind="gpu", memory_bytes=g.memory_bytes,
                    peak_flops=dict(g.peak_flops), bandwidth_bytes_s=g.bandwidth_bytes_s, price_usd=g.price_usd,
                    power_w=g.power_w, catalog=g.name, vendor=g.vendor, unsupported=limits)


def lmdev_home() -> Path:
    return Path(os.environ.get("LMDEV_HOME") or ".lmdev")


def _best_matmul(device: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for dtype, rows in (device.get("matmul") or {}).items():
        values = [r.get("flops") for r in rows if r.get("flops")]
        if values:
            out[dtype] = float(max(values))
    return out


def this_machine(facts: Any = None, bench: dict[str, Any] | None = None) -> Hardware:
    """This machine's accelerators (the first kind found), or its CPU and RAM when it has none."""
    if facts is None:
        from lmdev.probe.collect import collect

        facts = collect()
    if bench is None:
        from lmdev.bench import load_latest

        bench = load_latest()
    gpus_found = list(facts.accelerators.gpus or [])
    if gpus_found:
        g0 = gpus_found[0]
        spec = find_gpu(g0.name)
        hw = from_catalog(spec) if spec else Hardware(name=g0.name, label=g0.name, kind="gpu",
                                                      memory_bytes=g0.memory_total_bytes or 0)
        same = [g for g in gpus_found if g.name == g0.name]
        hw.label = f"{g0.name} (this machine)"
        hw.memory_bytes = g0.memory_total_bytes or hw.memory_bytes
        hw.used_bytes = max((g.memory_used_bytes or 0) for g in same)
        hw.count = len(same)
        hw.this_machine = True
        if bench:
            devs = bench.get("gpus") or []
            if devs:
                hw.measured_flops = _best_matmul(devs[0])
        return hw
    from lmdev.bench.cpu import cpu_clock_ghz, cpu_peak_flops

    cpu, mem = facts.host.cpu, facts.host.memory
    total = mem.total_bytes or 0
    if mem.cgroup_limit_bytes:
        total = min(total, mem.cgroup_limit_bytes) if total else mem.cgroup_limit_bytes
    used = max(0, total - (mem.available_bytes or total))
    cores = int(cpu.quota_cores) if cpu.quota_cores else cpu.cores
    peak = cpu_peak_flops(cores, cpu_clock_ghz(), cpu.features, cpu.architecture) or {}
    hw = Hardware(name="cpu", label=f"{cpu.model or 'CPU'} ({cores} cores) + {total / 1e9:.0f} GB RAM (this machine)",
                  kind="cpu", memory_bytes=total, used_bytes=used, count=1, peak_flops=dict(peak),
                  this_machine=True, unsupported=dict(CPU_UNSUPPORTED),
                  slow=cpu_slow_dtypes(cpu.features or [], cpu.architecture or "x86_64"))
    if bench and bench.get("cpu"):
        hw.measured_flops = _best_matmul(bench["cpu"])
        bw = bench["cpu"].get("memory_bandwidth_bytes_s")
        hw.bandwidth_bytes_s = float(bw) if bw else None
    return hw


def resolve_hardware(text: str | None, facts: Any = None) -> list[Hardware]:
    """``NAME[,NAME...]``, ``this`` or ``all`` -> the hardware to plan for."""
    if not text or text.strip().lower() == "this":
        return [this_machine(facts)]
    if text.strip().lower() == "all":
        return [from_catalog(g) for g in gpus().values()]
    out: list[Hardware] = []
    for part in text.split(","):
        name = part.strip()
        if not name:
            continue
        if name.lower() == "this":
            out.append(this_machine(facts))
        else:
            out.append(from_catalog(get_gpu(name)))
    if not out:
        raise LmdevError("--hardware is empty", "give a catalog name, a comma-separated list, this or all")
    return out
