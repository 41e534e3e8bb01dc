"""The honest part: what a variant costs and how good it is, measured on this machine.

Latency is the wall time of one call at batch 1 and at a larger batch, p50 and p95 over warm
repeats with the thread count fixed; throughput is examples per second at the p50 of the larger
batch. Quality is the task metric on the evaluation data, and how closely the variant's outputs
follow the baseline's (top-1 agreement, relative logit error ||y - y0|| / ||y0||)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmdev.compress.variant import Runner

FASTER = 0.9  # a variant is "faster" when its p50 is below 0.9x the baseline's (beyond timing noise)
MAX_LOGITS = 16_000_000  # eval outputs kept for the agreement check (floats; at least one batch)
MAX_EVAL_TOKENS = 4096  # positions a token task's metric is taken over (64 sequences of 64)
MAX_EVAL_EXAMPLES = 10_000  # examples any other task's metric is taken over


@dataclass
class Latency:
    batch: int
    p50_ms: float
    p95_ms: float
    repeats: int
    throughput: float  # examples per second at the p50


@dataclass
class Quality:
    metric: str  # the task metric's name: accuracy | perplexity | loss
    value: float | None
    loss: float | None = None
    accuracy: float | None = None
    perplexity: float | None = None
    top1_agreement: float | None = None
    rel_logit_error: float | None = None
    examples: int = 0


@dataclass
class Measurement:
    file_bytes: int
    memory_bytes: int
    latency: list[Latency] = field(default_factory=list)
    quality: Quality | None = None
    # the baseline timed in alternation with this variant (same moments, same load): the ratios use it
    paired_baseline: list[Latency] = field(default_factory=list)
    # measured in a fresh process (lmdev.compress.memprobe): bytes above the process after its imports
    peak_memory_bytes: int | None = None  # the larger of the two below
    load_peak_bytes: int | None = None  # while loading the written variant
    run_peak_bytes: int | None = None  # while running the large batch


@dataclass
class EvalSet:
    """The inputs the variants are measured on: evaluation batches with their targets, and the
    latency inputs (batch 1 and batch N)."""

    batches: list[tuple[torch.Tensor, torch.Tensor | None]]
    task: str  # classification | regression | language_modeling
    latency_inputs: list[torch.Tensor]
    kept: int = 0  # the first batches whose outputs are kept to compare variants with (0: all)


def make_eval_set(source: Any, batch: int | None = None, max_examples: int | None = None) -> EvalSet:
    """Evaluation batches from the source's validation split (or generated tokens when the source
    has no data: then there is no task metric, only agreement with the baseline)."""
    data = source.data
    big = batch or (8 if source.is_tokens else 256)
    if data is None:
        vocab, seq = _hf_vocab_and_len(source)
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, vocab, (big, seq), generator=g)
        return EvalSet([(x, None)], "language_modeling", [x[:1], x])
    split = data.val if len(data.val) else data.train
    n = len(split)
    width = max(data.shape.n_outputs, int(source.spec.config.get("vocab_size") or 0) if source.spec.kind == "hf" else 0)
    positions = data.shape.input_shape[0] if source.is_tokens else 1
    limit = MAX_EVAL_TOKENS // positions if source.is_tokens else MAX_EVAL_EXAMPLES
    cap = max(1, min(max_examples or n, n, limit))
    batches = [split.batch(part) for part in torch.arange(cap).split(big)]
    kept = max(1, MAX_LOGITS // max(1, width * positions * big))  # batches of outputs that fit MAX_LOGITS
    first_x = batches[0][0]
    if len(first_x) < big:  # a small split: repeat it to the latency batch
        reps = math.ceil(big / len(first_x))
        first_x = first_x.repeat(reps, *([1] * (first_x.dim() - 1)))[:big]
    return EvalSet([(x, y) for x, y in batches], data.shape.task, [first_x[:1], first_x[:big]],
                   kept if kept < len(batches) else 0)


def _hf_vocab_and_len(source: Any) -> tuple[int, int]:
    cfg = source.spec.config
    vocab = int(cfg.get("vocab_size") or 256)
    seq = int(cfg.get("n_positions") or cfg.get("max_position_embeddings") or 64)
    return vocab, min(seq, 64)


def time_calls(fn: Runner, x: torch.Tensor, budget_s: float = 1.0, min_repeats: int = 5,
               max_repeats: int = 200) -> list[float]:
    """Seconds per call over warm repeats: two warm-up calls, then calls until ``budget_s`` has
    passed (at least ``min_repeats``, at most ``max_repeats``)."""
    fn(x)
    fn(x)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
        if len(times) >= min_repeats and time.perf_counter() - start >= budget_s:
            break
    return times


def latency(fn: Runner, x: torch.Tensor, budget_s: float = 1.0) -> Latency:
    return _summary(time_calls(fn, x, budget_s), len(x))


def _summary(seconds: list[float], batch: int) -> Latency:
    times = np.asarray(seconds)
    p50 = float(np.percentile(times, 50))
    return Latency(batch, p50 * 1e3, float(np.percentile(times, 95)) * 1e3, len(times),
                   batch / p50 if p50 > 0 else 0.0)


def paired_latency(base: Runner, fn: Runner, x: torch.Tensor, budget_s: float = 1.0,
                   min_repeats: int = 5, max_repeats: int = 200) -> tuple[Latency, Latency]:
    """The baseline and the variant timed call by call in alternation, so that a change in the
    machine's load hits both alike: (baseline, variant)."""
    for f in (base, fn, base):
        f(x)
    t0 = time.perf_counter()
    fn(x)
    slow = time.perf_counter() - t0
    if slow > budget_s:  # a very slow variant: a few calls tell the story
        min_repeats = 1 if slow > 5 * budget_s else 3
    tb: list[float] = []
    tv: list[float] = []
    start = time.perf_counter()
    while len(tv) < max_repeats:
        for f, acc in ((base, tb), (fn, tv)):
            t0 = time.perf_counter()
            f(x)
            acc.append(time.perf_counter() - t0)
        if len(tv) >= min_repeats and time.perf_counter() - start >= 2 * budget_s:
            break
    return _summary(tb, len(x)), _summary(tv, len(x))


