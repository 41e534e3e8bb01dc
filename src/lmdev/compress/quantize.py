"""Quantisation candidates. Each builds a variant from the fp32 model or raises BackendFailed
saying why; the caller measures every one and keeps what pays.

- ``bf16`` / ``fp16``: the whole model cast; kept only when measured faster (fp16 matmuls on most
  CPUs are emulated and many times slower);
- ``torch.ao-int8``: ``torch.ao.quantization.quantize_dynamic`` after Conv1D -> Linear;
- ``torchao-int8``: torchao's int8 dynamic-activation / int8-weight (needs the torchao package);
- ``onnxruntime-fp32`` / ``onnxruntime-int8``: ONNX export, then ONNX Runtime (int8 by its
  dynamic quantiser);
- ``int4-weights``: every weight matrix stored as group-wise int4 in safetensors, dequantised to
  fp32 when loaded: a size-only variant (it runs at fp32 speed, with fp32 memory).
- ``torch-fp8``: float8_e4m3fn weights with per-row scales, per-token fp8 activations,
  ``torch._scaled_mm`` (lmdev.compress.fp8). Fast only on GPUs with fp8 tensor cores; elsewhere it is
  made and measured like the others and reported as it is.
2:4 semi-structured sparsity is a pruning method (``--prune 2:4``, lmdev.compress.sparse24)."""

from __future__ import annotations

import copy
import importlib.util
import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmdev.compress import formats, onnxshare, transforms
from lmdev.compress.fp8 import fp8_variant
from lmdev.compress.source import ModelSpec
from lmdev.compress.variant import TorchRunner, Variant, module_bytes
from lmdev.errors import LmdevError


class BackendFailed(Exception):
    """A backend could not make its variant here; the message says why."""


BACKENDS = ["torch-bf16", "torch-fp16", "torch.ao-int8", "torchao-int8", "onnxruntime-fp32", "onnxruntime-int8",
            "int4-weights", "torch-fp8"]


def check_quantizable(model: nn.Module, method: dict[str, Any] | None) -> None:
    if transforms.has_int8(model) or (method and method.get("dtype") == "int8"):
        raise LmdevError("the model is already quantised to int8", "quantise its fp32 source instead")
    if method and method.get("dtype") == "fp8-e4m3":
        raise LmdevError("the model is already quantised to fp8", "quantise its fp32 source instead")


def candidates(spec: ModelSpec, model: nn.Module, example: torch.Tensor, workdir: Path,
               backend: str | None = None) -> list[tuple[str, Callable[[], Variant]]]:
    """(backend, factory) for each backend that applies, or only ``backend`` when forced."""
    makers: dict[str, Callable[[], Variant]] = {
        "torch-bf16": lambda: cast(spec, model, torch.bfloat16),
        "torch-fp16": lambda: cast(spec, model, torch.float16),
        "torch.ao-int8": lambda: ao_int8(spec, model),
        "torchao-int8": lambda: torchao_int8(spec, model),
        "onnxruntime-fp32": lambda: onnx_variant(spec, model, example, workdir, int8=False),
        "onnxruntime-int8": lambda: onnx_variant(spec, model, example, workdir, int8=True),
        "int4-weights": lambda: int4_weights(spec, model),
        "torch-fp8": lambda: fp8_variant(spec, model),
    }
    if backend is not None:
        if backend not in makers:
            raise LmdevError(f"unknown quantisation backend {backend!r}", f"valid: {', '.join(BACKENDS)}")
        return [(backend, makers[backend])]
    return list(makers.items())


SLOW_DTYPE = 4.0  # a half-precision matmul this many times slower than fp32 is not worth measuring further


def matmul_slowdown(dtype: torch.dtype, n: int = 256) -> float:
    """How many times slower a matmul is in ``dtype`` than in fp32 here (measured, not read off
    CPU flags): without native bf16/fp16 units the half types run on slow reference kernels."""
    import time

    a = torch.randn(n, n)
    b = a.to(dtype)
    best = {}
    for x in (a, b):
        x @ x
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            x @ x
            times.append(time.perf_counter() - t0)
        best[x.dtype] = min(times)
    return best[dtype] / max(best[torch.float32], 1e-9)


