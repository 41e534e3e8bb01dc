"""Structured pruning of transformers GPT-2 (``GPT2LMHeadModel``: ``Conv1D`` layers, head tied to
the embedding): whole attention heads and whole MLP channels removed, the same number in every
block or ranked across blocks (``global``, the default of lmdev.compress.prune), so the result is a
plain dense GPT-2 of a smaller shape.

Importance. A unit (a head, an MLP channel) is scored by the mean L2 norm of what it adds to the
residual stream on a few batches of training text: for a head, its attention output through its
rows of the attention's ``c_proj``; for an MLP channel, ``|activation| x ||its c_proj row||``.
This was picked over weight norms because a head's q/k slices only decide *where* it looks, not
how much it contributes, and a head with large weights can still attend to nothing useful (a
"sink" head on the first token adds almost nothing); its measured contribution captures both.
The cost is a few forward passes, and the fine-tune needs the same text anyway.

Layout. ``uniform`` removes the same number of heads and channels in every block;
``global`` ranks the units of all blocks together and removes the lowest (lmdev.compress.layout),
so a block that matters less loses more. For that ranking a unit's contribution is measured
relative to the residual stream the block reads (per token, ``||contribution|| / ||x||``): the
stream grows with depth, so absolute norms would mark the early blocks as least important.

Storage. MLP widths are GPT-2's own ``n_inner``; per-layer widths (``global``) add
``CHANNELS_KEY``, the channels kept per block (``n_inner`` is then their maximum). GPT-2's config cannot say "fewer heads of the
same width" (``head_dim = n_embd / n_head``), so the pruned config keeps ``n_head`` (hence the head
width) and adds ``HEADS_KEY``: the heads kept per block. Building an hf spec with that key
(``lmdev.compress.source.build_hf_from_config``) calls ``set_heads`` (and ``set_channels``), so the pruned weights load
through every lmdev format (safetensors, int8, int4, ONNX export). Plain transformers
``from_pretrained`` does not know the key: load such a variant with ``lmdev.compress.load``.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from lmdev.errors import LmdevError

HEADS_KEY = "lmdev_heads_per_layer"  # one count for every block, or a list of one per block
CHANNELS_KEY = "lmdev_channels_per_layer"  # a list of one MLP width per block (when they differ)
PARTS = ("both", "mlp", "heads", "layers")  # layers: lmdev.compress.prune_layers


def is_gpt2(spec: Any) -> bool:
    return bool(spec.kind == "hf" and spec.config.get("model_type") == "gpt2")


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of an HFCausalLM wrapping a GPT2LMHeadModel (or of the bare model)."""
    inner = getattr(model, "inner", model)
    return list(cast(Any, inner).transformer.h)


def head_dim(attn: nn.Module) -> int:
    return int(cast(Any, attn).head_dim)


def n_heads(attn: nn.Module) -> int:
    """Heads the attention has now (its c_proj input width over the head width)."""
    return int(_weight(attn, "c_proj").shape[0]) // head_dim(attn)


def mlp_width(mlp: nn.Module) -> int:
    return int(_weight(mlp, "c_fc").shape[1])


def _weight(module: nn.Module, name: str) -> torch.Tensor:
    """The [in, out] weight of the Conv1D ``name`` of ``module``."""
    return cast(torch.Tensor, cast(nn.Module, getattr(module, name)).weight).detach()


