"""Compute: FLOPs per token, tokens per second at a stated MFU, time for a token budget.

FLOPs per token follow Kaplan et al. 2020 / Narayanan et al. 2021: a forward pass costs 2 FLOPs per
active matmul parameter (the LM head included, embedding lookups not) plus the attention scores,
2 x 2 x layers x context x query width (halved by causal masking); a training step costs three
forward passes (forward, backward for inputs, backward for weights) and one more forward when
activations are recomputed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from lmdev.catalog.models import (
    ModelSpec,
    active_param_count,
    embedding_params,
    head_params,
    param_count,
)
from lmdev.plan.memory import Workload, lora_params

DEFAULT_MFU = 0.40  # model FLOPs utilisation a well-tuned training run reaches on one node


def matmul_params(spec: ModelSpec) -> int:
    """Active parameters that take part in a matmul per token (embedding tables excluded; a tied
    LM head counted, since the logits are a matmul with it)."""
    n = active_param_count(spec) - embedding_params(spec)
    if not spec.encoder and spec.tied_embeddings:
        n += spec.vocab * spec.hidden
    return n


def forward_flops_per_token(spec: ModelSpec, seq: int) -> float:
    causal = 0.5 if not spec.encoder else 1.0
    attention = 2 * 2 * spec.n_layers * seq * spec.q_dim * causal
    return 2.0 * matmul_params(spec) + attention


def flops_per_token(spec: ModelSpec, w: Workload) -> float:
    fwd = forward_flops_per_token(spec, w.seq)
    if not w.training:
        return fwd
    if w.task in ("lora", "qlora"):
        # frozen weights: no weight gradients, only input gradients (plus the small adapters)
        passes = 2.0 + (1.0 if w.activation_checkpointing else 0.0)
        return passes * fwd + 6.0 * lora_params(spec, w.lora_rank)
    return (3.0 + (1.0 if w.activation_checkpointing else 0.0)) * fwd


def compute_dtype(w: Workload) -> str:
    """The matmul dtype the throughput figure is looked up for."""
    if w.task == "qlora":
        return "bf16"
    if w.precision == "fp32":
        return "fp32"
    if w.precision in ("int8", "int4") and not w.training:
        return "int8" if w.precision == "int8" else "bf16"
    return "bf16" if w.precision in ("bf16", "int8", "int4") else "fp16"


@dataclass
class Compute:
    flops_per_token: float
    dtype: str
    peak_flops_per_device: float | None  # the figure MFU applies to
    throughput_source: str  # "bench" (measured matmul), "catalog" (datasheet peak), "cpu-estimate"
    mfu: float
    devices: int
    tokens_per_s: float | None
    token_budget: float | None
    seconds: float | None
    decode_tokens_per_s: float | None = None  # inference: memory-bandwidth bound generation

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_compute(spec: ModelSpec, w: Workload, *, peak_flops: float | None, source: str,
                     devices: int = 1, mfu: float = DEFAULT_MFU, token_budget: float | None = None,
                     bandwidth_bytes_s: float | None = None, weights_bytes: int | None = None,
                     kv_bytes: int = 0) -> Compute:
    fpt = flops_per_token(spec, w)
    tps = (peak_flops * mfu * devices / fpt) if peak_flops else None
    seconds = (token_budget / tps) if (tps and token_budget) else None
    decode = None
    if not w.training and bandwidth_bytes_s and weights_bytes:
        # each generated token reads every weight and the cache once; the batch shares the weights
        decode = w.batch * bandwidth_bytes_s * devices / (weights_bytes + kv_bytes)
    return Compute(flops_per_token=fpt, dtype=compute_dtype(w), peak_flops_per_device=peak_flops,
                   throughput_source=source, mfu=mfu, devices=devices, tokens_per_s=tps,
                   token_budget=token_budget, seconds=seconds, decode_tokens_per_s=decode)


# --- step time from a matmul rate and a memory bandwidth -------------------------------------

# Fraction of a large-matmul rate that a model's own matmuls reach (smaller, oddly shaped) and the
# per-layer cost of the framework (kernel dispatch, Python) per forward pass; set on generated
# configs of the tuning seeds (benchmarks/plan_accuracy.py), checked on a held-out seed.
MATMUL_EFFICIENCY = {"cpu": 0.5, "gpu": 0.6}  # training steps
FORWARD_EFFICIENCY = {"cpu": 0.9, "gpu": 0.7}  # a prefill: forward matmuls only, no backward kernels
# per layer and pass, in FLOPs of the device's matmul rate (kernel dispatch and Python scale with
# how fast this device is right now, as the matmul does)
LAYER_OVERHEAD_FLOPS = {"cpu": 6e7, "gpu": 4e10}
# generation reads each weight once per token; thin matmuls reach this share of a copy's bandwidth
DECODE_BANDWIDTH_EFFICIENCY = {"cpu": 0.3, "gpu": 0.8}
OPTIMIZER_TRAFFIC = {"adamw": 36.0, "adam": 36.0, "sgd": 20.0, "adamw8bit": 12.0}  # bytes read+written/param


@dataclass
class StepTime:
    """Predicted seconds: a training step (forward, backward, optimizer), or for inference the
    prefill of the prompt and each generated token."""

    step_seconds: float | None
    prefill_seconds: float | None
    decode_seconds_per_token: float | None
    matmul_flops: float | None
    bandwidth_bytes_s: float | None
    efficiency: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _elementwise_bytes(spec: ModelSpec, w: Workload, tokens: int) -> float:
    """Bytes element-wise work moves in one forward pass (norms, activation, residuals, softmax of
    the logits): several reads and writes of each activation."""
    a = 4 if w.precision == "fp32" else 2
    per_token = spec.n_layers * (10 * spec.hidden + 4 * spec.ffn + 4 * (spec.q_dim + 2 * spec.kv_dim)) * a
    return tokens * per_token


def step_time(spec: ModelSpec, w: Workload, *, matmul_flops: float | None, bandwidth_bytes_s: float | None,
              device: str = "cpu", efficiency: float | None = None, layer_overhead_s: float | None = None
              ) -> StepTime:
    """Seconds per step from FLOPs at ``efficiency`` x ``matmul_flops`` plus the bytes moved at
    ``bandwidth_bytes_s`` plus a per-layer framework cost. Unknown rates give None."""
    eff = efficiency if efficiency is not None else MATMUL_EFFICIENCY.get(device, 0.6)
    if not matmul_flops:
        return StepTime(None, None, None, matmul_flops, bandwidth_bytes_s, eff)
    per_layer = layer_overhead_s if layer_overhead_s is not None else \
        LAYER_OVERHEAD_FLOPS.get(device, 4e9) / matmul_flops
    bw = bandwidth_bytes_s or 0.0
    rate = matmul_flops * eff
    P = param_count(spec)
    wbytes = P * (4 if w.precision == "fp32" or w.training else 2)
    move = (lambda n: n / bw) if bw else (lambda n: 0.0)
    tokens = w.tokens
    elementwise = move(_elementwise_bytes(spec, w, tokens) + tokens * spec.vocab * 12)
    fwd = forward_flops_per_token(spec, w.seq) * tokens / rate + elementwise
    if w.training:
        passes = 3.0 + (1.0 if w.activation_checkpointing else 0.0)
        step = passes * fwd + move(P * OPTIMIZER_TRAFFIC.get(w.optimizer, 36.0)) \
            + (passes + 1) * spec.n_layers * per_layer
        return StepTime(step, None, None, matmul_flops, bandwidth_bytes_s, eff)
    fwd_eff = efficiency if efficiency is not None else FORWARD_EFFICIENCY.get(device, 0.7)
    prefill = forward_flops_per_token(spec, w.seq) * tokens / (matmul_flops * fwd_eff) + elementwise \
        + move(wbytes) + spec.n_layers * per_layer
    decode = None
    new = w.new_tokens if w.task == "infer" else max(1, (w.context or w.seq) - w.seq)
    if w.generating:
        ctx = w.seq + new / 2  # the average cache length over the generated tokens
        batch = w.concurrency if w.task == "serve" else w.batch
        flops = forward_flops_per_token(spec, int(ctx) * 2) * batch  # each token attends to the whole cache
        kv = 2 * spec.n_layers * spec.kv_dim * ctx * batch * (4 if w.precision == "fp32" else 2)
        stream = move(wbytes + kv) / DECODE_BANDWIDTH_EFFICIENCY.get(device, 0.8)
        decode = max(flops / rate, stream) + spec.n_layers * per_layer
    total = prefill + (decode or 0.0) * new if w.task == "infer" else prefill
    return StepTime(total, prefill, decode, matmul_flops, bandwidth_bytes_s, eff)


__all__ = [
    "DEFAULT_MFU",
    "StepTime",
    "step_time",
    "Compute",
    "compute_dtype",
    "estimate_compute",
    "flops_per_token",
    "forward_flops_per_token",
    "head_params",
    "matmul_params",
    "param_count",
]