def cast(spec: ModelSpec, model: nn.Module, dtype: torch.dtype, check_speed: bool = True) -> Variant:
    """The model cast to ``dtype``; refused up front when this CPU's matmul in it is far slower."""
    label = "bf16" if dtype == torch.bfloat16 else "fp16"
    slow = matmul_slowdown(dtype) if check_speed else 1.0
    if slow > SLOW_DTYPE:
        raise BackendFailed(f"a {label} matmul is {slow:.0f}x slower than fp32 on this CPU (no native {label} "
                            "units): no speed-up on this machine, not measured further")
    m = copy.deepcopy(model).to(dtype).eval()
    try:
        TorchRunner(m, dtype)(_probe_input(spec))
    except RuntimeError as exc:
        raise BackendFailed(f"{label} does not run here: {str(exc).splitlines()[0]}") from None
    return Variant(label, "quantize", f"torch-{label}", TorchRunner(m, dtype), lambda f: formats.write_torch(m, f),
                   spec, {"dtype": label}, m, module_bytes(m))


def _probe_input(spec: ModelSpec) -> torch.Tensor:
    if spec.kind == "hf" or spec.shape.get("kind") == "tokens":
        return torch.zeros(1, 4, dtype=torch.long)
    return torch.zeros(1, *spec.shape["input_shape"])


def ao_int8(spec: ModelSpec, model: nn.Module) -> Variant:
    """torch.ao dynamic int8 after Conv1D -> Linear. A head tied to the embedding is quantised once:
    the embedding reads the head's int8 values (``formats.Int8Lookup``): the matrix is stored and held once, in int8."""
    tied = transforms.tied_heads(model)
    fp32 = transforms.linearize(copy.deepcopy(model)).eval()
    n_linear = len(transforms.linear_names(fp32))
    if not n_linear:
        raise BackendFailed("the model has no Linear (or Conv1D) layer to quantise")
    try:
        q = transforms.torch_ao_int8(fp32)
    except (RuntimeError, AssertionError) as exc:
        raise BackendFailed(f"torch.ao dynamic quantisation failed: {str(exc).splitlines()[0]}") from None
    formats.int8_lookups(q, tied)
    lookups = sum(m.table.numel() for m in q.modules() if isinstance(m, formats.Int8Lookup))  # not in state_dict
    settings: dict[str, Any] = {"dtype": "int8", "layers": n_linear,
                                "scheme": "per-tensor affine weights, dynamic activations"}
    if tied:
        settings["embedding"] = "tied to the int8 head (rows read in int8 and dequantised)"
    return Variant("int8 dynamic (torch.ao)", "quantize", "torch.ao-int8", TorchRunner(q),
                   lambda f: formats.write_int8(q, fp32, f, "torch.ao-int8", tied), spec, settings,
                   q, module_bytes(q) + lookups)


def torchao_int8(spec: ModelSpec, model: nn.Module) -> Variant:
    if importlib.util.find_spec("torchao") is None:
        raise BackendFailed("torchao is not installed (pip install 'lmdev[compress]')")
    fp32 = transforms.linearize(copy.deepcopy(model)).eval()
    q = transforms.linearize(copy.deepcopy(model)).eval()
    try:
        transforms.torchao_int8(q)
        TorchRunner(q)(_probe_input(spec))
    except Exception as exc:  # torchao raises many kinds of errors on unsupported setups
        raise BackendFailed(f"torchao int8 failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    return Variant("int8 dyn-act/int8-weight (torchao)", "quantize", "torchao-int8", TorchRunner(q),
                   lambda f: formats.write_int8(q, fp32, f, "torchao-int8"), spec,
                   {"dtype": "int8", "scheme": "per-row symmetric weights, per-token dynamic activations"},
                   q, module_bytes(q))


