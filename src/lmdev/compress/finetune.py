"""A short training loop on the source's own config and data: the fine-tune after pruning and the
student training of distillation. Uses the training engine's public pieces (optimizer, loss,
batch order), not its loop, because the model here is not the one the config would build."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmdev.errors import LmdevError

LossHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (out, x, y) -> loss


@dataclass(frozen=True)
class LrPlan:
    """The learning rate over a short training, as multipliers of a base learning rate.

    ``peak=None`` follows the run's own schedule compressed to the steps (its warm-up shortened in
    proportion): a student trained from scratch is trained as the run was. A ``peak`` warms up
    linearly over ``warmup`` of the steps to ``peak`` x the base, then decays to 0 along a cosine:
    the fine-tune of a pruned model, which starts from trained weights."""

    peak: float | None = None
    warmup: float = 0.1

    def factor(self, step: int, steps: int, cfg: Any = None) -> float:
        """The multiplier at ``step`` of ``steps`` (``cfg``: the run's config, for ``peak=None``)."""
        if self.peak is None:
            from lmdev.train.optim import lr_factor

            sched = cfg.schedule
            warm = round(sched.warmup_steps * steps / max(1, cfg.train.max_steps))
            return lr_factor(step, steps, sched.model_copy(update={"warmup_steps": warm}))
        warm = max(1, round(self.warmup * steps))
        if step < warm:
            return self.peak * (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return self.peak * 0.5 * (1.0 + math.cos(math.pi * progress))

    def describe(self) -> str:
        if self.peak is None:
            return "the run's schedule, compressed to the steps"
        return f"{self.warmup:.0%} warm-up to {self.peak:g}x the lr, then cosine to 0"


FROM_SCRATCH = LrPlan()
RECOVERY = LrPlan(peak=0.3)  # the fine-tune after pruning (measured: docs/figures/compress.md)


SMALL_MODEL = 1_000_000  # parameters below which more threads only wait for each other


@contextmanager
def all_cores(model: nn.Module) -> Iterator[None]:
    """Train on every core this process may use, whatever ``--threads`` pins for the timing (a
    model under SMALL_MODEL parameters trains on the pinned threads)."""
    pinned = torch.get_num_threads()
    if sum(p.numel() for p in model.parameters()) >= SMALL_MODEL:
        torch.set_num_threads(max(pinned, len(os.sched_getaffinity(0))))
    try:
        yield
    finally:
        torch.set_num_threads(pinned)


def _set_lr(opt: torch.optim.Optimizer, base: float, factor: float) -> None:
    for group in opt.param_groups:
        group["lr"] = base * factor


def default_steps(source: Any) -> int:
    cfg = source.train_config
    return max(50, min(300, cfg.train.max_steps // 2)) if cfg is not None else 100


def finetune(model: nn.Module, source: Any, steps: int, loss_hook: LossHook | None = None,
             plan: LrPlan = FROM_SCRATCH, train_split: Any = None, seed: int = 0,
             after_step: Callable[[], None] | None = None) -> None:
    """Train ``model`` in place for ``steps`` batches of the source's training split, with the
    run's optimizer and the learning rate of ``plan``; ``after_step`` is called after each
    optimizer step (e.g. to re-apply a sparsity mask)."""
    from lmdev.train.data import Batches
    from lmdev.train.losses import make_loss
    from lmdev.train.optim import make_optimizer

    cfg = source.train_config
    if cfg is None or source.data is None:
        raise LmdevError("training needs the source's training config and data",
                         "give a run or a checkpoint of lmdev train as SOURCE")
    split = train_split if train_split is not None else source.data.train
    batch = min(cfg.data.batch_size, len(split))
    opt = make_optimizer(model, cfg.optimizer, torch.device("cpu"))
    loss_fn = make_loss(cfg.loss, source.data.shape.task)
    order = Batches(len(split), batch, cfg.seed + seed + 1)
    torch.manual_seed(cfg.seed + seed)
    model.train()
    with all_cores(model):
        for step in range(steps):
            _set_lr(opt, cfg.optimizer.lr, plan.factor(step, steps, cfg))
            x, y = split.batch(order.indices(step))
            out = model(x)
            loss = loss_hook(out, x, y) if loss_hook else loss_fn(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            if after_step is not None:
                after_step()
    model.eval()


LM_LR = 3e-4  # AdamW learning rate of the fine-tune of a model without a training config (hf:)
LM_BATCH = 8  # sequences per step
LM_STEPS = 100  # default steps of that fine-tune


def lm_finetune_text(split: Any) -> str:
    """How ``finetune_lm`` trains, for a variant's settings."""
    return (f"causal LM, AdamW lr {LM_LR:g} ({LrPlan(peak=1.0).describe()}), batch {LM_BATCH}, the --data "
            f"training split ({len(split)} sequences)")


def finetune_lm(model: nn.Module, split: Any, steps: int, lr: float = LM_LR, seed: int = 0,
                after_step: Callable[[], None] | None = None) -> None:
    """Train a causal LM (called on token ids, returning logits) in place for ``steps`` batches of
    ``split`` (a token split of lmdev.train.data) with a plain next-token cross-entropy, AdamW
    (``lr``, 10% warm-up, cosine to 0) and gradient clipping at 1: the fine-tune of an hf: source,
    which brings no training config. ``after_step`` is called after each optimizer step."""
    from lmdev.train.data import Batches

    if len(split) == 0:
        raise LmdevError("the fine-tune has no training text", "give a larger --data")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = Batches(len(split), min(LM_BATCH, len(split)), seed + 1)
    torch.manual_seed(seed)
    model.train()
    plan = LrPlan(peak=1.0)  # the lr itself is the peak
    with all_cores(model):
        for step in range(steps):
            _set_lr(opt, lr, plan.factor(step, steps))
            x, y = split.batch(order.indices(step))
            logits = model(x)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if after_step is not None:
                after_step()
    model.eval()
