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


__all__ = [
    "DEFAULT_MFU",
    "Compute",
    "compute_dtype",
    "estimate_compute",
    "flops_per_token",
    "forward_flops_per_token",
    "head_params",
    "matmul_params",
    "param_count",
]
