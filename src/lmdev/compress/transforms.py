"""Model rewrites the quantisers need, shared by making a variant and loading it back.

- ``linearize``: GPT-2-style ``Conv1D`` layers (weight stored [in, out]) become ``nn.Linear``
  (weight [out, in]): ``torch.ao`` and torchao only quantise ``nn.Linear``, so without this
  GPT-2's blocks stay fp32 and only the head is quantised.
- output heads tied to an embedding get their own copy of the weight, so the head can be int8
  while the embedding lookup stays exact.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import torch
from torch import nn


def linearize(model: nn.Module) -> nn.Module:
    """Replace Conv1D layers by equivalent nn.Linear ones and untie heads from embeddings (in place)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            conv = _conv1d_params(child)
            if conv is not None:
                weight, bias = conv
                n_in, n_out = weight.shape
                lin = nn.Linear(n_in, n_out, bias=bias is not None)
                with torch.no_grad():
                    lin.weight.copy_(weight.t())
                    if bias is not None:
                        lin.bias.copy_(bias)
                setattr(parent, name, lin)
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for m in model.modules():
        if isinstance(m, nn.Linear) and id(m.weight) in embeddings:
            m.weight = nn.Parameter(m.weight.detach().clone())
    return model


def replace(model: nn.Module, name: str, value: nn.Module | nn.Parameter) -> None:
    """Put ``value`` in place of ``model``'s submodule or parameter at the dotted ``name``."""
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent), attr, value)


def tied_heads(model: nn.Module) -> dict[str, str]:
    """{head Linear's name: the Embedding's name} for every output head sharing an embedding's weight."""
    embeddings = {id(m.weight): n for n, m in model.named_modules() if isinstance(m, nn.Embedding)}
    return {n: embeddings[id(m.weight)] for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and id(m.weight) in embeddings}


def _conv1d_params(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(weight [in, out], bias) of a GPT-2-style 2-D ``Conv1D`` layer; None for any other module."""
    if type(module).__name__ != "Conv1D" or not hasattr(module, "nf"):
        return None
    # torch types Module attributes as Tensor | Module; a Conv1D's weight and bias are parameters
    weight = cast(torch.Tensor, module.weight)
    if weight.dim() != 2:
        return None
    return weight, cast("torch.Tensor | None", module.bias)


def observe(model: nn.Module, hooks: list[Any], batches: list[torch.Tensor]) -> None:
    """Run ``model`` (in eval mode, without gradients) on ``batches`` so that its registered
    ``hooks`` see them; the hooks are removed and the model's mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def quiet() -> Any:
    """Silence the deprecation chatter of torch.ao / torchao / the ONNX exporter."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    return ctx


def torch_ao_int8(model: nn.Module) -> nn.Module:
    """torch.ao dynamic quantisation of every nn.Linear: int8 weights, activations quantised on the fly."""
    ctx = quiet()
    try:
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    finally:
        ctx.__exit__(None, None, None)


def torchao_int8(model: nn.Module) -> nn.Module:
    """torchao int8 dynamic-activation / int8-weight quantisation of every nn.Linear (in place)."""
    import logging

    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    ctx = quiet()
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

        quantize_(model, Int8DynamicActivationInt8WeightConfig())
        return model
    finally:
        ctx.__exit__(None, None, None)


def has_int8(model: nn.Module) -> bool:
    """True when the model already holds int8 (torch.ao or torchao) weights."""
    for m in model.modules():
        if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            return True
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and type(w).__module__.startswith("torchao"):
            return True
    return False


class ExportRMSNorm(nn.Module):
    """RMSNorm written with elementary operators, for exporters that lack ``aten::rms_norm``."""

    def __init__(self, weight: torch.Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class ExportCausalLM(nn.Module):
    """A transformers causal LM called with an explicit all-ones attention mask: without one,
    transformers looks for packed sequences with ``aten::diff``, which ONNX cannot export."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.inner(input_ids=idx, attention_mask=torch.ones_like(idx), use_cache=False).logits


def export_friendly(model: nn.Module) -> nn.Module:
    """Swap modules the ONNX exporter cannot export for equivalent ones (in place, except an
    HF causal LM, which is wrapped)."""
    if type(model).__name__ == "HFCausalLM":
        model = ExportCausalLM(model.inner)  # type: ignore[arg-type]
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "RMSNorm" and hasattr(child, "eps") and hasattr(child, "weight"):
                # an RMSNorm's weight is a parameter and its eps a float or None (torch types both Tensor | Module)
                weight, eps = cast(torch.Tensor, child.weight), cast("float | None", child.eps)
                setattr(parent, name, ExportRMSNorm(weight, float(eps or 1e-6)))
    return model
