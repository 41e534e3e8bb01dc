"""Attention-head pruning of lmdev's own ``gpt``: whole heads removed, the same number in every
block, so the result is the model of a smaller config (``n_head`` lowered, ``head_dim`` kept).

The config's optional ``head_dim`` (default ``n_embd / n_head``) is what makes "fewer heads of
the same width" describable; a model whose config leaves it out builds exactly as before.

Importance, as for transformers GPT-2 (lmdev.compress.prune_gpt2): the mean L2 norm of what a
head adds to the residual stream on a few training batches (its attention output through its
columns of the block's ``proj``). Grouped-query attention (``n_kv_head`` < ``n_head``) is not
pruned: dropping query heads would break the key/value groups they share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from lmdev.errors import LmdevError

if TYPE_CHECKING:
    from lmdev.train.models import GPT, Attention


def attentions(model: nn.Module) -> list[Attention]:
    return [cast("Attention", cast(Any, b).attn) for b in cast("GPT", model).blocks]


def grouped(config: dict[str, Any]) -> bool:
    """Whether the gpt uses grouped-query attention (fewer key/value heads than query heads)."""
    kv = config.get("n_kv_head")
    return kv is not None and int(kv) != int(config.get("n_head", 4))


def check(config: dict[str, Any]) -> None:
    """Refuse head pruning of a grouped-query gpt (before any work)."""
    heads, kv = config.get("n_head", 4), config.get("n_kv_head")
    if grouped(config):
        raise LmdevError(f"head pruning of a grouped-query gpt (n_kv_head {kv} < n_head {heads}) is not built: "
                         "dropping query heads would break the key/value groups", "use --prune mlp or layers")


def head_scores(model: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per block: each head's mean contribution norm to the residual stream over ``batches``."""
    atts = attentions(model)
    scores = [torch.zeros(a.n_head) for a in atts]

    def on_proj(i: int, a: Attention) -> Any:
        w = a.proj.weight.detach().view(-1, a.n_head, a.head_dim)  # [n_embd, heads, head_dim]

        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].reshape(-1, a.n_head, a.head_dim)  # [tokens, heads, head_dim]
            scores[i] += torch.einsum("thd,ehd->the", x, w).norm(dim=-1).mean(0)
        return hook

    hooks = [a.proj.register_forward_pre_hook(on_proj(i, a)) for i, a in enumerate(atts)]
    from lmdev.compress.transforms import observe

    observe(model, hooks, batches)
    return scores


def keep_heads(attn: Attention, keep: torch.Tensor) -> None:
    """Keep only the heads ``keep`` (sorted indices) of a full-attention block, in place."""
    from lmdev.compress.prune import sliced

    hd, h = attn.head_dim, attn.n_head
    cols = (keep[:, None] * hd + torch.arange(hd)).reshape(-1)  # the kept heads' rows in one of q, k, v
    attn.qkv = sliced(attn.qkv, rows=torch.cat([cols, cols + h * hd, cols + 2 * h * hd]))
    attn.proj = sliced(attn.proj, cols=cols)
    attn.n_head = attn.n_kv = len(keep)


def prune(model: nn.Module, keep_n: int, batches: list[torch.Tensor]) -> int:
    """Keep the ``keep_n`` most important heads of every block of ``model`` in place; returns the
    head width (unchanged)."""
    scores = head_scores(model, batches)
    atts = attentions(model)
    for a, s in zip(atts, scores):
        keep_heads(a, s.topk(keep_n).indices.sort().values)
    return atts[0].head_dim


def pruned_config(config: dict[str, Any], heads: int, head_dim: int) -> dict[str, Any]:
    cfg = dict(config)
    cfg["n_head"], cfg["head_dim"] = heads, head_dim
    if cfg.get("n_kv_head") is not None:
        cfg["n_kv_head"] = heads
    return cfg
