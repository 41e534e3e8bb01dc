"""Whole-layer pruning: the least important transformer blocks removed, the kept blocks in their
order, so the result is a plain model of the same kind with a smaller layer count (``n_layer``).

Supported: lmdev's own ``gpt`` (fine-tuned afterwards with its run's config, as the channel
pruning is) and transformers GPT-2 (``hf:`` with ``--data``; fine-tuned with a plain next-token
loss on the training split).

Importance. A block is scored by how much it changes the residual stream, relative to what it is
given: the mean over tokens of ``||block(x) - x|| / ||x||`` on a few training batches. A block
that adds little to the stream it reads can be removed with little effect on the blocks after it.
The alternative, the loss increase when the block is skipped, measures the end effect directly
but was not picked: it needs one extra forward pass per block, and on few batches (and on a
young model) it is noisy and often *negative* for a useful block, so a block that writes nothing
can rank above one that does. The relative norm costs one forward pass, needs no labels, is
exactly zero for a block that writes nothing, and is relative (not absolute) because the
residual stream grows with depth, which would otherwise mark the early blocks as least important.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
from torch import nn

from lmdev.compress.source import ModelSpec, Source
from lmdev.compress.variant import Variant
from lmdev.errors import LmdevError

IMPORTANCE = "mean over tokens of ||block(x) - x|| / ||x|| (relative change of the residual stream)"


def is_gpt2(spec: ModelSpec) -> bool:
    from lmdev.compress.prune_gpt2 import is_gpt2 as gpt2

    return gpt2(spec)


def block_list(model: nn.Module, spec: ModelSpec) -> nn.ModuleList:
    """The ModuleList of transformer blocks: ``transformer.h`` of a GPT-2, ``blocks`` of an lmdev gpt."""
    if is_gpt2(spec):
        inner = getattr(model, "inner", model)
        return cast(nn.ModuleList, cast(Any, inner).transformer.h)
    return cast(nn.ModuleList, cast(Any, model).blocks)


def kept_count(n_blocks: int, ratio: float) -> int:
    """Blocks kept when ``ratio`` of ``n_blocks`` are removed; refuses removing all or none."""
    if n_blocks < 2:
        raise LmdevError(f"the model has {n_blocks} transformer block: at least one block must stay, so none "
                         "can be removed", "use --prune mlp (or heads) instead")
    keep = int(round(n_blocks * (1 - ratio))) if 0 < ratio < 1 else 0 if ratio >= 1 else n_blocks
    removed = n_blocks - keep
    if keep < 1:
        raise LmdevError(f"pruning {ratio:.0%} of the model's {n_blocks} transformer blocks leaves {keep}: "
                         "at least one block must stay", "lower --ratio")
    if removed < 1:
        raise LmdevError(f"pruning {ratio:.0%} of the model's {n_blocks} transformer blocks removes none",
                         f"raise --ratio to at least {1 / n_blocks:.2f} (one block)")
    return keep


def layer_count(spec: ModelSpec) -> int:
    cfg = spec.config
    return int(cfg.get("n_layer") or cfg.get("num_hidden_layers") or 0)


def check(source: Source, ratio: float) -> None:
    """Raise LmdevError when the blocks of ``source`` cannot be pruned by ``ratio``."""
    if is_gpt2(source.spec) and source.spec.config.get("scale_attn_by_inverse_layer_idx"):
        raise LmdevError("this GPT-2 scales each block's attention by its layer index "
                         "(scale_attn_by_inverse_layer_idx): removing blocks would change the kept ones",
                         "use --prune heads or mlp")
    kept_count(len(block_list(source.model, source.spec)), ratio)


def block_scores(model: nn.Module, blocks: nn.ModuleList, batches: list[torch.Tensor]) -> torch.Tensor:
    """Each block's mean relative change of the residual stream over ``batches`` of token ids."""
    scores = torch.zeros(len(blocks))

    def on_block(i: int) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            x = args[0]
            y = output[0] if isinstance(output, tuple) else output
            scores[i] += ((y - x).norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)).mean() / len(batches)
        return hook

    hooks = [b.register_forward_hook(on_block(i)) for i, b in enumerate(blocks)]
    from lmdev.compress.transforms import observe

    observe(model, hooks, batches)
    return scores


