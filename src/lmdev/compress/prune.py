"""Structured pruning: whole hidden channels removed, so the layers get smaller and faster.

Supported: the hidden layers of an lmdev ``mlp`` (each Linear -> activation -> Linear pair) and
the MLP channels of an lmdev ``gpt`` (``up`` rows, with the gate half for SwiGLU, and ``down``
columns). A channel's importance is the L2 norm of its incoming weights times the L2 norm of its
outgoing weights; the least important are removed, then the model is fine-tuned with its run's
own config (optimizer, loss, data) for a short budget of steps. The pruned model is a plain model
of a smaller config (``hidden`` / ``ffn_hidden``), so it needs no sparse kernel."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from lmdev.compress.source import ModelSpec, Source
from lmdev.compress.variant import TorchRunner, Variant, module_bytes
from lmdev.errors import LmdevError

if TYPE_CHECKING:
    from lmdev.train.models import GPT, Block


def applies(source: Source) -> bool:
    return source.spec.kind == "lmdev" and source.spec.config.get("type") in ("mlp", "gpt") \
        and source.spec.shape.get("kind") != "sparse" and source.train_config is not None


def keep_count(width: int, ratio: float) -> int:
    keep = int(round(width * (1 - ratio)))
    if not 0 < ratio < 1 or keep < 1:
        raise LmdevError(f"pruning {ratio:.0%} of a layer of {width} channels leaves {keep}: at least one must stay",
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
        m[a] = _sliced(first, rows=keep)
        m[b] = _sliced(second, cols=keep)
        widths.append(len(keep))
    return m, widths


def _linear_at(model: nn.Sequential, i: int) -> nn.Linear:
    """Layer ``i`` of ``model``, known to be an nn.Linear (picked by isinstance, or put there by _sliced)."""
    return cast(nn.Linear, model[i])


def _sliced(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
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
            mlp.up = _sliced(mlp.up, rows=torch.cat([keep, keep + hidden]))
        else:
            keep = _top(up.norm(dim=1) * down.norm(dim=0), k)
            mlp.up = _sliced(mlp.up, rows=keep)
        mlp.down = _sliced(mlp.down, cols=keep)
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


def check(source: Source, ratio: float) -> None:
    """Raise LmdevError when pruning ``source`` by ``ratio`` cannot be done (before any work)."""
    if not applies(source):
        kind = source.spec.config.get("type", source.spec.kind) if source.spec.kind == "lmdev" else "hf"
        raise LmdevError(f"structured pruning supports lmdev mlp and gpt models with their training config, not {kind}",
                         "use --method quantize")
    model: Any = source.model
    if source.spec.config["type"] == "mlp":
        for lin in [m for m in model if isinstance(m, nn.Linear)][:-1]:
            keep_count(lin.out_features, ratio)
    else:
        keep_count(model.blocks[0].mlp.down.in_features, ratio)


def prune_variant(source: Source, ratio: float, steps: int | None) -> Variant:
    check(source, ratio)
    model: nn.Module
    widths: list[int] | int
    if source.spec.config["type"] == "mlp":
        model, widths = prune_mlp(source.model, ratio)  # type: ignore[arg-type]
    else:
        model, widths = prune_gpt(source.model, ratio)
    spec = pruned_spec(source.spec, widths)
    rebuilt = spec.build()  # the pruned model is exactly the model of the smaller config
    rebuilt.load_state_dict(model.state_dict())
    from lmdev.compress.finetune import default_steps, finetune

    n = steps if steps is not None else default_steps(source)
    finetune(rebuilt, source, n)
    from lmdev.compress import formats

    rebuilt.eval()
    return Variant(f"pruned {ratio:.0%} channels", "prune", "pruned", TorchRunner(rebuilt),
                   lambda f: formats.write_torch(rebuilt, f), spec,
                   {"ratio": ratio, "widths": widths, "finetune_steps": n, "importance": "L2 in x L2 out"},
                   rebuilt, module_bytes(rebuilt))
