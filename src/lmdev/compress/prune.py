"""Structured pruning: whole hidden channels removed, so the layers get smaller and faster.

Supported: the hidden layers of an lmdev ``mlp`` (each Linear -> activation -> Linear pair) and
the MLP channels of an lmdev ``gpt`` (``up`` rows, with the gate half for SwiGLU, and ``down``
columns); its attention heads (lmdev.compress.prune_heads), whole layers of it and of a
transformers GPT-2 (lmdev.compress.prune_layers), and GPT-2's heads and channels
(lmdev.compress.prune_gpt2). A channel's importance is the L2 norm of its incoming weights times the L2 norm of its
outgoing weights; the least important are removed, then the model is fine-tuned with its run's
own config (optimizer, loss, data) for a short budget of steps. The pruned model is a plain model
of a smaller config (``hidden`` / ``ffn_hidden``), so it needs no sparse kernel."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from lmdev.compress import prune_gpt2, prune_heads
from lmdev.compress.prune_gpt2 import is_gpt2
from lmdev.compress.source import ModelSpec, Source
from lmdev.compress.variant import TorchRunner, Variant, module_bytes
from lmdev.errors import LmdevError

if TYPE_CHECKING:
    from lmdev.train.models import GPT, Block


def applies(source: Source) -> bool:
    if is_gpt2(source.spec):
        return source.data is not None and source.method is None
    return source.spec.kind == "lmdev" and source.spec.config.get("type") in ("mlp", "gpt") \
        and source.spec.shape.get("kind") != "sparse" and source.train_config is not None


def keep_count(width: int, ratio: float, what: str = "channels") -> int:
    keep = int(round(width * (1 - ratio)))
    if not 0 < ratio < 1 or keep < 1:
        raise LmdevError(f"pruning {ratio:.0%} of a layer of {width} {what} leaves {keep}: at least one must stay",
                         "lower --ratio")
    return keep


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k).indices.sort().values


def prune_mlp(model: nn.Sequential, ratio: float) -> tuple[nn.Sequential, list[int]]:
    """Prune every hidden Linear of an lmdev MLP (not the output layer); returns the new widths."""
    m = copy.deepcopy(model)
    linears = [i for i, layer in enumerate(m) if isinstance(layer, nn.Linear)]
    if len(linears) < 2:
        raise LmdevError("the MLP has no hidden layer to prune")
    widths = []
    for a, b in zip(linears, linears[1:]):
        first, second = _linear_at(m, a), _linear_at(m, b)
        keep = _top(first.weight.norm(dim=1) * second.weight.norm(dim=0), keep_count(first.out_features, ratio))
        m[a] = sliced(first, rows=keep)
        m[b] = sliced(second, cols=keep)
        widths.append(len(keep))
    return m, widths


def _linear_at(model: nn.Sequential, i: int) -> nn.Linear:
    """Layer ``i`` of ``model``, known to be an nn.Linear (picked by isinstance, or put there by _sliced)."""
    return cast(nn.Linear, model[i])


def sliced(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        out.weight.copy_(w)
        if b is not None:
            out.bias.copy_(b)
    return out


def prune_gpt(model: nn.Module, ratio: float) -> tuple[nn.Module, int]:
    """Prune the MLP channels of every block of an lmdev GPT to the same width (so the result is
    described by one ``ffn_hidden``)."""
    m = copy.deepcopy(model)
    blocks = _gpt_blocks(m)
    hidden = blocks[0].mlp.down.in_features
    k = keep_count(hidden, ratio)
    for block in blocks:
        mlp = block.mlp
        up, down = mlp.up.weight.detach(), mlp.down.weight.detach()
        if mlp.swiglu:
            score = (up[:hidden].norm(dim=1) + up[hidden:].norm(dim=1)) * down.norm(dim=0)
            keep = _top(score, k)
            mlp.up = sliced(mlp.up, rows=torch.cat([keep, keep + hidden]))
        else:
            keep = _top(up.norm(dim=1) * down.norm(dim=0), k)
            mlp.up = sliced(mlp.up, rows=keep)
        mlp.down = sliced(mlp.down, cols=keep)
    return m, k


def _gpt_blocks(model: nn.Module) -> list[Block]:
    """The blocks of an lmdev GPT (prune_gpt is only called for ``type = "gpt"`` models)."""
    return [cast("Block", b) for b in cast("GPT", model).blocks]


def pruned_spec(spec: ModelSpec, widths: Any) -> ModelSpec:
    cfg = dict(spec.config)
    if cfg.get("type") == "mlp":
        cfg["hidden"] = list(widths)
    else:
        cfg["ffn_hidden"] = int(widths)
    return ModelSpec(spec.kind, cfg, spec.shape)


def check(source: Source, ratio: float, parts: str = "both", layout: str | None = None) -> None:
    """Raise LmdevError when pruning ``source`` by ``ratio`` cannot be done (before any work)."""
    prune_gpt2.check_parts(parts)
    _check_layout(source, parts, resolve_layout(source, parts, layout))
    if is_gpt2(source.spec):
        _check_gpt2(source, ratio, parts)
        return
    if not applies(source):
        kind = source.spec.config.get("type", source.spec.kind) if source.spec.kind == "lmdev" else \
            f"hf {source.spec.config.get('model_type', '?')}"
        raise LmdevError(f"structured pruning supports lmdev mlp and gpt models with their training config and "
                         f"transformers GPT-2 (hf:), not {kind}", "use --method quantize")
    if parts == "layers":
        if source.spec.config["type"] != "gpt":
            raise LmdevError("layer pruning removes transformer blocks: an lmdev mlp has none",
                             "use --prune mlp")
        from lmdev.compress import prune_layers

        prune_layers.check(source, ratio)
        return
    model: Any = source.model
    if source.spec.config["type"] == "mlp":
        if parts == "heads":
            raise LmdevError("attention-head pruning needs attention: an lmdev mlp has none", "use --prune mlp")
        for lin in [m for m in model if isinstance(m, nn.Linear)][:-1]:
            keep_count(lin.out_features, ratio)
        return
    if parts == "heads" or (parts == "both" and not prune_heads.one_group(source.spec.config)):
        prune_heads.check(source.spec.config, ratio, alone=parts == "heads")
    if parts in ("both", "mlp"):
        keep_count(model.blocks[0].mlp.down.in_features, ratio)


def resolve_layout(source: Source, parts: str, layout: str | None) -> str:
    """The layout asked for, or by default ``global`` where the pruned model can hold per-block
    counts (a transformers GPT-2, heads and / or channels; measured better than ``uniform`` at the
    same sparsity, docs/figures/compress.md) and ``uniform`` elsewhere."""
    if layout is not None:
        return layout
    return "global" if is_gpt2(source.spec) and parts != "layers" else "uniform"


def _check_layout(source: Source, parts: str, layout: str) -> None:
    from lmdev.compress.layout import check_layout

    check_layout(layout)
    if layout == "uniform":
        return
    if parts == "layers":
        raise LmdevError("--prune-layout global ranks heads and channels across blocks; --prune layers removes "
                         "whole blocks", "leave out --prune-layout, or prune heads / mlp")
    if not is_gpt2(source.spec):
        raise LmdevError("--prune-layout global needs per-block head and channel counts, which only a transformers "
                         "GPT-2 variant can describe (an lmdev model's config has one width for every block)",
                         "use --prune-layout uniform")


def _check_gpt2(source: Source, ratio: float, parts: str) -> None:
    from lmdev.compress.transforms import has_int8

    if has_int8(source.model):
        raise LmdevError("the model is int8: prune its fp32 source", "then quantise the pruned variant")
    if source.data is None:
        raise LmdevError("pruning an hf: model needs text to score its heads and channels on and to fine-tune "
                         "with", "give --data text:PATH (or --data synthetic)")
    if parts == "layers":
        from lmdev.compress import prune_layers

        prune_layers.check(source, ratio)
        return
    blocks: list[Any] = prune_gpt2.blocks(source.model)
    if parts in ("both", "heads"):
        keep_count(min(prune_gpt2.n_heads(b.attn) for b in blocks), ratio, "attention heads")
    if parts in ("both", "mlp"):
        keep_count(min(prune_gpt2.mlp_width(b.mlp) for b in blocks), ratio, "MLP channels")


def prune_variant(source: Source, ratio: float, steps: int | None, parts: str = "both",
                  layout: str | None = None) -> Variant:
    check(source, ratio, parts, layout)
    layout = resolve_layout(source, parts, layout)
    if parts == "layers":
        from lmdev.compress.prune_layers import layer_variant

        return layer_variant(source, ratio, steps)
    if is_gpt2(source.spec):
        return gpt2_variant(source, ratio, steps, parts, layout)
    if source.spec.config["type"] == "gpt":
        model, spec, settings, notes = _prune_lmdev_gpt(source, ratio, parts)
    else:
        mlp, widths = prune_mlp(source.model, ratio)  # type: ignore[arg-type]
        model, spec = mlp, pruned_spec(source.spec, widths)
        settings, notes = {"widths": widths, "importance": "L2 in x L2 out", "parts": ["mlp"]}, []
    rebuilt = spec.build()  # the pruned model is exactly the model of the smaller config
    rebuilt.load_state_dict(model.state_dict())
    from lmdev.compress.finetune import RECOVERY, default_steps, finetune

    n = steps if steps is not None else default_steps(source)
    finetune(rebuilt, source, n, plan=RECOVERY)
    settings = {"ratio": ratio, **settings, "finetune_steps": n, "finetune_lr": RECOVERY.describe(source.train_config)}
    what = "heads + channels" if settings["parts"] == ["heads", "mlp"] else \
        "heads" if settings["parts"] == ["heads"] else "channels"
    return variant_of(f"pruned {ratio:.0%} {what}", rebuilt, spec, settings, notes)


def _prune_lmdev_gpt(source: Source, ratio: float,
                     parts: str) -> tuple[nn.Module, ModelSpec, dict[str, Any], list[str]]:
    """The attention heads (whole key/value groups) and / or MLP channels of an lmdev gpt pruned:
    (model, its spec, settings, notes)."""
    model, spec = source.model, source.spec
    settings: dict[str, Any] = {"parts": []}
    notes: list[str] = []
    importance = []
    groups = prune_heads.n_groups(spec.config)
    k = groups
    if parts == "both" and prune_heads.one_group(spec.config):
        notes.append("attention heads not pruned: the gpt has a single key/value group (n_kv_head 1), "
                     "which every query head shares")
    elif parts in ("both", "heads"):
        k = prune_heads.check(spec.config, ratio, alone=parts == "heads")
        if k == groups:
            units = "key/value groups" if prune_heads.grouped(spec.config) else "heads"
            notes.append(f"attention heads not pruned: --ratio {ratio:g} of {groups} {units} rounds to none")
    if k < groups:
        model = copy.deepcopy(model)
        batches = score_batches(source, source.train_config.data.batch_size)
        hd = prune_heads.prune(model, k, batches)
        per_group = prune_heads.group_size(spec.config)
        spec = ModelSpec(spec.kind, prune_heads.pruned_config(spec.config, k, hd), spec.shape)
        settings.update(heads_per_layer=k * per_group, head_dim=hd)
        what = f"heads: mean norm of each head's contribution to the residual stream on {len(batches)} training batches"
        if prune_heads.grouped(source.spec.config):
            settings.update(kv_groups_per_layer=k, heads_per_group=per_group)
            what = f"key/value groups (a key/value head and its {per_group} query heads): the sum over its query " \
                   f"{what}"
        settings["parts"].append("heads")
        importance.append(what)
    if parts in ("both", "mlp"):
        model, k = prune_gpt(model, ratio)
        spec = pruned_spec(spec, k)
        settings["widths"] = k
        settings["parts"].append("mlp")
        importance.append("MLP channels: L2 in x L2 out")
    settings["importance"] = "; ".join(importance)
    return model, spec, settings, notes


def variant_of(name: str, model: nn.Module, spec: ModelSpec, settings: dict[str, Any],
               notes: list[str] | None = None) -> Variant:
    """The pruned ``model`` (of ``spec``) as a variant of backend ``pruned``."""
    from lmdev.compress import formats

    model.eval()
    return Variant(name, "prune", "pruned", TorchRunner(model), lambda f: formats.write_torch(model, f), spec,
                   settings, model, module_bytes(model), notes or [])


SCORE_BATCHES = 4  # training batches the heads, channels (hf: GPT-2) and blocks are scored on


def score_batches(source: Source, batch_size: int) -> list[torch.Tensor]:
    """The inputs of up to SCORE_BATCHES training batches (a fixed order) to score units on."""
    from lmdev.train.data import Batches

    split = source.data.train
    order = Batches(len(split), min(batch_size, len(split)), 12345)
    return [split.batch(order.indices(i))[0] for i in range(min(SCORE_BATCHES, order.per_epoch))]


def gpt2_variant(source: Source, ratio: float, steps: int | None, parts: str, layout: str = "uniform") -> Variant:
    """Prune a transformers GPT-2, then fine-tune it on the training split of the source's --data
    (a plain causal-LM loss: an hf: source brings no training config)."""
    from lmdev.compress.finetune import LM_BATCH, LM_STEPS, finetune_lm, lm_finetune_text

    split = source.data.train
    batches = score_batches(source, LM_BATCH)
    model = copy.deepcopy(source.model)
    heads, chans = prune_gpt2.prune(model, ratio, parts, batches, layout)
    spec = ModelSpec("hf", prune_gpt2.pruned_config(source.spec.config, heads, chans), source.spec.shape)
    rebuilt = spec.build()  # the pruned model is exactly the model of the pruned config
    rebuilt.load_state_dict(model.state_dict())
    n = steps if steps is not None else LM_STEPS
    finetune_lm(rebuilt, split, n)
    what = {"both": "heads + MLP channels", "heads": "heads", "mlp": "MLP channels"}[parts]
    settings: dict[str, Any] = {
        "ratio": ratio, "parts": ["heads", "mlp"] if parts == "both" else [parts],
        "heads_per_layer": prune_gpt2.current_heads(spec.config), "mlp_channels": prune_gpt2.current_channels(
            spec.config), "finetune_steps": n, "finetune": lm_finetune_text(split),
        "importance": f"mean norm of each unit's contribution to the residual stream on {len(batches)} "
                      "training batches", "layout": layout}
    if layout == "global":
        settings["importance"] += " (each token's contribution over the norm of the stream the block reads), " \
                                  "ranked across blocks"
        what += ", global layout"
    return variant_of(f"pruned {ratio:.0%} {what}", rebuilt, spec, settings, [])


def pruned_int8_variant(pruned: Variant) -> Variant:
    """The pruned model quantised with torch.ao dynamic int8 (Conv1D -> Linear, tied head stored once)."""
    from lmdev.compress.quantize import ao_int8

    assert pruned.module is not None
    v = ao_int8(pruned.spec, pruned.module)
    v.name, v.method, v.backend = f"{pruned.name} + int8 (torch.ao)", "prune", PRUNED_INT8
    v.settings = {**pruned.settings, **v.settings}
    v.notes = list(pruned.notes)
    return v


PRUNED_INT8 = "pruned+torch.ao-int8"


def candidates(source: Source, ratio: float, steps: int | None, parts: str,
               with_int8: bool, layout: str | None = None) -> list[tuple[str, Any]]:
    """("pruned", factory) and, with ``with_int8``, the pruned model quantised to int8; the pruning
    and its fine-tune run once for both."""
    made: dict[str, Variant] = {}

    def pruned() -> Variant:
        if "v" not in made:
            made["v"] = prune_variant(source, ratio, steps, parts, layout)
        return made["v"]

    out: list[tuple[str, Any]] = [("pruned", pruned)]
    if with_int8:
        out.append((PRUNED_INT8, lambda: pruned_int8_variant(pruned())))
    return out
