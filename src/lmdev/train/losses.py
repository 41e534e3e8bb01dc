"""Loss functions, regularisation terms and metrics, each the textbook formula."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmdev.errors import LmdevError
from lmdev.train.config import LossConfig, RegularizationConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(cfg: LossConfig, task: str) -> LossFn:
    """J(output, target) averaged over the batch (and over tokens for language modelling);
    ``module:function`` is the user's own (:func:`user_loss`)."""
    if ":" in cfg.type:
        return user_loss(cfg.type)
    if cfg.type == "cross_entropy":
        if task == "regression":
            raise LmdevError("loss cross_entropy needs class labels but the data is a regression task",
                             "use loss: mse, l1 or huber")

        def cross_entropy(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if out.dim() != 2:  # tokens: [B, T, V] -> [B*T, V] (a plain batch needs no reshape: it runs every step)
                out, target = out.reshape(-1, out.shape[-1]), target.reshape(-1)
            if out.dtype != torch.float32:
                out = out.float()
            return F.cross_entropy(out, target, label_smoothing=cfg.label_smoothing)

        return cross_entropy
    if cfg.type == "bce":
        def bce(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            if task == "classification":  # one output per class, each a yes/no
                target = F.one_hot(target, out.shape[-1])
            return F.binary_cross_entropy_with_logits(out.float(), target.float().reshape(out.shape))

        return bce
    def huber(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.huber_loss(a, b, delta=cfg.huber_delta)

    regressions: dict[str, LossFn] = {"mse": F.mse_loss, "l1": F.l1_loss, "huber": huber}
    regression = regressions[cfg.type]

    def pointwise(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if task == "classification":  # regress onto the one-hot vector
            target = F.one_hot(target, out.shape[-1])
        return regression(out.float(), target.float().reshape(out.shape))

    return pointwise


def regularization(model: nn.Module, cfg: RegularizationConfig) -> torch.Tensor | None:
    """λ1·Σ|θ| + λ2·Σθ² over the weight matrices (biases and norm gains are left alone).

    Their gradients are λ1·sign(θ) and 2·λ2·θ: an explicit term of the loss, unlike decoupled
    weight decay, which the optimizer applies to θ directly."""
    if not cfg.l1 and not cfg.l2:
        return None
    total: torch.Tensor | None = None
    for p in _weights(model):
        term = p.new_zeros(())
        if cfg.l1:
            term = term + cfg.l1 * p.abs().sum()
        if cfg.l2:
            term = term + cfg.l2 * p.pow(2).sum()
        total = term if total is None else total + term
    return total


def _weights(model: nn.Module) -> list[nn.Parameter]:
    seen: dict[int, nn.Parameter] = {}
    for p in model.parameters():
        if p.requires_grad and p.ndim >= 2:
            seen.setdefault(id(p), p)
    return list(seen.values())


def correct(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How many predictions (argmax) equal the label, as a tensor (no host sync)."""
    return (out.argmax(dim=-1) == target).sum()


def user_loss(spec: str) -> LossFn:
    """``loss: {type: module:function}``: the user's ``function(output, target)``, which must
    return one number (a 0-d tensor); the module is found beside the config."""
    from lmdev.train.models import load_object

    fn = load_object(spec.removeprefix("python:"), "loss")
    if not callable(fn):
        raise LmdevError(f"loss {spec} is a {type(fn).__name__}, not a function", "name a function: module:function")

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = fn(out, target)
        if not isinstance(value, torch.Tensor) or value.ndim != 0:
            what = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise LmdevError(f"loss {spec} returned {what}, not a single number (a 0-d tensor)",
                             "reduce it, e.g. return the .mean() of the per-example losses")
        return value

    return loss
