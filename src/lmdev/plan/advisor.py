"""The advisor: does it fit, what is the largest batch and sequence that fit, what to change when it
does not (ranked, each with its new total), and which hardware to buy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from lmdev.catalog.models import ModelSpec, active_param_count, param_count
from lmdev.plan.compute import DEFAULT_MFU, Compute, compute_dtype, estimate_compute
from lmdev.plan.hardware import Hardware
from lmdev.plan.memory import Memory, Workload, estimate_memory, largest

GPU_COUNTS = (1, 2, 4, 8)
MAX_BATCH = 1 << 16


@dataclass
class Recommendation:
    action: str  # short id: activation_checkpointing, shard, offload_optimizer, ...
    description: str
    change: dict[str, Any]  # the workload fields it changes
    total_bytes: int  # the new per-device total
    fits: bool | None
    tradeoff: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Option:
    """One hardware configuration in a comparison ("what should I buy")."""

    hardware: str
    label: str
    count: int
    strategy: str | None
    total_bytes_per_device: int
    memory_bytes_per_device: int
    fits: bool
    tokens_per_s: float | None
    seconds: float | None
    price_usd: float | None
    power_w: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    model: ModelSpec
    model_source: str
    workload: Workload
    hardware: Hardware
    memory: Memory
    compute: Compute
    fits: bool
    headroom_bytes: int
    max_batch: int
    max_seq: int
    recommendations: list[Recommendation] = field(default_factory=list)
    comparison: list[Option] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    calibrated: bool = False
    measurement: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        mem = self.memory.to_dict()
        return {
            "schema": "lmdev.plan/1",
            "model": {"name": self.model.name, "source": self.model_source, "params": param_count(self.model),
                      "active_params": active_param_count(self.model), "spec": self.model.to_dict()},
            "workload": asdict(self.workload),
            "hardware": self.hardware.to_dict(),
            "memory": mem,
            "fits": self.fits,
            "headroom_bytes": self.headroom_bytes,
            "max_batch": self.max_batch,
            "max_seq": self.max_seq,
            "compute": self.compute.to_dict(),
            "recommendations": [r.to_dict() for r in self.recommendations],
            "comparison": [o.to_dict() for o in self.comparison],
            "warnings": list(self.warnings),
            "calibrated": self.calibrated,
            "measurement": self.measurement,
        }


def _total(spec: ModelSpec, w: Workload, hw: Hardware, overhead: dict[str, float] | None) -> int:
    return estimate_memory(spec, w, device=hw.kind, overhead=overhead).total_bytes


def max_batch(spec: ModelSpec, w: Workload, hw: Hardware, overhead: dict[str, float] | None = None) -> int:
    cap = hw.available_bytes
    return largest(lambda b: _total(spec, dataclasses.replace(w, batch=b), hw, overhead) <= cap, 1, MAX_BATCH)


def max_seq(spec: ModelSpec, w: Workload, hw: Hardware, overhead: dict[str, float] | None = None) -> int:
    cap = hw.available_bytes
    top = spec.max_positions or (1 << 20)
    return largest(lambda s: _total(spec, dataclasses.replace(w, seq=s), hw, overhead) <= cap, 1, top)


def recommendations(spec: ModelSpec, w: Workload, hw: Hardware,
                    overhead: dict[str, float] | None = None) -> list[Recommendation]:
    """Changes that lower the per-device memory, ranked: those that fit first, cheapest in speed
    and quality first; each with its new total."""
    cands: list[tuple[int, str, str, dict[str, Any], str]] = []  # (penalty, action, text, change, tradeoff)
    r = dataclasses.replace
    if w.training:
        if not w.activation_checkpointing:
            cands.append((2, "activation_checkpointing", "recompute activations in the backward pass",
                          {"activation_checkpointing": True}, "~33% more compute per step"))
        if w.batch > 1:
            b = max(1, w.batch // 2)
            cands.append((1, "smaller_micro_batch", f"micro-batch {b} with {w.grad_accum * 2}x gradient accumulation",
                          {"batch": b, "grad_accum": w.grad_accum * (w.batch // b)},
                          "same effective batch, lower per-step efficiency"))
        if w.attention == "eager":
            cands.append((0, "sdpa_attention", "use a fused attention kernel (sdpa / flash)",
                          {"attention": "sdpa"}, "none: same result, faster"))
        n = max(2, hw.count if hw.this_machine and hw.count > 1 else 8)
        if hw.kind == "gpu" and (w.devices == 1 or w.strategy == "ddp"):
            cands.append((3, "shard", f"shard weights, gradients and optimizer states across {n} GPUs (FSDP/ZeRO-3)",
                          {"devices": n, "strategy": "fsdp"}, f"needs {n} devices and a fast interconnect"))
        if w.task == "train" and w.optimizer in ("adamw", "adam"):
            cands.append((4, "adamw8bit", "8-bit AdamW states (bitsandbytes)", {"optimizer": "adamw8bit"},
                          "usually no quality loss; needs bitsandbytes"))
        if w.offload is None and hw.kind == "gpu":
            cands.append((5, "offload_optimizer", "keep optimizer states in host RAM (ZeRO-Offload)",
                          {"offload": "optimizer"}, "slower steps: states cross PCIe each step"))
        if w.task == "train":
            cands.append((6, "lora", f"train LoRA adapters (rank {w.lora_rank}) instead of all weights",
                          {"task": "lora", "optimizer": "adamw"}, "adapters only: lower quality ceiling"))
            cands.append((7, "qlora", "QLoRA: 4-bit frozen base + LoRA adapters", {"task": "qlora"},
                          "adapters only, 4-bit base; slower matmuls"))
        if w.precision == "fp32":
            cands.append((1, "bf16", "bf16 mixed precision", {"precision": "bf16"},
                          "faster on tensor cores; needs bf16 hardware"))
    else:
        for p, penalty in (("bf16", 1), ("int8", 3), ("int4", 4)):
            order = ["fp32", "bf16", "fp16", "int8", "int4"]
            if order.index(p) > order.index(w.precision):
                cands.append((penalty, f"{p}_weights", f"{p} weights", {"precision": p},
                              "none" if p == "bf16" else "small quality loss; needs a quantisation library"))
        if w.batch > 1:
            b = max(1, w.batch // 2)
            cands.append((2, "smaller_batch", f"batch {b}", {"batch": b}, "lower throughput"))
        n = max(2, hw.count if hw.this_machine and hw.count > 1 else 2)
        if hw.kind == "gpu":
            cands.append((3, "tensor_parallel", f"split the model across {n} GPUs", {"devices": n, "strategy": "fsdp"},
                          f"needs {n} devices"))
        if w.offload is None and hw.kind == "gpu":
            cands.append((6, "offload_params", "keep weights in host RAM, stream layers", {"offload": "params"},
                          "much slower"))
    current = _total(spec, w, hw, overhead)
    out: list[tuple[tuple[Any, ...], Recommendation]] = []
    for penalty, action, text, change, tradeoff in cands:
        new_w = r(w, **change)
        try:
            total = _total(spec, new_w, hw, overhead)
        except Exception:  # noqa: BLE001, S112 - a combination the planner rejects is no recommendation
            continue
        if total >= current:
            continue
        fits = total <= hw.available_bytes if hw.memory_bytes else None
        rec = Recommendation(action=action, description=text, change=change, total_bytes=total, fits=fits,
                             tradeoff=tradeoff)
        out.append(((0 if fits else 1, penalty, total), rec))
    ranked = [rec for _key, rec in sorted(out, key=lambda x: x[0])]
    if ranked and not any(rec.fits for rec in ranked) and hw.memory_bytes:
        ordered = sorted(cands, key=lambda c: c[0])
        combos = [_combine(spec, w, hw, overhead, [c for c in ordered if c[1] not in ("shard", "tensor_parallel")]),
                  _combine(spec, w, hw, overhead, ordered)]  # on one device first, then with more devices
        seen = set()
        for combo in reversed([c for c in combos if c]):
            if combo.action not in seen:
                seen.add(combo.action)
                ranked.insert(0, combo)
    return ranked


_CONFLICTS = [{"lora", "qlora"}, {"adamw8bit", "lora"}, {"adamw8bit", "qlora"}, {"offload_optimizer", "lora"},
              {"offload_optimizer", "qlora"}, {"bf16", "qlora"}]


def _combine(spec: ModelSpec, w: Workload, hw: Hardware, overhead: dict[str, float] | None,
             cands: list[tuple[int, str, str, dict[str, Any], str]]) -> Recommendation | None:
    """When no single change fits: the set of changes that fits at the lowest cost (sum of the
    changes' penalties; then fewer changes; then the lower total)."""
    cands = cands[:10]
    best: tuple[tuple[int, int, int], list[int], int] | None = None
    for mask in range(1, 1 << len(cands)):
        idx = [i for i in range(len(cands)) if mask >> i & 1]
        actions = {cands[i][1] for i in idx}
        if any(pair <= actions for pair in _CONFLICTS):
            continue
        key_cost = sum(cands[i][0] for i in idx)
        if best is not None and key_cost > best[0][0]:
            continue
        change: dict[str, Any] = {}
        for i in idx:
            change.update(cands[i][3])
        try:
            total = _total(spec, dataclasses.replace(w, **change), hw, overhead)
        except Exception:  # noqa: BLE001, S112 - not a valid combination
            continue
        if total > hw.available_bytes:
            continue
        key = (key_cost, len(idx), total)
        if best is None or key < best[0]:
            best = (key, idx, total)
    if best is None:
        return None
    _key, idx, total = best
    change = {}
    for i in idx:
        change.update(cands[i][3])
    return Recommendation(action="+".join(cands[i][1] for i in idx),
                          description=" + ".join(cands[i][2] for i in idx), change=change, total_bytes=total,
                          fits=True, tradeoff="; ".join(cands[i][4] for i in idx))


def throughput_for(spec: ModelSpec, w: Workload, hw: Hardware, mfu: float | None,
                   token_budget: float | None, mem: Memory | None = None) -> Compute:
    peak, source = hw.throughput(compute_dtype(w))
    if mfu is None:
        mfu = DEFAULT_MFU if source != "bench" else 0.6  # measured matmul is already what the chip achieves
    return estimate_compute(spec, w, peak_flops=peak, source=source, devices=w.devices, mfu=mfu,
                            token_budget=token_budget, bandwidth_bytes_s=hw.bandwidth_bytes_s,
                            weights_bytes=mem.weights_bytes if mem else None,
                            kv_bytes=mem.kv_cache_bytes if mem else 0)


def compare(spec: ModelSpec, w: Workload, hws: list[Hardware], mfu: float | None,
            token_budget: float | None) -> list[Option]:
    """For each GPU: the fewest devices (1, 2, 4, 8) on which the workload fits, its time and price."""
    out: list[Option] = []
    for hw in hws:
        chosen: Option | None = None
        for n in GPU_COUNTS:
            if n > 1 and (hw.kind == "cpu" or hw.vendor == "apple"):
                break  # one CPU, one Apple SoC: no multi-device sharding
            wn = dataclasses.replace(w, devices=n, strategy=w.strategy if n == 1 or w.strategy != "ddp" else "fsdp")
            mem = estimate_memory(spec, wn, device=hw.kind)
            fits = mem.total_bytes <= hw.available_bytes
            comp = throughput_for(spec, wn, hw, mfu, token_budget, mem)
            opt = Option(hardware=hw.name, label=hw.label, count=n, strategy=wn.strategy if n > 1 else None,
                         total_bytes_per_device=mem.total_bytes, memory_bytes_per_device=hw.memory_bytes,
                         fits=fits, tokens_per_s=comp.tokens_per_s, seconds=comp.seconds,
                         price_usd=hw.price_usd * n if hw.price_usd else None,
                         power_w=hw.power_w * n if hw.power_w else None)
            chosen = opt
            if fits:
                break
        if chosen:
            out.append(chosen)
    return sorted(out, key=lambda o: (not o.fits, o.price_usd if o.price_usd is not None else float("inf"),
                                      o.seconds or 0))


def make_plan(spec: ModelSpec, w: Workload, hws: list[Hardware], *, source: str = "", mfu: float | None = None,
              token_budget: float | None = None, calibration: dict[str, float] | None = None) -> Plan:
    w.validate()
    hw = hws[0]
    warnings: list[str] = []
    if spec.max_positions and w.seq > spec.max_positions:
        warnings.append(f"sequence {w.seq} is longer than {spec.name}'s maximum of {spec.max_positions} positions")
    if hw.this_machine and w.devices > hw.count and hw.kind == "gpu":
        warnings.append(f"--devices {w.devices} but this machine has {hw.count} {hw.name} GPU(s)")
    mem = estimate_memory(spec, w, device=hw.kind, overhead=calibration)
    fits = mem.total_bytes <= hw.available_bytes
    if hw.kind == "cpu" and w.precision in ("fp16",) and w.training:
        warnings.append("fp16 training on a CPU is slow and unusual; bf16 or fp32 is the norm")
    comp = throughput_for(spec, w, hw, mfu, token_budget, mem)
    plan = Plan(model=spec, model_source=source, workload=w, hardware=hw, memory=mem, compute=comp, fits=fits,
                headroom_bytes=hw.available_bytes - mem.total_bytes,
                max_batch=max_batch(spec, w, hw, calibration), max_seq=max_seq(spec, w, hw, calibration),
                warnings=warnings, calibrated=bool(calibration))
    plan.recommendations = recommendations(spec, w, hw, calibration)
    if len(hws) > 1:
        plan.comparison = compare(spec, w, hws, mfu, token_budget)
    return plan
