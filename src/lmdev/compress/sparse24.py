"""2:4 semi-structured sparsity: ``lmdev compress --method prune --prune 2:4`` (backend ``sparse-2:4``).

In every Linear weight (after ``transforms.linearize``: GPT-2's ``Conv1D`` too), each group of 4
consecutive input weights of a row keeps its 2 of largest magnitude; the other 2 are zero. The mask
is fixed, then the model is fine-tuned with the mask re-applied after every optimizer step (the
run's own config, or a plain causal-LM loss for an hf: source with --data). Layers whose input width
is not a multiple of 4 stay dense, and so does a head tied to its embedding (the embedding shares it).

Stored compressed: per sparse weight the kept values (half of them, in the weight's dtype) and
their positions, 2 bits each, packed 4 bits per group of 4 (two groups a byte). Read back, each
weight is rebuilt dense: there is no sparse kernel for CPUs, so the variant runs at dense speed
and only the file shrinks ("size only", measured like every variant). On CUDA in fp16 / bf16,
``use_sparse_kernels`` swaps the weights for ``torch.sparse.to_sparse_semi_structured`` ones (the
sparse tensor cores of NVIDIA Ampere or newer); that path is guarded and not measured here.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import save_file
from torch import nn

from lmdev.compress import formats, transforms
from lmdev.compress.source import ModelSpec, Source
from lmdev.compress.variant import TorchRunner, Variant, module_bytes
from lmdev.errors import LmdevError

BACKEND = "sparse-2:4"
PATTERN = "2:4"
SIZE_ONLY = "no sparse kernel on this machine: size only (the weights are rebuilt dense, so it runs at fp32 " \
            "speed with fp32 memory)"


def _in_width(module: nn.Module) -> int | None:
    """The input width of a Linear or a GPT-2 ``Conv1D`` (weight [in, out]); None for other modules."""
    if isinstance(module, nn.Linear):
        return module.in_features
    w = getattr(module, "weight", None)
    if type(module).__name__ == "Conv1D" and isinstance(w, torch.Tensor) and w.dim() == 2:
        return int(w.shape[0])
    return None


def check(source: Source) -> None:
    """Refuse a model with no layer 2:4 sparsity applies to (before any work)."""
    dtype = (source.method or {}).get("dtype")
    if transforms.has_int8(source.model) or dtype in ("int8", "fp8-e4m3"):
        raise LmdevError(f"the model is {dtype or 'int8'}: make the 2:4 variant from its fp32 source")
    tied = transforms.tied_heads(source.model)
    widths = [w for n, m in source.model.named_modules() if n not in tied and (w := _in_width(m)) is not None]
    if not any(w % 4 == 0 for w in widths):
        raise LmdevError(f"2:4 sparsity needs a Linear layer whose input width is a multiple of 4; this model has "
                         f"{len(widths)} Linear layer(s), none of them eligible", "use --method quantize")


def mask_2of4(w: torch.Tensor) -> torch.Tensor:
    """A bool mask of ``w`` ([out, in], in a multiple of 4) keeping the 2 largest |w| of each group of 4."""
    groups = w.detach().abs().reshape(-1, 4)
    keep = groups.topk(2, dim=1).indices
    return torch.zeros_like(groups, dtype=torch.bool).scatter_(1, keep, True).view_as(w)


def pack(w: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept values [out, in/2] in w's dtype, positions uint8 [ceil(groups/2)]) of a 2:4 weight: each
    group's two positions (0..3, ascending) in a nibble (first | second << 2), two groups a byte."""
    g = mask.reshape(-1, 4)
    pos = g.to(torch.float32).topk(2, dim=1).indices.sort(dim=1).values
    values = w.detach().reshape(-1, 4).gather(1, pos).reshape(w.shape[0], -1).contiguous()
    nib = (pos[:, 0] | (pos[:, 1] << 2)).to(torch.uint8)
    if nib.numel() % 2:
        nib = torch.cat([nib, nib.new_zeros(1)])
    return values, (nib[0::2] | (nib[1::2] << 4)).contiguous()


