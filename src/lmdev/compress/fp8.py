"""fp8 (float8_e4m3fn) weights and activations: the ``torch-fp8`` backend.

Every ``nn.Linear`` (after ``transforms.linearize``: GPT-2's ``Conv1D`` too) becomes an
``Fp8Linear``: its weight stored as float8_e4m3fn with one fp32 scale per output row (the row's
largest magnitude / 448, e4m3's largest value). A call scales each token's activations the same way
on the fly, casts them to fp8 and multiplies with ``torch._scaled_mm`` (row-wise scales, fp32
accumulation), then adds the bias. A head tied to its embedding is stored once, in fp8: the
embedding reads its rows from the head (``Fp8Lookup``).

Where it runs fast: GPUs with fp8 tensor cores (NVIDIA Hopper / Ada or newer). On a CPU
``torch._scaled_mm`` works but has no fp8 units behind it, so the variant is measured like any
other and reported as it is (typically a quarter of the fp32 size, and slower). On CUDA the same
module calls ``torch._scaled_mm`` when the shapes fit its kernels (both dimensions multiples of 16);
that path is written for GPUs but not measured here (no GPU on the machines lmdev was built on).
Where ``torch._scaled_mm`` is missing or refuses a layer, the layer multiplies its dequantised
weight instead (fp32 activations), and the variant's settings say so.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from lmdev.compress import formats, transforms
from lmdev.compress.source import ModelSpec
from lmdev.compress.variant import TorchRunner, Variant, module_bytes

E4M3_MAX = 448.0  # the largest finite float8_e4m3fn value
FP8 = torch.float8_e4m3fn
SCALED_MM = "torch._scaled_mm (fp8 x fp8, row-wise scales, fp32 accumulation)"
DEQUANT = "dequantised weight, fp32 matmul"


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 [rows, cols], fp32 scales [rows]) of a 2-D tensor: each row scaled by its max |w| / 448."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / E4M3_MAX).clamp_min(1e-12)
    q = (w / scale[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(FP8)
    return q.contiguous(), scale.contiguous()


def _scaled_mm_ok(x: torch.Tensor, out_features: int) -> bool:
    """Whether ``torch._scaled_mm`` can take this call: it exists, and on CUDA the inner and output
    dimensions are multiples of 16 (its kernels' constraint; the CPU kernel takes any shape)."""
    if not hasattr(torch, "_scaled_mm"):
        return False
    return not x.is_cuda or (x.shape[-1] % 16 == 0 and out_features % 16 == 0)


class Fp8Linear(nn.Module):
    """A Linear holding float8_e4m3fn weights and fp32 per-row scales (``quantize_rows``)."""

    weight_fp8: torch.Tensor  # [out, in] float8_e4m3fn, a buffer
    weight_scale: torch.Tensor  # [out] fp32, a buffer

    def __init__(self, weight_fp8: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None,
                 kernel: str = SCALED_MM) -> None:
        super().__init__()
        self.register_buffer("weight_fp8", weight_fp8)
        self.register_buffer("weight_scale", weight_scale)
        self.bias = nn.Parameter(bias.detach(), requires_grad=False) if bias is not None else None
        self.in_features, self.out_features = weight_fp8.shape[1], weight_fp8.shape[0]
        self.kernel = kernel  # SCALED_MM, or DEQUANT where _scaled_mm failed on this layer

    @classmethod
    def from_linear(cls, lin: nn.Linear) -> Fp8Linear:
        q, scale = quantize_rows(lin.weight)
        return cls(q, scale, lin.bias.detach().clone() if lin.bias is not None else None)

    def dequantized(self) -> torch.Tensor:
        return self.weight_fp8.float() * self.weight_scale[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        y = None
        if self.kernel == SCALED_MM and _scaled_mm_ok(x2, self.out_features):
            try:
                y = self._fp8_matmul(x2)
            except RuntimeError:  # e.g. moved to a GPU whose kernels refuse it: dequantised from now on
                self.kernel = DEQUANT
        if y is None:
            y = nn.functional.linear(x2, self.dequantized().to(x2.dtype))
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def _fp8_matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """Per-token dynamic activation scales, both operands in fp8, ``torch._scaled_mm``."""
        xf = x2.float()
        sx = (xf.abs().amax(dim=1, keepdim=True) / E4M3_MAX).clamp_min(1e-12)
        x8 = (xf / sx).clamp(-E4M3_MAX, E4M3_MAX).to(FP8)
        # CUDA's row-wise scaled kernels write bf16 (not measured here); the CPU kernel writes fp32
        out_dtype = torch.bfloat16 if x2.is_cuda else torch.float32
        y = torch._scaled_mm(x8, self.weight_fp8.t(), scale_a=sx, scale_b=self.weight_scale[None, :].float(),
                             out_dtype=out_dtype)
        return y.to(x2.dtype) if x2.is_floating_point() else y

    def check_kernel(self) -> str | None:
        """Run one tiny call through ``torch._scaled_mm``; on failure switch this layer to DEQUANT and
        return why (None when it works)."""
        if not hasattr(torch, "_scaled_mm"):
            self.kernel = DEQUANT
            return "torch._scaled_mm does not exist in this torch"
        try:
            with torch.no_grad():
                self._fp8_matmul(torch.ones(2, self.in_features, device=self.weight_fp8.device))
        except (RuntimeError, TypeError, NotImplementedError) as exc:
            self.kernel = DEQUANT
            return f"torch._scaled_mm failed: {str(exc).splitlines()[0][:160]}"
        return None


class Fp8Lookup(nn.Module):
    """An embedding tied to an fp8 head, read from the head's fp8 rows and row scales: the tied
    matrix is held and stored once, in fp8."""

    table: torch.Tensor  # the head's weight_fp8, a buffer
    scale: torch.Tensor  # the head's weight_scale, a buffer

    def __init__(self, head: Fp8Linear) -> None:
        super().__init__()
        # not persistent: the file holds these as the head's
        self.register_buffer("table", head.weight_fp8, persistent=False)
        self.register_buffer("scale", head.weight_scale, persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        """The whole table dequantised (for code that reads an embedding's weight; the lookup does not)."""
        return self.table.float() * self.scale[:, None]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table[ids].float() * self.scale[ids][..., None]


def to_fp8(model: nn.Module, tied: dict[str, str]) -> tuple[list[str], list[str]]:
    """Replace every nn.Linear of a linearized ``model`` by an Fp8Linear (in place) and each embedding
    of ``tied`` ({head: embedding}) by an Fp8Lookup of its head. Returns (layers, why _scaled_mm
    failed for layers that fell back to DEQUANT)."""
    names = transforms.linear_names(model)
    failures = []
    for name in names:
        layer = Fp8Linear.from_linear(model.get_submodule(name))  # type: ignore[arg-type]
        why = layer.check_kernel()
        if why:
            failures.append(f"{name}: {why}")
        transforms.replace(model, name, layer)
    lookups(model, tied)
    return names, failures


def lookups(model: nn.Module, tied: dict[str, str]) -> None:
    for head, emb in tied.items():
        layer = model.get_submodule(head)
        assert isinstance(layer, Fp8Linear)
        transforms.replace(model, emb, Fp8Lookup(layer))


def fp8_variant(spec: ModelSpec, model: nn.Module) -> Variant:
    """The ``torch-fp8`` variant of ``model`` (raises quantize.BackendFailed when it cannot be made)."""
    from lmdev.compress.quantize import BackendFailed

    tied = transforms.tied_heads(model)
    m = transforms.linearize(copy.deepcopy(model)).eval()
    if not transforms.linear_names(m):
        raise BackendFailed("the model has no Linear (or Conv1D) layer to store in fp8")
    names, failures = to_fp8(m, tied)
    kernel = SCALED_MM if not failures else f"{DEQUANT} in {len(failures)} of {len(names)} layers " \
        f"(torch._scaled_mm failed there), {SCALED_MM} in the others"
    settings: dict[str, Any] = {"dtype": "fp8-e4m3", "layers": len(names), "kernel": kernel,
                                "scheme": "per-row weight scales (row max / 448), per-token dynamic activation "
                                          "scales"}
    if tied:
        settings["embedding"] = "tied to the fp8 head (rows read in fp8 and dequantised)"
    notes = [f"fell back to a dequantised fp32 matmul: {f}" for f in failures[:3]]
    if not torch.cuda.is_available():
        notes.append("no GPU here: torch._scaled_mm runs on the CPU without fp8 units (the CUDA path is "
                     "not measured)")
    return Variant("fp8 e4m3 (torch._scaled_mm)", "quantize", "torch-fp8", TorchRunner(m),
                   lambda f: write_fp8(m, f, names, tied), spec, settings, m, module_bytes(m), notes)


# --------------------------------------------------------------------------- storage


def write_fp8(model: nn.Module, folder: Path, layers: list[str], tied: dict[str, str]) -> dict[str, Any]:
    """Every tensor of the fp8 ``model`` (the Fp8Linear buffers as F8_E4M3 and fp32 scales, the rest
    as they are; a tied embedding not at all: it is read from its head)."""
    save_file(formats.unique_tensors(model.state_dict()), str(folder / "model.safetensors"))
    kernels = {n: model.get_submodule(n).kernel for n in layers}
    out: dict[str, Any] = {"format": "torch-fp8", "dtype": "fp8-e4m3", "fp8_layers": sorted(layers),
                           "dequantized_layers": sorted(n for n, k in kernels.items() if k != SCALED_MM)}
    if tied:
        out["embeddings_from_heads"] = dict(tied)
    return out


def read_fp8(folder: Path, spec: ModelSpec, load: dict[str, Any]) -> nn.Module:
    """The fp8 model from its folder: the architecture built without weights, linearized, each fp8
    layer made from its stored tensors, the rest taken as stored."""
    stored = formats.StoredTensors(folder / "model.safetensors")
    layers = load["fp8_layers"]
    dequantized = set(load.get("dequantized_layers") or [])
    with formats.parameters_on_meta():
        model = transforms.linearize(spec.build())
    parts = ("weight_fp8", "weight_scale", "bias")
    fp8_keys = {f"{name}.{part}" for name in layers for part in parts}
    formats.load_assigned(model, {k: stored.get(k) for k in stored.keys() if k not in fp8_keys})
    for name in layers:
        bias = stored.get(f"{name}.bias") if f"{name}.bias" in stored.header else None
        layer = Fp8Linear(stored.get(f"{name}.weight_fp8"), stored.get(f"{name}.weight_scale"), bias,
                          DEQUANT if name in dequantized else SCALED_MM)
        if layer.kernel == SCALED_MM:
            layer.check_kernel()
        transforms.replace(model, name, layer)
    lookups(model, load.get("embeddings_from_heads") or {})
    return formats.ready(model)
