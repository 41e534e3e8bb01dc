"""The CPU's theoretical peak, from its cores, clock and instruction set (no framework needed).

Per core and cycle: two FMA units of the widest vector ISA (an FMA is two FLOPs): AVX-512 16 fp32
lanes, AVX2 8, NEON 4 (x4 units on recent Arm cores is not assumed); bf16 doubles the lanes with
AVX512_BF16; Intel AMX tiles do 1024 bf16 FLOPs and 2048 int8 ops per cycle per core.
"""

from __future__ import annotations

from pathlib import Path


def cpu_clock_ghz(cpuinfo: str | None = None) -> float | None:
    """Base/maximum clock in GHz: psutil's maximum, else /proc/cpuinfo's current MHz."""
    try:
        import psutil

        freq = psutil.cpu_freq()
        if freq and (freq.max or freq.current):
            return float(freq.max or freq.current) / 1000.0
    except Exception:  # noqa: BLE001, S110 - some VMs expose no frequency at all
        pass
    text = cpuinfo
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    for line in text.splitlines():
        if line.lower().startswith("cpu mhz"):
            try:
                return float(line.split(":")[1]) / 1000.0
            except (IndexError, ValueError):
                return None
    return None


def flops_per_cycle(features: list[str] | set[str], architecture: str = "x86_64") -> dict[str, float]:
    f = {x.lower() for x in features}
    if "avx512f" in f:
        fp32 = 2 * 16 * 2
    elif "avx2" in f and "fma" in f:
        fp32 = 2 * 8 * 2
    elif architecture in ("aarch64", "arm64"):
        fp32 = 2 * 4 * 2
    else:
        fp32 = 4 * 2
    bf16 = fp32 * 2 if ("avx512_bf16" in f or "bf16" in f) else fp32
    int8 = fp32 * 4 if ("avx512_vnni" in f or "avx_vnni" in f or "asimddp" in f) else fp32
    if "amx_bf16" in f:
        bf16 = 1024
    if "amx_int8" in f:
        int8 = 2048
    return {"fp32": float(fp32), "bf16": float(bf16), "fp16": float(fp32 * 2 if "avx512_fp16" in f else fp32),
            "int8": float(int8)}


def cpu_peak_flops(cores: int | None, ghz: float | None, features: list[str] | set[str],
                   architecture: str = "x86_64") -> dict[str, float] | None:
    """Peak FLOP/s of the whole CPU per dtype, or None when cores or clock are unknown."""
    if not cores or not ghz:
        return None
    return {k: v * cores * ghz * 1e9 for k, v in flops_per_cycle(features, architecture).items()}
