"""A short training loop on the source's own config and data: the fine-tune after pruning and the
student training of distillation. Uses the training engine's public pieces (optimizer, loss,
batch order), not its loop, because the model here is not the one the config would build."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lmdev.errors import LmdevError

LossHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (out, x, y) -> loss


def default_steps(source: Any) -> int:
    cfg = source.train_config
    return max(50, min(300, cfg.train.max_steps // 2)) if cfg is not None else 100


def finetune(model: nn.Module, source: Any, steps: int, loss_hook: LossHook | None = None,
             lr_scale: float = 1.0, train_split: Any = None, seed: int = 0,
             after_step: Callable[[], None] | None = None) -> None:
    """Train ``model`` in place for ``steps`` batches of the source's training split; ``after_step``
    is called after each optimizer step (e.g. to re-apply a sparsity mask)."""
    from lmdev.train.data import Batches
    from lmdev.train.losses import make_loss
    from lmdev.train.optim import make_optimizer

    cfg = source.train_config
    if cfg is None or source.data is None:
        raise LmdevError("training needs the source's training config and data",
                         "give a run or a checkpoint of lmdev train as SOURCE")
    split = train_split if train_split is not None else source.data.train
    batch = min(cfg.data.batch_size, len(split))
    opt_cfg = cfg.optimizer.model_copy(update={"lr": cfg.optimizer.lr * lr_scale})
    opt = make_optimizer(model, opt_cfg, torch.device("cpu"))
    loss_fn = make_loss(cfg.loss, source.data.shape.task)
    order = Batches(len(split), batch, cfg.seed + seed + 1)
    torch.manual_seed(cfg.seed + seed)
    model.train()
    for step in range(steps):
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


def finetune_lm(model: nn.Module, split: Any, steps: int, lr: float = LM_LR, seed: int = 0,
                after_step: Callable[[], None] | None = None) -> None:
    """Train a causal LM (called on token ids, returning logits) in place for ``steps`` batches of
    ``split`` (a token split of lmdev.train.data) with a plain next-token cross-entropy, AdamW and
    gradient clipping at 1: the fine-tune of an hf: source, which brings no training config.
    ``after_step`` is called after each optimizer step."""
    from lmdev.train.data import Batches

    if len(split) == 0:
        raise LmdevError("the fine-tune has no training text", "give a larger --data")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = Batches(len(split), min(LM_BATCH, len(split)), seed + 1)
    torch.manual_seed(seed)
    model.train()
    for step in range(steps):
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
