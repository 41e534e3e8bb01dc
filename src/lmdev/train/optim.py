"""Optimizers and learning-rate schedules.

``sgd`` is plain gradient descent, θ ← θ − α·∇J; ``momentum`` adds a velocity
(v ← μ·v + ∇J, θ ← θ − α·v); ``adam`` and ``adamw`` are Kingma & Ba's Adam, with L2 coupled
into the gradient (adam) or weight decay decoupled from it (adamw, Loshchilov & Hutter)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lmdev.train.config import OptimizerConfig, ScheduleConfig


def make_optimizer(model: nn.Module, cfg: OptimizerConfig, device: torch.device) -> torch.optim.Optimizer:
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    if cfg.type == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.type == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum or 0.9, weight_decay=cfg.weight_decay)
    if cfg.type == "sparse_adam":
        return SparseDenseAdam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    fused = device.type == "cuda"  # one kernel for the whole update on GPU
    cls = torch.optim.Adam if cfg.type == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
               fused=fused or None)


class SparseDenseAdam(torch.optim.Optimizer):
    """Adam that also takes sparse gradients (sparse embeddings): for a sparse gradient only the
    rows it touches are updated, their moments too ("lazy" Adam, as torch's SparseAdam); dense
    gradients get the ordinary Adam update. One optimizer for a model with both kinds."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros(())
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                t = float(st["step"])
                c1, c2 = 1 - b1 ** t, 1 - b2 ** t
                m, v = st["exp_avg"], st["exp_avg_sq"]
                if p.grad.is_sparse:
                    g = p.grad.coalesce()
                    rows, vals = g.indices()[0], g.values()
                    m_rows = m[rows].mul_(b1).add_(vals, alpha=1 - b1)
                    v_rows = v[rows].mul_(b2).addcmul_(vals, vals, value=1 - b2)
                    m[rows], v[rows] = m_rows, v_rows
                    p[rows] -= lr * (m_rows / c1) / ((v_rows / c2).sqrt() + eps)
                else:
                    m.mul_(b1).add_(p.grad, alpha=1 - b1)
                    v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                    p.sub_(lr * (m / c1) / ((v / c2).sqrt() + eps))
        return loss


def lr_factor(step: int, max_steps: int, cfg: ScheduleConfig) -> float:
    """The multiplier of the base learning rate at ``step`` (0-based): linear warm-up to 1, then
    constant, cosine or linear decay to ``min_lr_ratio`` at ``max_steps``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.type == "constant":
        return 1.0
    span = max(1, max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.type == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        decay = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * decay


def make_scheduler(opt: torch.optim.Optimizer, cfg: ScheduleConfig, max_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, max_steps, cfg))