def evaluate(fn: Runner, ev: EvalSet, baseline: list[torch.Tensor] | None = None
             ) -> tuple[Quality, list[torch.Tensor]]:
    """The task metric over every evaluation batch, and the agreement with the baseline's kept
    outputs; returns the quality and this runner's kept outputs (``ev.kept`` first batches)."""
    total = _MetricSum(ev.task)
    outs = []
    for i, (x, y) in enumerate(ev.batches):
        out = fn(x)
        total.add(out, y)
        if not ev.kept or i < ev.kept:
            outs.append(out)
    q = total.result()
    if baseline is not None:
        agreement(q, outs, baseline, ev.task)
    return q, outs


def agreement(q: Quality, outs: list[torch.Tensor], baseline: list[torch.Tensor], task: str) -> None:
    """Fill ``q``'s relative logit error and top-1 agreement with ``baseline``'s outputs."""
    diff = sum(float((o - b).float().pow(2).sum()) for o, b in zip(outs, baseline))
    norm = sum(float(b.float().pow(2).sum()) for b in baseline)
    q.rel_logit_error = _finite(math.sqrt(diff / norm) if norm > 0 else None)
    if task != "regression":
        same = sum(int((o.argmax(-1) == b.argmax(-1)).sum()) for o, b in zip(outs, baseline))
        total = sum(b.argmax(-1).numel() for b in baseline)
        q.top1_agreement = same / total if total else None


class _MetricSum:
    """The task metric summed batch by batch (no outputs kept): mean squared error for
    regression, cross-entropy (and perplexity or accuracy) otherwise."""

    def __init__(self, task: str) -> None:
        self.task, self.loss, self.right, self.n, self.examples, self.targets = task, 0.0, 0, 0, 0, True

    def add(self, out: torch.Tensor, y: torch.Tensor | None) -> None:
        self.examples += len(out)
        if y is None:
            self.targets = False
            return
        if self.task == "regression":
            self.loss += float(F.mse_loss(out, y.float().view_as(out), reduction="sum"))
            self.n += out.numel()
            return
        o, t = out.reshape(-1, out.shape[-1]), y.reshape(-1)
        self.loss += float(F.cross_entropy(o, t, reduction="sum"))
        self.right += int((o.argmax(-1) == t).sum())
        self.n += len(t)

    def result(self) -> Quality:
        if not self.targets or not self.n:
            return Quality("loss", None, examples=self.examples)
        mean = _finite(self.loss / self.n)
        if self.task == "regression":
            return Quality("loss", mean, loss=mean, examples=self.examples)
        if self.task == "language_modeling":
            ppl = _finite(math.exp(min(mean, 50.0))) if mean is not None else None
            return Quality("perplexity", ppl, loss=mean, perplexity=ppl, examples=self.examples)
        acc = self.right / self.n
        return Quality("accuracy", acc, loss=mean, accuracy=acc, examples=self.examples)


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def measure(fn: Runner, ev: EvalSet, file_bytes: int, memory_bytes: int,
            baseline: list[torch.Tensor] | None, budget_s: float = 1.0,
            base_fn: Runner | None = None) -> tuple[Measurement, list[torch.Tensor]]:
    """Measure one variant (timed in alternation with ``base_fn`` when given); returns the
    measurement and its outputs (the baseline's are kept to compare the others with)."""
    q, outs = evaluate(fn, ev, baseline)
    m = Measurement(file_bytes, memory_bytes, quality=q)
    for x in ev.latency_inputs:
        if base_fn is None:
            m.latency.append(latency(fn, x, budget_s))
        else:
            b, v = paired_latency(base_fn, fn, x, budget_s)
            m.latency.append(v)
            m.paired_baseline.append(b)
    return m, outs


def speedup(m: Measurement, base: Measurement) -> list[float]:
    """The baseline's p50 over this variant's, per latency batch (>1 is faster); against the
    baseline timed in alternation with the variant when there is one."""
    ref = m.paired_baseline or base.latency
    return [b.p50_ms / v.p50_ms if v.p50_ms > 0 else 0.0 for v, b in zip(m.latency, ref)]


def is_faster(m: Measurement, base: Measurement) -> bool:
    return any(s >= 1 / FASTER for s in speedup(m, base))


def quality_drop(m: Measurement, base: Measurement) -> float | None:
    """How much worse the task metric is, in percent of the baseline (accuracy: points)."""
    if m.quality is None or base.quality is None or m.quality.value is None or base.quality.value is None:
        return None
    if m.quality.metric == "accuracy":
        return (base.quality.value - m.quality.value) * 100.0
    if base.quality.value == 0:
        return 0.0
    return (m.quality.value - base.quality.value) / abs(base.quality.value) * 100.0