UNPACK_CHUNK = 1 << 16  # groups rebuilt at a time: the int64 positions scatter needs stay small


def unpack(values: torch.Tensor, positions: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """The dense weight of ``shape`` that ``pack`` stored (exactly the values measured), rebuilt
    UNPACK_CHUNK groups at a time so that loading holds little beyond the dense weight itself."""
    rows, cols = shape
    n = rows * cols // 4
    dense = torch.zeros(n, 4, dtype=values.dtype)
    kept = values.reshape(n, 2)
    for start in range(0, n, UNPACK_CHUNK):  # an even start: a chunk begins on a byte
        stop = min(start + UNPACK_CHUNK, n)
        packed = positions[start // 2:(stop + 1) // 2]
        nib = torch.stack([packed & 0x0F, packed >> 4], dim=1).view(-1)[:stop - start]
        pos = torch.stack([nib & 3, (nib >> 2) & 3], dim=1).long()
        dense[start:stop].scatter_(1, pos, kept[start:stop])
    return dense.view(rows, cols)


def _retie(model: nn.Module, tied: dict[str, str]) -> None:
    """Point each head of ``tied`` ({head: embedding}) at its embedding's weight again (linearize untied it)."""
    for head, emb in tied.items():
        model.get_submodule(head).weight = model.get_submodule(emb).weight


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    """The weight of layer ``name``, an nn.Linear of a linearized model (picked by linear_names)."""
    return cast(nn.Linear, model.get_submodule(name)).weight


def layers(model: nn.Module, tied: dict[str, str]) -> tuple[list[str], list[str]]:
    """(Linear layers made 2:4, Linear layers left dense: input width not a multiple of 4) of a
    linearized model; heads tied to an embedding are neither (they stay dense and tied)."""
    names = [n for n in transforms.linear_names(model) if n not in tied]
    sparse = [n for n in names if _weight(model, n).shape[1] % 4 == 0]
    return sparse, [n for n in names if n not in sparse]


def sparse24_variant(source: Source, steps: int | None) -> Variant:
    """The 2:4 variant of ``source``: masks by magnitude, a masked fine-tune, stored compressed."""
    check(source)
    tied = transforms.tied_heads(source.model)
    m = transforms.linearize(copy.deepcopy(source.model))
    _retie(m, tied)
    sparse, dense = layers(m, tied)
    weights = {n: _weight(m, n) for n in sparse}
    masks = {n: mask_2of4(w) for n, w in weights.items()}

    def apply_masks() -> None:
        with torch.no_grad():
            for n, w in weights.items():
                w.mul_(masks[n])

    apply_masks()
    n_steps, how = _finetune(m, source, steps, apply_masks)
    m.eval()
    settings: dict[str, Any] = {"pattern": PATTERN, "sparse_layers": len(sparse), "finetune_steps": n_steps,
                                "finetune": how, "mask": "the 2 of largest magnitude in each group of 4 inputs, "
                                "fixed during the fine-tune", "runs_as": "dense fp32 (rebuilt when loaded)",
                                "gpu": "torch.sparse.to_sparse_semi_structured on CUDA fp16/bf16 (not measured)"}
    if dense:
        settings["dense_layers"] = dense
        settings["dense_why"] = "input width not a multiple of 4"
    if tied:
        settings["tied_heads"] = "dense, shared with the embedding"
    return Variant(f"2:4 sparse ({len(sparse)} layers, size only)", "prune", BACKEND, TorchRunner(m),
                   lambda f: write_sparse24(m, f, masks, tied), source.spec, settings, m, module_bytes(m),
                   [SIZE_ONLY])


def _finetune(model: nn.Module, source: Source, steps: int | None, after_step: Any) -> tuple[int, str]:
    """Fine-tune with the masks kept: (steps run, how)."""
    from lmdev.compress import finetune as ft

    if source.spec.kind == "hf":
        if source.data is None:
            return 0, "none (an hf: source needs --data to fine-tune on)"
        n = steps if steps is not None else ft.LM_STEPS
        if n:
            ft.finetune_lm(model, source.data.train, n, after_step=after_step)
        return n, f"{ft.lm_finetune_text(source.data.train)}; mask re-applied after each step"
    if source.train_config is None or source.data is None:
        return 0, "none (the source has no training config and data)"
    n = steps if steps is not None else ft.default_steps(source)
    if n:
        ft.finetune(model, source, n, plan=ft.RECOVERY, after_step=after_step)
    return n, f"the run's own optimizer, loss and data, lr {ft.RECOVERY.describe()}; mask re-applied after each step"


# --------------------------------------------------------------------------- storage


def write_sparse24(model: nn.Module, folder: Path, masks: dict[str, torch.Tensor],
                   tied: dict[str, str]) -> dict[str, Any]:
    state = formats.unique_tensors(model.state_dict())
    out: dict[str, torch.Tensor] = {}
    shapes = {}
    for name, mask in masks.items():
        w = state.pop(f"{name}.weight")
        out[f"{name}.weight.values"], out[f"{name}.weight.positions"] = pack(w, mask)
        shapes[name] = list(w.shape)
    save_file({**state, **out}, str(folder / "model.safetensors"))
    load: dict[str, Any] = {"format": BACKEND, "dtype": "float32", "pattern": PATTERN, "sparse_layers": shapes}
    if tied:
        load["tied_heads"] = dict(tied)
    return load


def read_sparse24(folder: Path, spec: ModelSpec, load: dict[str, Any]) -> nn.Module:
    """The 2:4 model, each sparse weight rebuilt dense from its kept values and positions."""
    stored = formats.StoredTensors(folder / "model.safetensors")
    shapes: dict[str, list[int]] = load["sparse_layers"]
    packed = {f"{n}.weight.{part}" for n in shapes for part in ("values", "positions")}
    state = {k: stored.get(k) for k in stored.keys() if k not in packed}
    for name, shape in shapes.items():
        state[f"{name}.weight"] = unpack(stored.get(f"{name}.weight.values"), stored.get(f"{name}.weight.positions"),
                                         shape)
    with formats.parameters_on_meta():
        model = transforms.linearize(spec.build())
    _retie(model, load.get("tied_heads") or {})
    formats.load_assigned(model, state)
    return formats.ready(model)


def is_2of4(w: torch.Tensor) -> bool:
    """Whether every group of 4 consecutive inputs of ``w`` ([out, in]) has at most 2 nonzeros."""
    return w.dim() == 2 and w.shape[1] % 4 == 0 and bool(((w.reshape(-1, 4) != 0).sum(1) <= 2).all())


def use_sparse_kernels(model: nn.Module) -> int:
    """On CUDA, in fp16 / bf16: swap each 2:4 Linear weight for a ``to_sparse_semi_structured`` one
    (sparse tensor cores, NVIDIA Ampere or newer). Call after ``model.cuda().half()``; a layer the
    kernels refuse (shape, dtype, GPU) stays dense. Returns how many layers were swapped; 0 on a CPU.
    Not measured: lmdev was built on machines without a GPU."""
    if not torch.cuda.is_available():
        return 0
    from torch.sparse import to_sparse_semi_structured

    swapped = 0
    for lin in [m for m in model.modules() if isinstance(m, nn.Linear)]:
        w = lin.weight
        if not w.is_cuda or w.dtype not in (torch.float16, torch.bfloat16) or not is_2of4(w):
            continue
        try:
            lin.weight = nn.Parameter(to_sparse_semi_structured(w.detach()), requires_grad=False)
        except (RuntimeError, ValueError, NotImplementedError):
            continue
        swapped += 1
    return swapped
