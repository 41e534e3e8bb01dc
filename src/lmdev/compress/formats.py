"""How each kind of variant is stored and read back. Weights are safetensors (or ONNX); no pickle.

format        files               read back by
torch         model.safetensors   build the architecture, cast to dtype, load the weights
torch.ao-int8 model.safetensors   build, linearize, load fp32 parts, quantize_dynamic, set the stored int8 weights
torchao-int8  model.safetensors   build, linearize, load fp32 parts, torchao quantize_, set the stored int8 weights
int4-weights  model.safetensors   build, load the fp32 parts, unpack and dequantise the int4 groups
onnx          model.onnx          onnxruntime.InferenceSession
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lmdev.compress import transforms
from lmdev.compress.source import ModelSpec

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict safetensors accepts: tied tensors are stored once (the later names dropped)."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        if v.data_ptr() in seen and v.numel():
            continue
        seen.add(v.data_ptr())
        out[k] = v.detach().contiguous().cpu()
    return out


# --------------------------------------------------------------------------- plain torch


def write_torch(module: nn.Module, folder: Path) -> dict[str, Any]:
    dtype = next((p.dtype for p in module.parameters()), torch.float32)
    save_file(unique_tensors(module.state_dict()), str(folder / "model.safetensors"))
    name = {v: k for k, v in DTYPES.items()}[dtype]
    return {"format": "torch", "dtype": name}


def read_torch(folder: Path, spec: ModelSpec, load: dict[str, Any]) -> nn.Module:
    model = spec.build().to(DTYPES[load.get("dtype", "float32")])
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    return model.eval()


# --------------------------------------------------------------------------- int8


def write_int8(quantized: nn.Module, fp32_rest: nn.Module, folder: Path, fmt: str,
               tied: dict[str, str] | None = None) -> dict[str, Any]:
    """``quantized``: the int8 model; ``fp32_rest``: the linearized fp32 model it came from (for the
    tensors that stayed fp32); ``tied``: {int8 head: embedding} whose embedding is the head's
    dequantised weight, so it is not stored."""
    int8 = _int8_tensors(quantized, fmt)
    quantized_names = {k.rsplit(".", 2)[0] for k in int8}
    skip = {f"{emb}.weight" for emb in (tied or {}).values()}
    rest = {k: v for k, v in fp32_rest.state_dict().items()
            if k.rsplit(".", 1)[0] not in quantized_names and k not in skip}
    save_file({**unique_tensors(rest), **int8}, str(folder / "model.safetensors"))
    out: dict[str, Any] = {"format": fmt, "dtype": "int8", "quantized_layers": sorted(quantized_names)}
    if tied:
        out["embeddings_from_heads"] = dict(tied)
    return out


def _int8_tensors(model: nn.Module, fmt: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if fmt == "torch.ao-int8" and isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
            w, b = m.weight(), m.bias()
            out[f"{name}.weight.int8"] = w.int_repr().contiguous()
            out[f"{name}.weight.scale"] = torch.tensor([w.q_scale()], dtype=torch.float64)
            out[f"{name}.weight.zero_point"] = torch.tensor([w.q_zero_point()], dtype=torch.int64)
            if b is not None:
                out[f"{name}.weight.bias"] = b.detach().contiguous()
        elif fmt == "torchao-int8" and isinstance(m, nn.Linear) and hasattr(m.weight, "qdata"):
            qw: Any = m.weight  # a torchao quantised tensor subclass: qdata, scale, zero_point are its own
            out[f"{name}.weight.int8"] = qw.qdata.contiguous()
            out[f"{name}.weight.scale"] = qw.scale.contiguous()
            out[f"{name}.weight.zero_point"] = qw.zero_point.contiguous()
            if m.bias is not None:
                out[f"{name}.weight.bias"] = m.bias.detach().contiguous()
    return out


def read_int8(folder: Path, spec: ModelSpec, load: dict[str, Any]) -> nn.Module:
    fmt = load["format"]
    tensors = load_file(str(folder / "model.safetensors"))
    model = transforms.linearize(spec.build())
    layers = load["quantized_layers"]
    fp32 = {k: v for k, v in tensors.items() if k.rsplit(".", 2)[0] not in layers or ".weight." not in k}
    with torch.no_grad():
        for name in layers:
            lin = _linear(model, name)
            lin.weight.copy_(_dequant(tensors, name, fmt).view_as(lin.weight))
            if f"{name}.weight.bias" in tensors:
                lin.bias.copy_(tensors[f"{name}.weight.bias"])
    model.load_state_dict(fp32, strict=False)
    model.eval()
    if fmt == "torch.ao-int8":
        model = transforms.torch_ao_int8(model)
        for name in layers:
            m = cast("torch.ao.nn.quantized.dynamic.Linear", model.get_submodule(name))  # torch_ao_int8 made it one
            scale = float(tensors[f"{name}.weight.scale"][0])
            zp = int(tensors[f"{name}.weight.zero_point"][0])
            q = torch.quantize_per_tensor(_dequant(tensors, name, fmt), scale, zp, torch.qint8)
            m.set_weight_bias(q, tensors.get(f"{name}.weight.bias"))
        transforms.embed_from_int8_heads(model, load.get("embeddings_from_heads") or {})
    else:
        model = transforms.torchao_int8(model)
        with torch.no_grad():
            for name in layers:
                qw: Any = _linear(model, name).weight  # a torchao quantised tensor subclass
                qw.qdata.copy_(tensors[f"{name}.weight.int8"])
                qw.scale.copy_(tensors[f"{name}.weight.scale"])
                qw.zero_point.copy_(tensors[f"{name}.weight.zero_point"])
    return model.eval()


def _linear(model: nn.Module, name: str) -> nn.Linear:
    """The layer ``name`` of ``model``: a manifest's quantized_layers only names nn.Linear layers
    (``linearize`` turned any Conv1D into one; torchao keeps the Linear, swapping its weight)."""
    return cast(nn.Linear, model.get_submodule(name))


def _dequant(tensors: dict[str, torch.Tensor], name: str, fmt: str) -> torch.Tensor:
    q = tensors[f"{name}.weight.int8"].float()
    scale, zp = tensors[f"{name}.weight.scale"], tensors[f"{name}.weight.zero_point"]
    if fmt == "torch.ao-int8":
        return (q - float(zp[0])) * float(scale[0])
    return (q - zp.float()) * scale.float()


# --------------------------------------------------------------------------- int4 storage

INT4_GROUP = 32  # weights per scale: symmetric int4 in groups of 32 along a matrix's last dimension
INT4_MIN_NUMEL = 1024  # smaller tensors (biases, norms, tiny matrices) stay fp32


def int4_quantize(w: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed uint8 [rows, ceil(cols/group)*group/2], fp16 scales [rows, groups]) of a 2-D tensor:
    each group of ``group`` values is scaled by max|w|/7 and rounded to -8..7, two values per byte."""
    rows, cols = w.shape
    padded = -(-cols // group) * group
    g = torch.nn.functional.pad(w.detach().float(), (0, padded - cols)).view(rows, -1, group)
    scale = (g.abs().amax(-1, keepdim=True) / 7.0).to(torch.float16).float()
    q = torch.where(scale > 0, torch.round(g / scale.clamp_min(1e-30)), torch.zeros_like(g)).clamp(-8, 7)
    u = (q.to(torch.int16) + 8).to(torch.uint8).view(rows, padded)
    return (u[:, 0::2] | (u[:, 1::2] << 4)).contiguous(), scale.squeeze(-1).to(torch.float16).contiguous()


def int4_dequantize(packed: torch.Tensor, scale: torch.Tensor, shape: list[int],
                    group: int = INT4_GROUP) -> torch.Tensor:
    """The fp32 tensor of ``shape`` that ``int4_quantize`` packed (exactly what was measured)."""
    rows, cols = shape
    u = torch.stack([packed & 0x0F, packed >> 4], dim=-1).view(rows, -1, group)
    w = (u.to(torch.float32) - 8.0) * scale.float().unsqueeze(-1)
    return w.view(rows, -1)[:, :cols].contiguous()


def int4_targets(state: dict[str, torch.Tensor]) -> list[str]:
    """The tensors stored as int4: float matrices of at least INT4_MIN_NUMEL values."""
    return [k for k, v in state.items() if v.dim() == 2 and v.is_floating_point() and v.numel() >= INT4_MIN_NUMEL]


def int4_round_trip(module: nn.Module) -> list[str]:
    """Replace every int4 target weight of ``module`` by its int4 round trip (in place; tied
    weights once); returns the names quantised."""
    state = unique_tensors(module.state_dict())
    names = int4_targets(state)
    params = dict(module.named_parameters(remove_duplicate=False)) | dict(module.named_buffers())
    with torch.no_grad():
        for name in names:
            w = params[name]
            w.copy_(int4_dequantize(*int4_quantize(w), list(w.shape)).to(w.dtype))
    return names


def write_int4(module: nn.Module, folder: Path) -> dict[str, Any]:
    state = unique_tensors(module.state_dict())
    names = set(int4_targets(state))
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k in names:
            out[f"{k}.int4"], out[f"{k}.int4_scale"] = int4_quantize(v)
        else:
            out[k] = v
    save_file(out, str(folder / "model.safetensors"))
    return {"format": "int4-weights", "dtype": "int4", "group": INT4_GROUP,
            "int4_tensors": {k: list(state[k].shape) for k in sorted(names)}}


def read_int4(folder: Path, spec: ModelSpec, load: dict[str, Any]) -> nn.Module:
    tensors = load_file(str(folder / "model.safetensors"))
    group = int(load.get("group", INT4_GROUP))
    state = {k: v for k, v in tensors.items() if not k.endswith((".int4", ".int4_scale"))}
    for name, shape in load["int4_tensors"].items():
        state[name] = int4_dequantize(tensors[f"{name}.int4"], tensors[f"{name}.int4_scale"], shape, group)
    model = spec.build()
    model.load_state_dict(state, strict=False)
    return model.eval()


# --------------------------------------------------------------------------- onnx


def write_onnx(onnx_file: Path, folder: Path, load: dict[str, Any]) -> dict[str, Any]:
    shutil.copyfile(onnx_file, folder / "model.onnx")
    return {**load, "format": "onnx"}


class OnnxModel:
    """An ONNX Runtime session that takes and returns torch tensors, like the torch variants."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu()
        arr = x.numpy() if not x.is_floating_point() else x.float().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0]).float()


def read_any(folder: Path, spec: ModelSpec, load: dict[str, Any]) -> Any:
    fmt = load["format"]
    if fmt == "torch":
        return read_torch(folder, spec, load)
    if fmt in ("torch.ao-int8", "torchao-int8"):
        return read_int8(folder, spec, load)
    if fmt == "int4-weights":
        return read_int4(folder, spec, load)
    if fmt == "onnx":
        return OnnxModel(folder / "model.onnx")
    from lmdev.errors import LmdevError

    raise LmdevError(f"{folder}: unknown variant format {fmt!r}", "it was written by a newer lmdev")
