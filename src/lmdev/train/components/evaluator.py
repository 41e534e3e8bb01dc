"""Validation: loss (and accuracy or perplexity) over the validation split every
``train.eval_every`` steps, and the best evaluation so far (by ``val/loss``; which way is better
is :func:`lmdev.track.metric_names.improves`'s rule)."""

from __future__ import annotations

import math
from typing import Any

import torch

from lmdev.track.metric_names import improves
from lmdev.train.data import Data
from lmdev.train.distributed import Dist
from lmdev.train.losses import LossFn, correct
from lmdev.train.runtime import Runtime

KEY_METRIC = "val/loss"


class Evaluator:
    def __init__(self, data: Data, runtime: Runtime, loss_fn: LossFn, batch_size: int, every: int) -> None:
        self.data, self.runtime, self.loss_fn = data, runtime, loss_fn
        self.batch_size, self.every = batch_size, every
        self.best: float | None = None
        self.best_step: int | None = None

    def due(self, step: int, last_step: int) -> bool:
        return step % self.every == 0 or step == last_step

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """FSDP ranks must run the same forwards (they gather parameters together), so each
        evaluates everything; DDP ranks share the batches out."""
        rt = self.runtime
        metrics = evaluate(model, self.data, rt.device, rt.precision, self.loss_fn, self.batch_size,
                           d=rt.dist if rt.strategy == "ddp" else None)
        model.train()
        return metrics

    def record(self, metrics: dict[str, float], step: int) -> bool:
        """Remember ``metrics`` if they are the best so far; True when they are."""
        value = metrics.get(KEY_METRIC)
        if value is None or not improves(KEY_METRIC, value, self.best):
            return False
        self.best, self.best_step = value, step
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step = state.get("best"), state.get("best_step")


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Data, device: torch.device, precision: str, loss_fn: LossFn,
             batch_size: int, max_batches: int = 200, d: Dist | None = None) -> dict[str, float]:
    """Loss (and accuracy / perplexity) over the validation split; with several workers each
    evaluates every world-th batch and the sums are combined."""
    from lmdev.train.runtime import autocast

    if len(data.val) == 0:
        return {}
    d = d or Dist()
    model.eval()
    total, right = torch.zeros((), device=device), torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    order = torch.arange(len(data.val), device=data.val.x.device if data.val.x is not None else "cpu")
    for b, part in enumerate(torch.split(order, batch_size)):
        if b >= max_batches:
            break
        if b % d.world != d.rank:
            continue
        x, y = data.val.batch(part)
        x, y = x.to(device), y.to(device)
        with autocast(device, precision):
            out = model(x)
            loss = loss_fn(out, y)
        total += loss.float() * len(part)
        count += len(part)
        if data.shape.task == "classification":
            right += correct(out, y)
    loss_total, n_right, n = d.sum_list([total.item(), right.item(), count.item()])
    metrics = {"val/loss": loss_total / n}
    if data.shape.task == "classification":
        metrics["val/accuracy"] = n_right / n
    if data.shape.task == "language_modeling":
        metrics["val/perplexity"] = math.exp(min(metrics["val/loss"], 50.0))
    return metrics