def export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    tokens = not example.is_floating_point()
    axes = {"x": {0: "batch", 1: "sequence"} if tokens else {0: "batch"},
            "y": {0: "batch", 1: "sequence"} if tokens else {0: "batch"}}
    ctx = transforms.quiet()
    try:
        torch.onnx.export(model.eval(), (example,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    finally:
        ctx.__exit__(None, None, None)


def onnx_variant(spec: ModelSpec, model: nn.Module, example: torch.Tensor, workdir: Path, int8: bool) -> Variant:
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        raise BackendFailed("onnx and onnxruntime are not installed (pip install 'lmdev[compress]')")
    fp32_file = workdir / "fp32.onnx"
    if not fp32_file.exists():
        try:
            export_onnx(transforms.export_friendly(transforms.linearize(copy.deepcopy(model))), example[:1],
                        workdir / "export.onnx")
        except Exception as exc:  # the exporter fails in many ways on unsupported operators
            raise BackendFailed(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
        try:
            onnxshare.share_weights(workdir / "export.onnx", fp32_file)  # a tied head's matrix once
        except Exception:  # onnx could not rewrite it: the export as it is (larger, still right)
            shutil.copyfile(workdir / "export.onnx", fp32_file)
    path = fp32_file
    if int8:
        path = workdir / "int8.onnx"
        _onnx_int8(fp32_file, workdir / "int8-quantiser.onnx", path)
    try:
        session = formats.OnnxModel(path)
        session(example[:1])
    except Exception as exc:
        raise BackendFailed(f"ONNX Runtime cannot run the export: {str(exc).splitlines()[0][:200]}") from None
    label = "int8" if int8 else "fp32"
    load = {"dtype": label, "input": "int64 token ids [batch, sequence]" if not example.is_floating_point()
            else f"float32 {list(example.shape[1:])} per example"}
    return Variant(f"ONNX Runtime {label}", "quantize" if int8 else "export", f"onnxruntime-{label}", session,
                   partial(formats.write_onnx, path, load=load), spec,
                   {"dtype": label, "opset": 17}, None, path.stat().st_size)


def _onnx_int8(fp32_file: Path, tmp: Path, path: Path) -> None:
    """ONNX Runtime's dynamic int8 quantiser, the lookups of a shared matrix left to
    ``onnxshare.lookup_from_quantized`` (which points them at the head's int8 copy)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    ctx = transforms.quiet()
    logging.getLogger().setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32_file), str(tmp), weight_type=QuantType.QInt8,
                         nodes_to_exclude=onnxshare.shared_lookups(fp32_file))
    except Exception as exc:
        raise BackendFailed(f"ONNX Runtime int8 quantisation failed: {str(exc).splitlines()[0][:200]}") from None
    finally:
        ctx.__exit__(None, None, None)
    onnxshare.lookup_from_quantized(tmp, path)
    tmp.unlink()


def int4_weights(spec: ModelSpec, model: nn.Module) -> Variant:
    """Group-wise int4 storage of every weight matrix (tied ones once); measured as loaded: the
    weights dequantised to fp32, so the latency and memory are fp32's and only the file shrinks."""
    m = copy.deepcopy(model).eval()
    names = formats.int4_round_trip(m)
    if not names:
        raise BackendFailed("the model has no weight matrix large enough to store as int4")
    return Variant(f"int4 weights, groups of {formats.INT4_GROUP} (storage only)", "quantize", "int4-weights",
                   TorchRunner(m), lambda f: formats.write_int4(m, f), spec,
                   {"dtype": "int4", "group": formats.INT4_GROUP, "tensors": len(names),
                    "runs_as": "fp32 (dequantised when loaded)"},
                   m, module_bytes(m), notes=["size only: dequantised to fp32 when loaded, so it runs at fp32 speed "
                                              "with fp32 memory"])
