"""The attribution methods. Integrated gradients, saliency and occlusion are Captum's; attention
is read from lmdev's own GPT by recomputing each layer's attention weights from its inputs.

Tables and images: scores per input feature, for the predicted class (or the regression output).
Language models: scores per input token, for the predicted next token; the gradient methods
attribute to the token embeddings (summed over the embedding), occlusion replaces a token with
token 0."""

from __future__ import annotations

import math

import torch
from torch import nn

from lmdev.errors import LmdevError

IG_STEPS = 32
BATCH = 64  # occlusion: perturbed copies evaluated in one forward pass


def captum_attr():  # type: ignore[no-untyped-def]
    """captum.attr, or a message saying how to install it."""
    try:
        import captum.attr
    except ImportError:
        raise LmdevError("this attribution method needs the captum package",
                         "pip install 'lmdev[explain]' (or pip install captum), or use --method attention") from None
    return captum.attr


def attribute_table(model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor | None,
                    method: str, steps: int = IG_STEPS) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scores [B, F], the integrated-gradients completeness gap [B] or None)."""
    if method not in ("integrated-gradients", "saliency", "occlusion"):
        raise LmdevError(f"method {method} works on transformer language models only",
                         "use integrated-gradients, saliency or occlusion for this model")
    ca = captum_attr()
    FeatureAblation, IntegratedGradients, Saliency = ca.FeatureAblation, ca.IntegratedGradients, ca.Saliency
    x = x.detach().clone().requires_grad_(True)
    base = baseline.expand_as(x).detach()
    if method == "integrated-gradients":
        scores, delta = IntegratedGradients(model).attribute(x, baselines=base, target=target, n_steps=steps,
                                                             return_convergence_delta=True)
        return scores.detach(), delta.detach()
    if method == "saliency":
        return Saliency(model).attribute(x, target=target, abs=True).detach(), None
    if method == "occlusion":
        with torch.no_grad():
            return FeatureAblation(model).attribute(x.detach(), baselines=base, target=target,
                                                    perturbations_per_eval=BATCH).detach(), None
    raise LmdevError(f"method {method} works on transformer language models only",
                     "use integrated-gradients, saliency or occlusion for this model")


def _next_token(model: nn.Module):  # type: ignore[no-untyped-def]
    return lambda ids: model(ids)[:, -1, :]


def attribute_tokens(model: nn.Module, ids: torch.Tensor, target: int, method: str,
                     steps: int = IG_STEPS) -> tuple[torch.Tensor, float | None]:
    """(scores [T] for the tokens of ids [1, T], completeness gap or None)."""
    if method == "attention":
        return attention_scores(model, ids)[0], None
    ca = captum_attr()
    forward = _next_token(model)
    embed = _embedding(model)
    if method == "integrated-gradients":
        lig = ca.LayerIntegratedGradients(forward, embed)
        scores, delta = lig.attribute(ids, baselines=torch.zeros_like(ids), target=target, n_steps=steps,
                                      return_convergence_delta=True)
        return scores.sum(-1)[0].detach(), float(delta.abs().max())
    if method == "saliency":  # the size of the gradient at each token's embedding
        grads = ca.LayerGradientXActivation(forward, embed, multiply_by_inputs=False).attribute(ids, target=target)
        return grads.norm(dim=-1)[0].detach(), None
    if method == "occlusion":
        with torch.no_grad():
            scores = ca.FeatureAblation(forward).attribute(ids, baselines=0, target=target,
                                                           perturbations_per_eval=BATCH)
            return scores[0].float().detach(), None
    raise LmdevError(f"unknown method {method!r}")


def _embedding(model: nn.Module) -> nn.Module:
    embed = getattr(model, "embed", None)
    if embed is None and hasattr(model, "inner"):  # a Hugging Face model
        embed = model.inner.get_input_embeddings()
    if not isinstance(embed, nn.Embedding):
        raise LmdevError("cannot find the model's token embedding", "explain supports lmdev's gpt and hf: models")
    return embed


def attention_scores(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """How much the last position attends to each position [B, T]: the attention weights of
    every layer's heads for the last query, averaged over heads and layers."""
    from lmdev.train.models import GPT, Attention, apply_rope

    if not isinstance(model, GPT):
        raise LmdevError("attention is read from lmdev's gpt model only",
                         "use integrated-gradients, saliency or occlusion for this model")
    rows: list[torch.Tensor] = []

    def hook(module: Attention, args: tuple[torch.Tensor, ...]) -> None:
        x, cos, sin = args
        b, t, _ = x.shape
        q, k, _ = module.qkv(x).split([module.n_head * module.head_dim, module.n_kv * module.head_dim,
                                       module.n_kv * module.head_dim], dim=-1)
        q = q.view(b, t, module.n_head, module.head_dim).transpose(1, 2)
        k = k.view(b, t, module.n_kv, module.head_dim).transpose(1, 2)
        if module.rope:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = k.repeat_interleave(module.n_head // module.n_kv, dim=1)
        weights = torch.softmax(q[:, :, -1:] @ k.transpose(-1, -2) / math.sqrt(module.head_dim), dim=-1)
        rows.append(weights[:, :, 0].mean(1))  # the last query (it sees every position): [B, T]

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, Attention)]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(rows).mean(0)