def _conv1d(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module:
    """A transformers Conv1D holding ``weight`` [in, out] and ``bias`` [out]."""
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _slice(conv: nn.Module, cols: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> nn.Module:
    w = cast(torch.Tensor, conv.weight).detach()
    b = cast("torch.Tensor | None", conv.bias)
    b = b.detach() if b is not None else None
    if cols is not None:
        w = w[:, cols]
        b = b[cols] if b is not None else None
    if rows is not None:
        w = w[rows]
    return _conv1d(w.contiguous(), b)


def keep_heads(attn: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the heads ``keep`` (sorted indices) of a GPT2Attention, in place."""
    hd, h = head_dim(attn), n_heads(attn)
    width = h * hd
    cols = (keep[:, None] * hd + torch.arange(hd)).reshape(-1)  # the kept heads' columns in one of q, k, v
    a = cast(Any, attn)
    a.c_attn = _slice(a.c_attn, cols=torch.cat([cols, cols + width, cols + 2 * width]))
    a.c_proj = _slice(a.c_proj, rows=cols)
    a.split_size = len(keep) * hd  # q, k and v are split at this width; heads are then inferred from it
    a.num_heads = len(keep)


def keep_channels(mlp: nn.Module, keep: torch.Tensor) -> None:
    m = cast(Any, mlp)
    m.c_fc = _slice(m.c_fc, cols=keep)
    m.c_proj = _slice(m.c_proj, rows=keep)


def per_block(counts: int | list[int], n_blocks: int, what: str) -> list[int]:
    """A config's per-layer count (one for every block, or a list of one per block) as a list."""
    if isinstance(counts, int):
        return [counts] * n_blocks
    if len(counts) != n_blocks:
        raise LmdevError(f"the model's config gives {what} for {len(counts)} blocks; it has {n_blocks}")
    return [int(c) for c in counts]


def set_heads(model: nn.Module, heads: int | list[int]) -> None:
    """Give the blocks of a freshly built GPT-2 ``heads`` heads (one count for all, or one per
    block); its weights are loaded after."""
    bl = blocks(model)
    for block, h in zip(bl, per_block(heads, len(bl), "attention heads")):
        attn = cast(Any, block).attn
        if not 0 < h <= n_heads(attn):
            raise LmdevError(f"the model's config asks for {h} attention heads per block; "
                             f"it has {n_heads(attn)}")
        keep_heads(attn, torch.arange(h))


def set_channels(model: nn.Module, channels: list[int]) -> None:
    """Give the blocks of a freshly built GPT-2 ``channels`` MLP channels, one count per block."""
    bl = blocks(model)
    for block, c in zip(bl, per_block(channels, len(bl), "MLP widths")):
        mlp = cast(Any, block).mlp
        if not 0 < c <= mlp_width(mlp):
            raise LmdevError(f"the model's config asks for {c} MLP channels in a block; it has {mlp_width(mlp)}")
        keep_channels(mlp, torch.arange(c))


def unit_scores(model: nn.Module, batches: list[torch.Tensor],
                relative: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(per block: each head's score, per block: each MLP channel's score): the mean L2 norm of
    the unit's contribution to the residual stream over ``batches`` of token ids; with
    ``relative``, each token's contribution divided by the norm of the stream the block reads."""
    bl = blocks(model)
    heads = [torch.zeros(n_heads(cast(Any, b).attn)) for b in bl]
    chans = [torch.zeros(mlp_width(cast(Any, b).mlp)) for b in bl]
    stream: dict[int, torch.Tensor] = {}  # block -> 1 / ||x|| per token of the current batch
    hooks = []

    def scale(i: int) -> torch.Tensor | float:
        return stream[i][:, None] if relative else 1.0

    def on_block(i: int) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            stream[i] = 1 / x.reshape(-1, x.shape[-1]).norm(dim=-1).clamp_min(1e-12)
        return hook

    def on_attn(i: int, hd: int, w: torch.Tensor) -> Any:
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].reshape(-1, heads[i].numel(), hd)  # [tokens, heads, head_dim]
            contrib = torch.einsum("thd,hde->the", x, w.view(heads[i].numel(), hd, -1))
            heads[i] += (contrib.norm(dim=-1) * scale(i)).mean(0)
        return hook

    def on_mlp(i: int, w: torch.Tensor) -> Any:
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            a = args[0].reshape(-1, chans[i].numel())
            chans[i] += (a.abs() * scale(i)).mean(0) * w.norm(dim=1)
        return hook

    for i, b in enumerate(bl):
        attn, mlp = cast(Any, b).attn, cast(Any, b).mlp
        hooks.append(b.register_forward_pre_hook(on_block(i), with_kwargs=True))
        hooks.append(attn.c_proj.register_forward_pre_hook(on_attn(i, head_dim(attn), _weight(attn, "c_proj"))))
        hooks.append(mlp.c_proj.register_forward_pre_hook(on_mlp(i, _weight(mlp, "c_proj"))))
    from lmdev.compress.transforms import observe

    observe(model, hooks, batches)
    return heads, chans


def check_parts(parts: str) -> None:
    if parts not in PARTS:
        raise LmdevError(f"unknown --prune {parts!r}", f"valid: {', '.join(PARTS)}")


def prune(model: nn.Module, ratio: float, parts: str, batches: list[torch.Tensor],
          layout: str = "uniform") -> tuple[list[int] | None, list[int] | None]:
    """Prune ``model`` (an HFCausalLM of GPT-2) in place: ``ratio`` of the heads and / or of the
    MLP channels, the least important by ``unit_scores``; ``uniform``: the same share of every
    block, ``global``: ranked across blocks (lmdev.compress.layout). Returns (heads kept per block
    or None, MLP channels kept per block or None)."""
    from lmdev.compress import layout as lay

    check_parts(parts)
    lay.check_layout(layout)
    bl = blocks(model)
    head_scores, chan_scores = unit_scores(model, batches, relative=layout == "global")
    k_heads = lay.counts(head_scores, ratio, layout, "attention heads", lay.min_heads) \
        if parts in ("both", "heads") else None
    k_chans = lay.counts(chan_scores, ratio, layout, "MLP channels", lay.min_channels) \
        if parts in ("both", "mlp") else None
    for i, b in enumerate(bl):
        blk = cast(Any, b)
        if k_heads is not None:
            keep_heads(blk.attn, head_scores[i].topk(k_heads[i]).indices.sort().values)
        if k_chans is not None:
            keep_channels(blk.mlp, chan_scores[i].topk(k_chans[i]).indices.sort().values)
    return k_heads, k_chans


def _one_or_list(counts: list[int]) -> int | list[int]:
    return counts[0] if len(set(counts)) == 1 else counts


def pruned_config(config: dict[str, Any], heads: list[int] | int | None,
                  channels: list[int] | int | None) -> dict[str, Any]:
    """The config of the pruned GPT-2: per-layer counts equal in every block are written as one."""
    cfg = dict(config)
    if heads is not None:
        cfg[HEADS_KEY] = _one_or_list(heads) if isinstance(heads, list) else heads
    if channels is not None:
        per = _one_or_list(channels) if isinstance(channels, list) else channels
        cfg.pop(CHANNELS_KEY, None)
        if isinstance(per, list):
            cfg["n_inner"], cfg[CHANNELS_KEY] = max(per), per
        else:
            cfg["n_inner"] = per
    return cfg


def current_heads(config: dict[str, Any]) -> int | list[int]:
    """Heads per block: one count for every block, or a list of one per block."""
    got = config.get(HEADS_KEY)
    if isinstance(got, list):
        return [int(h) for h in got]
    return int(got or config.get("n_head") or config.get("num_attention_heads") or 12)


def current_channels(config: dict[str, Any]) -> int | list[int]:
    """MLP channels per block: one count for every block, or a list of one per block."""
    got = config.get(CHANNELS_KEY)
    if isinstance(got, list):
        return [int(c) for c in got]
    return int(config.get("n_inner") or 4 * int(config.get("n_embd") or config.get("hidden_size") or 768))
