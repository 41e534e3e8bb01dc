"""Attention-head pruning of lmdev's own ``gpt``: whole key/value groups removed, the same number in
every block, so the result is the model of a smaller config (``n_head`` and ``n_kv_head`` lowered
together, their ratio and ``head_dim`` kept).

A *group* is one key/value head and the query heads that share it (``n_head / n_kv_head`` of
them, consecutive: query head ``h`` reads key/value head ``h // (n_head / n_kv_head)``). Without
grouped-query attention every head is its own group, so this is plain head pruning. Removing a
query head alone would leave its key/value head serving a different number of query heads than
the others, which the model (one ratio for every group) cannot describe; removing whole groups
keeps it a plain, smaller ``gpt``.

The config's optional ``head_dim`` (default ``n_embd / n_head``) is what makes "fewer heads of
the same width" describable; a model whose config leaves it out builds exactly as before.

Importance, as for transformers GPT-2 (lmdev.compress.prune_gpt2): the mean L2 norm of what a
head adds to the residual stream on a few training batches (its attention output through its
columns of the block's ``proj``); a group's score is the sum over its query heads."""

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


def n_groups(config: dict[str, Any]) -> int:
    """Key/value groups per block: ``n_kv_head``, or ``n_head`` without grouped-query attention."""
    return int(config.get("n_kv_head") or config.get("n_head", 4))


def group_size(config: dict[str, Any]) -> int:
    """Query heads per key/value group."""
    return int(config.get("n_head", 4)) // n_groups(config)


def one_group(config: dict[str, Any]) -> bool:
    """A grouped-query gpt with a single key/value group (multi-query attention): no group can go."""
    return grouped(config) and n_groups(config) == 1


def check(config: dict[str, Any], ratio: float, alone: bool = True) -> int:
    """Groups kept per block when ``ratio`` of them are pruned (before any work). Refuses a
    grouped-query gpt with a single key/value group and pruning every group; with ``alone`` (heads
    are all that is pruned), also a ratio that removes no group."""
    from lmdev.compress.prune import keep_count

    heads, groups = int(config.get("n_head", 4)), n_groups(config)
    if one_group(config):
        raise LmdevError(f"head pruning removes whole key/value groups, and this gpt has one (n_kv_head 1, "
                         f"n_head {heads}): removing it would leave no attention", "use --prune mlp or layers")
    what = "key/value groups" if grouped(config) else "attention heads"
    keep = keep_count(groups, ratio, what)
    if alone and keep == groups:
        raise LmdevError(f"pruning {ratio:.0%} of the {groups} {what} of each block removes none",
                         f"raise --ratio to at least {1 / groups:.2f} (one {what[:-1]})")
    return keep


def head_scores(model: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per block: each query head's mean contribution norm to the residual stream over ``batches``."""
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


def group_scores(model: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per block: each key/value group's score, the sum of its query heads' ``head_scores``."""
    return [s.view(a.n_kv, -1).sum(1) for a, s in zip(attentions(model), head_scores(model, batches))]


def _rows(units: torch.Tensor, width: int) -> torch.Tensor:
    """The rows of the units ``units`` (sorted indices), each ``width`` rows wide."""
    return (units[:, None] * width + torch.arange(width)).reshape(-1)


def keep_groups(attn: Attention, keep: torch.Tensor) -> None:
    """Keep only the key/value groups ``keep`` (sorted indices) of an attention block, in place:
    their key and value heads and the query heads that read them."""
    from lmdev.compress.prune import sliced

    hd, h, kv = attn.head_dim, attn.n_head, attn.n_kv
    q = _rows(keep, h // kv * hd)  # a group's query heads are consecutive
    k = _rows(keep, hd)
    attn.qkv = sliced(attn.qkv, rows=torch.cat([q, k + h * hd, k + (h + kv) * hd]))
    attn.proj = sliced(attn.proj, cols=q)
    attn.n_head, attn.n_kv = len(keep) * (h // kv), len(keep)


def prune(model: nn.Module, keep_n: int, batches: list[torch.Tensor]) -> int:
    """Keep the ``keep_n`` most important key/value groups (heads, without grouped-query attention)
    of every block of ``model`` in place; returns the head width (unchanged)."""
    scores = group_scores(model, batches)
    atts = attentions(model)
    for a, s in zip(atts, scores):
        keep_groups(a, s.topk(keep_n).indices.sort().values)
    return atts[0].head_dim


def pruned_config(config: dict[str, Any], groups: int, head_dim: int) -> dict[str, Any]:
    """The config of the model with ``groups`` key/value groups per block (``groups`` heads without
    grouped-query attention): n_head and n_kv_head shrink together, head_dim is set."""
    cfg = dict(config)
    cfg["n_head"], cfg["head_dim"] = groups * group_size(config), head_dim
    if cfg.get("n_kv_head") is not None:
        cfg["n_kv_head"] = groups
    return cfg
