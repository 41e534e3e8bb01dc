"""The advisor: does it fit, what is the largest batch and sequence that fit, what to change when it
does not (ranked, each with its new total), and which hardware to buy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from lmdev.catalog.models import ModelSpec, active_param_count, param_count
from lmdev.errors import LmdevError
from lmdev.plan.compute import (
    DEFAULT_MFU,
    Compute,
    StepTime,
    compute_dtype,
    estimate_compute,
    step_time,
)
from lmdev.plan.hardware import Hardware
from lmdev.plan.memory import (
    Memory,
    Workload,
    estimate_memory,
    human,
    kv_bytes_per_sequence,
    largest,
)

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
    precision: str = ""  # the precision planned on it (a supported one)
    note: str = ""  # why the precision differs from the request, or why it does not fit

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rank_key(self) -> tuple[Any, ...]:
        """The one ranking of hardware options: fitting first, then the cheapest, then the fastest,
        then the fewest devices."""
        return (not self.fits, self.price_usd if self.price_usd is not None else float("inf"),
                self.seconds if self.seconds is not None else float("inf"), self.count, self.hardware)


@dataclass
class Excluded:
    """An option the advisor did not offer, and why."""

    option: str
    reason: str

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
    calibration: dict[str, Any] | None = None  # the stored calibration used, and what it was measured with
    measurement: dict[str, Any] | None = None
    excluded: list[Excluded] = field(default_factory=list)
    recommended_hardware: Option | None = None  # the first of ``comparison``: the same ranking
    serving: dict[str, Any] | None = None
    step_time: dict[str, Any] | None = None

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
            "calibration": self.calibration,
            "measurement": self.measurement,
            "excluded": [e.to_dict() for e in self.excluded],
            "recommended_hardware": self.recommended_hardware.to_dict() if self.recommended_hardware else None,
            "serving": self.serving,
            "step_time": self.step_time,
        }


def _total(spec: ModelSpec, w: Workload, hw: Hardware, overhead: dict[str, float] | None) -> int:
    return estimate_memory(spec, w, device=hw.kind, overhead=overhead).total_bytes


def max_batch(spec: ModelSpec, w: Workload, hw: Hardware, overhead: dict[str, float] | None = None) -> int:
    """The largest batch that fits (serve: the most concurrent sequences)."""
    cap = hw.available_bytes
    key = "concurrency" if w.task == "serve" else "batch"
    return largest(lambda b: _total(spec, dataclasses.replace(w, **{key: b}), hw, overhead) <= cap, 1, MAX_BATCH)


def max_seq(spec: ModelSpec, w: Workload, hw: Hardware, overhead: dict[str, float] | None = None) -> int:
    """The longest sequence that fits (serve: the longest context per sequence)."""
    cap = hw.available_bytes
    top = spec.max_positions or (1 << 20)
    if w.task == "serve":
        return largest(lambda c: _total(spec, dataclasses.replace(w, context=c), hw, overhead) <= cap,
                       w.seq + 1, max(top, w.seq + 1))
    return largest(lambda s: _total(spec, dataclasses.replace(w, seq=s), hw, overhead) <= cap, 1, top)


def default_precision(hw: Hardware) -> str:
    """bf16 where the hardware has it, else fp16 (Turing, Volta); fp32 on a CPU that would
    emulate bf16 (no AVX512-BF16 / AMX)."""
    if hw.kind == "cpu" and "bf16" in hw.slow:
        return "fp32"
    return "bf16" if hw.supports("bf16")[0] else "fp16"


def adapt_precision(w: Workload, hw: Hardware) -> tuple[Workload | None, str]:
    """The workload in a precision ``hw`` supports: itself, or the nearest supported one with the
    reason (bf16 -> fp16 on Turing/Volta; fp8 -> bf16/fp16 before Ada/Hopper), or None and why."""
    ok, why = hw.supports(w.precision)
    if ok:
        return w, ""
    alternatives = {"bf16": ("fp16", "fp32"), "fp8": ("bf16", "fp16"), "fp16": ("bf16", "fp32")}
    for alt in alternatives.get(w.precision, ()):
        if hw.supports(alt)[0]:
            return dataclasses.replace(w, precision=alt), f"{w.precision} not offered: {why}; planned in {alt}"
    return None, f"{w.precision} not offered: {why}"


def fewest_devices(spec: ModelSpec, w: Workload, hw: Hardware,
                   overhead: dict[str, float] | None = None) -> tuple[int, Workload, Memory]:
    """The fewest devices of ``hw`` (1, 2, 4, 8) on which ``w`` fits (sharded with FSDP beyond one
    device when it was plain data parallel), or the largest count tried when none fits. The one
    search behind both the "shard" recommendation and the what-to-buy table."""
    counts = GPU_COUNTS if hw.kind == "gpu" and hw.vendor != "apple" else (1,)
    found: tuple[int, Workload, Memory] | None = None
    for n in counts:
        wn = dataclasses.replace(w, devices=n, strategy=w.strategy if n == 1 or w.strategy != "ddp" else "fsdp")
        mem = estimate_memory(spec, wn, device=hw.kind, overhead=overhead)
        found = (n, wn, mem)
        if mem.total_bytes <= hw.available_bytes:
            break
    assert found is not None
    return found


def _precision_candidates(w: Workload, hw: Hardware, excluded: list[Excluded]) -> list[tuple[Any, ...]]:
    """Lower precisions to offer, only those ``hw`` supports; the others excluded with the reason."""
    out: list[tuple[Any, ...]] = []
    if w.training:
        if w.precision == "fp32":
            for p, tradeoff in (("bf16", "faster on tensor cores"), ("fp16", "needs loss scaling")):
                ok, why = hw.supports(p)
                if ok and p in hw.slow:
                    excluded.append(Excluded(f"{p} mixed precision", hw.slow[p]))
                    continue
                if ok:
                    out.append((1, p, f"{p} mixed precision", {"precision": p}, tradeoff))
                    break
                excluded.append(Excluded(f"{p} mixed precision", why))
        return out
    order = ["fp32", "bf16", "fp16", "fp8", "int8", "int4"]
    for p, penalty in (("bf16", 1), ("fp8", 2), ("int8", 3), ("int4", 4)):
        if order.index(p) <= order.index(w.precision):
            continue
        ok, why = hw.supports(p)
        if not ok:
            excluded.append(Excluded(f"{p} weights", why))
            if p == "bf16" and hw.supports("fp16")[0] and w.precision == "fp32":
                out.append((1, "fp16_weights", "fp16 weights", {"precision": "fp16"}, "none"))
            continue
        out.append((penalty, f"{p}_weights", f"{p} weights", {"precision": p},
                    "none" if p == "bf16" else "small quality loss; needs a quantisation library"))
    return out


def _candidates(spec: ModelSpec, w: Workload, hw: Hardware, overhead: dict[str, float] | None,
                excluded: list[Excluded]) -> list[tuple[int, str, str, dict[str, Any], str]]:
    """Every change the advisor may propose: (penalty, action, text, change, tradeoff)."""
    cands: list[tuple[Any, ...]] = list(_precision_candidates(w, hw, excluded))
    multi = hw.kind == "gpu" and hw.vendor != "apple"
    if not multi:
        excluded.append(Excluded("more devices", f"{hw.label} is one device: no sharding across several"))
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
        if multi and (w.devices == 1 or w.strategy == "ddp"):
            n = max(2, fewest_devices(spec, w, hw, overhead)[0])
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
        return cands
    if w.task == "infer" and w.logits == "all" and not w.generating:
        cands.append((0, "last_logits", "compute only the last position's logits (logits_to_keep=1)",
                      {"logits": "last"}, "none when only the next token is needed"))
    if w.batch > 1:
        b = max(1, w.batch // 2)
        cands.append((2, "smaller_batch", f"batch {b}", {"batch": b}, "lower throughput"))
    if multi:
        n = max(2, fewest_devices(spec, w, hw, overhead)[0])
        cands.append((3, "tensor_parallel", f"split the model across {n} GPUs", {"devices": n, "strategy": "fsdp"},
                      f"needs {n} devices"))
    if w.offload is None and hw.kind == "gpu":
        cands.append((6, "offload_params", "keep weights in host RAM, stream layers", {"offload": "params"},
                      "much slower"))
    return cands


def recommendations(spec: ModelSpec, w: Workload, hw: Hardware, overhead: dict[str, float] | None = None,
                    excluded: list[Excluded] | None = None) -> list[Recommendation]:
    """Changes that lower the per-device memory, ranked: those that fit first, cheapest in speed
    and quality first; each with its new total. Options not offered go to ``excluded`` with why."""
    r = dataclasses.replace
    cands = _candidates(spec, w, hw, overhead, excluded if excluded is not None else [])
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
              {"offload_optimizer", "qlora"}, {"bf16", "qlora"},
              {"fp16", "qlora"}]


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
            token_budget: float | None, excluded: list[Excluded] | None = None,
            overhead_for: Any = None) -> list[Option]:
    """What to buy: for each hardware, the fewest devices that fit (:func:`fewest_devices`, the
    search the "shard" recommendation uses), in a precision it supports; ranked by
    :meth:`Option.rank_key`. Hardware that cannot run the workload at all goes to ``excluded``."""
    out: list[Option] = []
    for hw in hws:
        wp, note = adapt_precision(w, hw)
        if wp is None:
            if excluded is not None:
                excluded.append(Excluded(hw.name, note))
            continue
        overhead = overhead_for(hw) if overhead_for else None
        n, wn, mem = fewest_devices(spec, wp, hw, overhead)
        fits = mem.total_bytes <= hw.available_bytes
        comp = throughput_for(spec, wn, hw, mfu, token_budget, mem)
        if not fits:
            note = "; ".join(x for x in (note, f"does not fit on {n} x {human(hw.memory_bytes)}") if x)
        out.append(Option(hardware=hw.name, label=hw.label, count=n, strategy=wn.strategy if n > 1 else None,
                          total_bytes_per_device=mem.total_bytes, memory_bytes_per_device=hw.memory_bytes,
                          fits=fits, tokens_per_s=comp.tokens_per_s, seconds=comp.seconds,
                          price_usd=hw.price_usd * n if hw.price_usd else None,
                          power_w=hw.power_w * n if hw.power_w else None, precision=wn.precision, note=note))
    return sorted(out, key=Option.rank_key)


def serving_capacity(spec: ModelSpec, w: Workload, hw: Hardware, mem: Memory,
                     decode_seconds: float | None) -> dict[str, Any]:
    """``--task serve``: how many sequences of ``context`` tokens the KV cache can hold next to the
    weights and one prompt's prefill, and the generation speed at the requested concurrency."""
    context = w.cache_tokens
    per_seq = kv_bytes_per_sequence(spec, w, context) // max(1, w.devices)
    rest = mem.total_bytes - mem.kv_cache_bytes
    room = hw.available_bytes - rest
    capacity = max(0, room // per_seq) if per_seq else 0
    return {"context": context, "concurrency": w.concurrency, "kv_bytes_per_sequence": per_seq,
            "bytes_without_cache": rest, "max_sequences": int(capacity), "fits": capacity >= w.concurrency,
            "decode_seconds_per_token": decode_seconds,
            "tokens_per_s": (w.concurrency / decode_seconds) if decode_seconds else None}


def plan_step_time(spec: ModelSpec, w: Workload, hw: Hardware, mfu: float | None,
                   calibration: dict[str, float] | None) -> StepTime:
    """Seconds per step on ``hw`` (its measured or datasheet rate), scaled by this machine's
    measured/predicted ratio when ``--measure`` stored one."""
    peak, source = hw.throughput(compute_dtype(w))
    eff = mfu if mfu is not None else (DEFAULT_MFU if source != "bench" else None)
    t = step_time(spec, w, matmul_flops=peak, bandwidth_bytes_s=hw.bandwidth_bytes_s, device=hw.kind,
                  efficiency=eff)
    factor = float((calibration or {}).get("time_factor", 1.0))
    if factor != 1.0:
        t = StepTime(*(v * factor if v is not None and k.endswith(("seconds", "per_token")) else v
                       for k, v in asdict(t).items()))
    return t


def make_plan(spec: ModelSpec, w: Workload, hws: list[Hardware], *, source: str = "", mfu: float | None = None,
              token_budget: float | None = None, calibration: dict[str, float] | None = None) -> Plan:
    w.validate()
    hw = hws[0]
    ok, why = hw.supports(w.precision)
    if not ok:
        alt, _ = adapt_precision(w, hw)
        raise LmdevError(f"--precision {w.precision} is not supported on {hw.name}: {why}",
                         f"use --precision {alt.precision}" if alt else "choose another precision")
    warnings: list[str] = []
    if spec.max_positions and max(w.seq, w.cache_tokens) > spec.max_positions:
        warnings.append(f"sequence {max(w.seq, w.cache_tokens)} is longer than {spec.name}'s maximum of "
                        f"{spec.max_positions} positions")
    if hw.this_machine and w.devices > hw.count and hw.kind == "gpu":
        warnings.append(f"--devices {w.devices} but this machine has {hw.count} {hw.name} GPU(s)")
    mem = estimate_memory(spec, w, device=hw.kind, overhead=calibration)
    fits = mem.total_bytes <= hw.available_bytes
    if hw.kind == "cpu" and w.precision in ("fp16",) and w.training:
        warnings.append("fp16 training on a CPU is slow and unusual; bf16 or fp32 is the norm")
    if w.precision in hw.slow:
        warnings.append(f"{w.precision} is slow here: {hw.slow[w.precision]}")
    comp = throughput_for(spec, w, hw, mfu, token_budget, mem)
    st = plan_step_time(spec, w, hw, mfu, calibration)
    plan = Plan(model=spec, model_source=source, workload=w, hardware=hw, memory=mem, compute=comp, fits=fits,
                headroom_bytes=hw.available_bytes - mem.total_bytes,
                max_batch=max_batch(spec, w, hw, calibration), max_seq=max_seq(spec, w, hw, calibration),
                warnings=warnings, calibrated=bool(calibration), step_time=st.to_dict())
    if w.task == "serve":
        plan.serving = serving_capacity(spec, w, hw, mem, st.decode_seconds_per_token)
    plan.recommendations = recommendations(spec, w, hw, calibration, plan.excluded)
    if len(hws) > 1:
        plan.comparison = compare(spec, w, hws, mfu, token_budget, plan.excluded,
                                  overhead_for=lambda h: calibration if h is hw else None)
        if plan.comparison and plan.comparison[0].fits:
            plan.recommended_hardware = plan.comparison[0]
    return plan