def drop_blocks(model: nn.Module, spec: ModelSpec, keep: list[int]) -> None:
    """Keep only the blocks ``keep`` (sorted indices) of ``model``, in place."""
    blocks = block_list(model, spec)
    kept = nn.ModuleList(blocks[i] for i in keep)
    if is_gpt2(spec):
        cast(Any, getattr(model, "inner", model)).transformer.h = kept
    else:
        cast(Any, model).blocks = kept


def pruned_config(config: dict[str, Any], n_layer: int, kept: list[int] | None = None) -> dict[str, Any]:
    """The config of the model with ``n_layer`` blocks (GPT-2's alias ``num_hidden_layers`` too).
    lmdev's per-layer keys of a pruned GPT-2 (heads, MLP channels) keep the entries of the
    ``kept`` blocks when they are lists; a single count stays one count for every block."""
    from lmdev.compress.prune_gpt2 import CHANNELS_KEY, HEADS_KEY

    cfg = dict(config)
    cfg["n_layer"] = n_layer
    if "num_hidden_layers" in cfg:
        cfg["num_hidden_layers"] = n_layer
    for key in (HEADS_KEY, CHANNELS_KEY):
        if isinstance(cfg.get(key), list):
            if kept is None or len(kept) != n_layer:
                raise ValueError(f"{key} is per block: the kept blocks are needed")
            cfg[key] = [cfg[key][i] for i in kept]
    if isinstance(cfg.get(CHANNELS_KEY), list):
        cfg["n_inner"] = max(cfg[CHANNELS_KEY])
    return cfg


def prune(model: nn.Module, spec: ModelSpec, ratio: float, batches: list[torch.Tensor]) -> tuple[list[int], list[float]]:
    """Remove ``ratio`` of the blocks of ``model`` in place, the lowest by ``block_scores``.
    Returns (the removed blocks' indices in the source, every block's score)."""
    blocks = block_list(model, spec)
    keep_n = kept_count(len(blocks), ratio)
    scores = block_scores(model, blocks, batches)
    keep = scores.topk(keep_n).indices.sort().values.tolist()
    drop_blocks(model, spec, keep)
    return [i for i in range(len(scores)) if i not in keep], [round(float(s), 6) for s in scores]


def layer_variant(source: Source, ratio: float, steps: int | None) -> Variant:
    """Prune whole blocks of ``source`` (lmdev gpt or transformers GPT-2), rebuild the model of the
    smaller config, fine-tune it and return the variant."""
    from lmdev.compress.finetune import LM_BATCH, LM_STEPS, RECOVERY, default_steps, finetune, finetune_lm, lm_finetune_text
    from lmdev.compress.prune import score_batches, variant_of

    check(source, ratio)
    gpt2 = is_gpt2(source.spec)
    batch = LM_BATCH if gpt2 else source.train_config.data.batch_size
    batches = score_batches(source, batch)
    model = copy.deepcopy(source.model)
    n_before = len(block_list(model, source.spec))
    removed, scores = prune(model, source.spec, ratio, batches)
    kept = [i for i in range(n_before) if i not in removed]
    spec = ModelSpec(source.spec.kind, pruned_config(source.spec.config, len(kept), kept), source.spec.shape)
    rebuilt = spec.build()  # the pruned model is exactly the model of the smaller config
    rebuilt.load_state_dict(model.state_dict())
    settings: dict[str, Any] = {"ratio": ratio, "parts": ["layers"], "layers_removed": removed,
                                "layers_kept": kept,
                                "n_layer": n_before - len(removed), "layer_scores": scores,
                                "importance": f"{IMPORTANCE} on {len(batches)} training batches"}
    if gpt2:
        n = steps if steps is not None else LM_STEPS
        finetune_lm(rebuilt, source.data.train, n)
        settings["finetune"] = lm_finetune_text(source.data.train)
    else:
        n = steps if steps is not None else default_steps(source)
        finetune(rebuilt, source, n, plan=RECOVERY)
        settings["finetune_lr"] = RECOVERY.describe(source.train_config)
    settings["finetune_steps"] = n
    what = ", ".join(map(str, removed))
    return variant_of(f"pruned {len(removed)} of {n_before} layers ({what})", rebuilt, spec, settings)
