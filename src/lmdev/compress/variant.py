"""A compressed variant of a model: how it runs (a callable from inputs to fp32 outputs), how it
is written to a folder, and how it was made. The baseline is a variant too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmdev.compress.source import ModelSpec

Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Variant:
    name: str  # "int8 dynamic (torch.ao)"
    method: str  # "baseline" | "quantize" | "prune" | "distill"
    backend: str  # "torch-fp32", "torch-bf16", "torch.ao-int8", "torchao-int8", "onnxruntime-int8", ...
    runner: Runner
    write: Callable[[Path], dict[str, Any]]  # writes the weights into a folder; returns the manifest's "load"
    spec: ModelSpec  # the architecture before any quantisation (a pruned one when pruned)
    settings: dict[str, Any] = field(default_factory=dict)
    module: nn.Module | None = None  # the runnable torch module, when there is one
    memory_bytes: int = 0  # bytes of weights the variant holds in memory
    notes: list[str] = field(default_factory=list)


class TorchRunner:
    """Runs a module without autograd; float inputs are cast to ``input_dtype``; outputs are fp32."""

    def __init__(self, module: nn.Module, input_dtype: torch.dtype | None = None) -> None:
        self.module = module.eval()
        self.input_dtype = input_dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            if self.input_dtype is not None and x.is_floating_point():
                x = x.to(self.input_dtype)
            return self.module(x).float()


def tensor_bytes(obj: Any) -> int:
    """Bytes held by the tensors in a state dict (quantised and subclass tensors included)."""
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    if isinstance(obj, torch.Tensor):
        if hasattr(obj, "__tensor_flatten__") and type(obj) is not torch.Tensor and not isinstance(obj, nn.Parameter):
            names, _ = obj.__tensor_flatten__()
            return sum(tensor_bytes(getattr(obj, n)) for n in names)
        if obj.is_quantized:
            return obj.numel() * obj.element_size()
        return obj.numel() * obj.element_size()
    return 0


def module_bytes(module: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for t in list(module.state_dict(keep_vars=True).values()):
        if isinstance(t, torch.Tensor):
            key = id(t)
            if key in seen:
                continue
            seen.add(key)
        total += tensor_bytes(t)
    return total
