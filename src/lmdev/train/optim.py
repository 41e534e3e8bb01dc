"""Optimizers and learning-rate schedules.

``sgd`` is plain gradient descent, θ ← θ − α·∇J; ``momentum`` adds a velocity
(v ← μ·v + ∇J, θ ← θ − α·v); ``adam`` and ``adamw`` are Kingma & Ba's Adam, with L2 coupled
into the gradient (adam) or weight decay decoupled from it (adamw, Loshchilov & Hutter)."""

from __future__ import annotations

import math

import torch
from torch import nn

from lmdev.train.config import OptimizerConfig, ScheduleConfig


def make_optimizer(model: nn.Module, cfg: OptimizerConfig, device: torch.device) -> torch.optim.Optimizer:
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    if cfg.type == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.type == "momentum":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum or 0.9, weight_decay=cfg.weight_decay)
    fused = device.type == "cuda"  # one kernel for the whole update on GPU
    cls = torch.optim.Adam if cfg.type == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay,
               fused=fused or None)


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
