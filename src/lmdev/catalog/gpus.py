"""Accelerator specifications (``data/gpus.json``, every entry with its source).

Peaks are dense tensor-core figures; ``memory_bytes`` is decimal GB as vendors state it.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from lmdev.errors import LmdevError

DTYPES = ("bf16", "fp16", "tf32", "fp32", "int8", "fp8")


@dataclass(frozen=True)
class GpuSpec:
    name: str
    label: str
    vendor: str
    memory_bytes: int
    bandwidth_bytes_s: float
    peak_flops: dict[str, float | None]  # dtype -> FLOP/s (OP/s for int8), dense; None = no such path
    interconnect: str
    interconnect_bytes_s: float
    power_w: float
    price_usd: float
    source: str
    aliases: tuple[str, ...] = field(default_factory=tuple)
    arch: str = ""

    def peak(self, dtype: str) -> float | None:
        """Dense peak for a compute dtype; fp32 training uses tf32 tensor cores when present."""
        return self.peak_flops.get(dtype)


    def supports(self, dtype: str) -> tuple[bool, str]:
        """Whether the chip has a matmul path for ``dtype`` (a storage precision or a compute
        dtype), and why not. The rule is the catalog's: a null peak means no such path
        (Turing and Volta: no bf16; fp8 only from Ada Lovelace / Hopper / CDNA 3 on); int8/int4
        weight-only quantisation dequantises to a supported half type, so it runs everywhere."""
        if dtype in ("fp32", "int8", "int4"):
            return True, ""
        key = "fp16" if dtype == "fp16" else dtype
        if self.peak_flops.get(key) is None:
            why = {"bf16": "no bf16 tensor cores", "fp8": "no fp8 tensor cores (Ada Lovelace, Hopper, CDNA 3 "
                   "and later have them)"}.get(dtype, f"no {dtype} path")
            return False, f"{self.name} ({self.arch or self.label}) has {why}; source: {self.source}"
        return True, ""


@lru_cache(maxsize=1)
def gpus() -> dict[str, GpuSpec]:
    raw = json.loads(resources.files("lmdev.catalog").joinpath("data/gpus.json").read_text("utf-8"))
    out = {}
    for g in raw["gpus"]:
        out[g["name"]] = GpuSpec(
            name=g["name"], label=g["label"], vendor=g["vendor"],
            memory_bytes=int(g["memory_gb"] * 1e9), bandwidth_bytes_s=g["bandwidth_gbps"] * 1e9,
            peak_flops={k: (v * 1e12 if v is not None else None) for k, v in g["peak_tflops"].items()},
            interconnect=g["interconnect"], interconnect_bytes_s=g["interconnect_gbps"] * 1e9,
            power_w=g["power_w"], price_usd=g["price_usd"], source=g["source"],
            aliases=tuple(g.get("aliases", [])), arch=g.get("arch", ""))
    return out


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("_", " ").split())


def find_gpu(name: str) -> GpuSpec | None:
    """A catalog entry by its name, an alias, or the name a driver reports (``NVIDIA H100 80GB HBM3``)."""
    want = _norm(name)
    for g in gpus().values():
        if want in (_norm(g.name), _norm(g.label)) or want in (_norm(a) for a in g.aliases):
            return g
    # driver names: "NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 PCIe"
    flat = want.replace("-", " ")
    best: GpuSpec | None = None
    best_len = 0
    for g in gpus().values():
        for key in (g.name, *g.aliases):
            k = _norm(key).replace("-", " ")
            if k and f" {k} " in f" {flat} " and len(k) > best_len:
                best, best_len = g, len(k)
    return best


def get_gpu(name: str) -> GpuSpec:
    gpu = find_gpu(name)
    if gpu is None:
        close = difflib.get_close_matches(name.lower(), list(gpus()), n=3, cutoff=0.4)
        hint = (f"did you mean {', '.join(close)}? " if close else "") + "known: " + ", ".join(gpus()) + \
            ", this, all"
        raise LmdevError(f"unknown hardware {name!r}", hint)
    return gpu
