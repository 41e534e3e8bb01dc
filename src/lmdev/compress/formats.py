"""How each kind of variant is stored and read back. Weights are safetensors (or ONNX); no pickle.

format        files               read back by
torch         model.safetensors   build the architecture without weights, take the stored tensors as its weights
torch.ao-int8 model.safetensors   build without weights, linearize, put a torch.ao int8 Linear with the stored
                                  int8 weight in each quantised layer's place, take the fp32 rest as stored
torchao-int8  model.safetensors   the same, each layer quantised by torchao one at a time, its int8 data set
int4-weights  model.safetensors   build without weights, unpack and dequantise the int4 groups as its weights
torch-fp8     model.safetensors   build without weights, linearize, an Fp8Linear from the stored float8_e4m3fn
                                  weight and row scales in each fp8 layer's place (lmdev.compress.fp8)
sparse-2:4    model.safetensors   build without weights, linearize, each 2:4 weight rebuilt dense from its kept
                                  values and packed positions (lmdev.compress.sparse24)
onnx          model.onnx          onnxruntime.InferenceSession

"Without weights": the architecture is built with its parameters on torch's ``meta`` device (no
memory, no random initialisation; buffers such as causal masks are built as usual), so loading a
variant never holds a full fp32 model beside the one it returns: an int8 variant peaks at its own
size plus one layer in fp32, not at fp32 plus int8.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lmdev.compress import transforms
from lmdev.compress.source import ModelSpec
from lmdev.errors import LmdevError

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
    with parameters_on_meta():
        model = spec.build()
    state = load_file(str(folder / "model.safetensors"))
    dtype = DTYPES[load.get("dtype", "float32")]
    load_assigned(model, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()})
    model.to(dtype)  # buffers built as usual (masks, rotary tables) follow the weights
    return ready(model)


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules whose parameters are placeholders on the ``meta`` device: no memory, no random
    initialisation. Buffers are made as usual: a checkpoint need not hold them (causal masks, rotary
    tables). Fill the placeholders with ``load_assigned``."""
    register = nn.Module.register_parameter

    def on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def load_assigned(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Take ``state``'s tensors as ``model``'s parameters and buffers (no copy); parameters that were
    one (a head tied to its embedding, stored once) are one again."""
    tied: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        tied.setdefault(id(p), []).append(name)
    model.load_state_dict(state, strict=False, assign=True)
    for names in tied.values():
        stored = next((n for n in names if n in state), None)
        if stored is None or len(names) < 2:
            continue
        param = model.get_parameter(stored)
        for n in names:
            transforms.replace(model, n, param)


def ready(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, once every parameter holds stored values (none left on ``meta``)."""
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise LmdevError(f"the variant's weights lack {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}",
                         "write the variant again with lmdev compress")
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
    """The int8 model, built layer by layer from the stored int8 weights: no fp32 model first, and
    each stored matrix read, turned into its int8 layer and dropped before the next is read."""
    fmt = load["format"]
    stored = StoredTensors(folder / "model.safetensors")
    layers = load["quantized_layers"]
    with parameters_on_meta():
        model = transforms.linearize(spec.build())
    parts = ("int8", "scale", "zero_point", "bias")
    int8_keys = {f"{name}.weight.{part}" for name in layers for part in parts}
    load_assigned(model, {k: stored.get(k) for k in stored.keys() if k not in int8_keys})  # the fp32 rest
    make = _ao_int8_linear if fmt == "torch.ao-int8" else _torchao_int8_linear
    for name in layers:  # each quantised layer (still a meta placeholder) replaced by its int8 one
        tensors = {k: stored.get(k) for k in (f"{name}.weight.{part}" for part in parts) if k in stored.header}
        transforms.replace(model, name, make(_linear(model, name), tensors, name))
    if fmt == "torch.ao-int8":
        int8_lookups(model, load.get("embeddings_from_heads") or {})
    return ready(model)


class Int8Lookup(nn.Module):
    """An embedding tied to a torch.ao int8 head, read from the head's int8 values: the rows are
    gathered in int8 and dequantised, so the tied matrix is held in int8 (one byte a value beside
    the head's packed copy), not again in fp32 (four)."""

    table: torch.Tensor  # int8 [vocabulary, width], a buffer

    def __init__(self, table: torch.Tensor, scale: float, zero_point: int) -> None:
        super().__init__()
        self.register_buffer("table", table.contiguous(), persistent=False)  # the file holds it as the head
        self.scale, self.zero_point = scale, zero_point

    @property
    def weight(self) -> torch.Tensor:
        """The whole table dequantised (for code that reads an embedding's weight; the lookup does not)."""
        return (self.table.float() - self.zero_point) * self.scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return (self.table[ids].float() - self.zero_point) * self.scale


def int8_lookups(model: nn.Module, pairs: dict[str, str]) -> None:
    """Replace each embedding of ``pairs`` ({int8 head: embedding}) by an Int8Lookup of its head."""
    for head, emb in pairs.items():
        w = cast("torch.ao.nn.quantized.dynamic.Linear", model.get_submodule(head)).weight()
        transforms.replace(model, emb, Int8Lookup(w.int_repr(), w.q_scale(), w.q_zero_point()))


class StoredTensors:
    """A safetensors file read one tensor at a time with plain reads, not a memory map: a tensor read
    and dropped leaves nothing resident (a mapped file keeps every page it touched resident until the
    last tensor of the file is gone), so the int8 loader holds one stored layer at a time."""

    DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn}

    def __init__(self, path: Path) -> None:
        from lmdev.secure.formats import scan_safetensors  # the checks safetensors makes before mapping

        with open(path, "rb") as f:
            problems = scan_safetensors(f, path.stat().st_size)
            if problems:
                raise LmdevError(f"{path} is not a valid safetensors file ({problems[0].message})",
                                 "write the variant again with lmdev compress")
            f.seek(0)
            n = int.from_bytes(f.read(8), "little")
            self.header: dict[str, Any] = json.loads(f.read(n))
        self.header.pop("__metadata__", None)
        odd = sorted({e["dtype"] for e in self.header.values()} - set(self.DTYPES))
        if odd:
            raise LmdevError(f"{path} holds tensors of dtype {', '.join(odd)}, which an lmdev variant never writes",
                             "write the variant again with lmdev compress")
        self.path, self.start = path, 8 + n

    def keys(self) -> list[str]:
        return list(self.header)

    def get(self, name: str) -> torch.Tensor:
        entry = self.header[name]
        begin, end = entry["data_offsets"]
        t = torch.empty(entry["shape"], dtype=self.DTYPES[entry["dtype"]])
        if end > begin:
            buf: Any = t.view(-1).view(torch.uint8).numpy()  # the tensor's own bytes, written in place
            with open(self.path, "rb") as f:
                f.seek(self.start + begin)
                if f.readinto(buf) != end - begin:
                    raise LmdevError(f"{self.path}: {name} is cut short", "write the variant again with lmdev compress")
        return t


def _ao_int8_linear(lin: nn.Linear, tensors: dict[str, torch.Tensor], name: str) -> nn.Module:
    """A torch.ao dynamic int8 Linear holding the stored int8 weight of layer ``name``, as
    ``quantize_dynamic`` made it (the dequantised weight quantised again gives the same int8)."""
    scale = float(tensors[f"{name}.weight.scale"][0])
    zp = int(tensors[f"{name}.weight.zero_point"][0])
    q = torch.quantize_per_tensor(_dequant(tensors, name, "torch.ao-int8"), scale, zp, torch.qint8)
    m = torch.ao.nn.quantized.dynamic.Linear(lin.in_features, lin.out_features, bias_=lin.bias is not None,
                                             dtype=torch.qint8)
    m.set_weight_bias(q, tensors.get(f"{name}.weight.bias"))
    return m


def _torchao_int8_linear(lin: nn.Linear, tensors: dict[str, torch.Tensor], name: str) -> nn.Module:
    """One Linear quantised by torchao from the dequantised stored weight, its int8 data then set to
    the stored values exactly."""
    real = torch.nn.utils.skip_init(nn.Linear, lin.in_features, lin.out_features, bias=lin.bias is not None)
    with torch.no_grad():
        real.weight.copy_(_dequant(tensors, name, "torchao-int8").view_as(real.weight))
        if real.bias is not None:
            real.bias.copy_(tensors[f"{name}.weight.bias"])
    transforms.torchao_int8(real)
    with torch.no_grad():
        qw: Any = real.weight  # a torchao quantised tensor subclass
        qw.qdata.copy_(tensors[f"{name}.weight.int8"])
        qw.scale.copy_(tensors[f"{name}.weight.scale"])
        qw.zero_point.copy_(tensors[f"{name}.weight.zero_point"])
    return real.eval()


def _linear(model: nn.Module, name: str) -> nn.Linear:
    """The layer ``name`` of ``model``: a manifest's quantized_layers only names nn.Linear layers
    (``linearize`` turned any Conv1D into one; torchao keeps the Linear, swapping its weight)."""
    return cast(nn.Linear, model.get_submodule(name))


def _dequant(tensors: dict[str, torch.Tensor], name: str, fmt: str) -> torch.Tensor:
    q = tensors[f"{name}.weight.int8"].float()
    scale, zp = tensors[f"{name}.weight.scale"], tensors[f"{name}.weight.zero_point"]
    if fmt == "torch.ao-int8":
        return q.sub_(float(zp[0])).mul_(float(scale[0]))  # in place: one fp32 copy of the layer at a time
    return q.sub_(zp.float()).mul_(scale.float())


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
    w = u.to(torch.float32).sub_(8.0).mul_(scale.float().unsqueeze(-1))  # in place: one fp32 copy at a time
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
    stored = StoredTensors(folder / "model.safetensors")  # plain reads: the packed int4 is not kept
    group = int(load.get("group", INT4_GROUP))
    state = {k: stored.get(k) for k in stored.keys() if not k.endswith((".int4", ".int4_scale"))}
    for name, shape in load["int4_tensors"].items():
        state[name] = int4_dequantize(stored.get(f"{name}.int4"), stored.get(f"{name}.int4_scale"), shape, group)
    with parameters_on_meta():
        model = spec.build()
    load_assigned(model, state)
    return ready(model)


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
    if fmt == "torch-fp8":
        from lmdev.compress.fp8 import read_fp8

        return read_fp8(folder, spec, load)
    if fmt == "sparse-2:4":
        from lmdev.compress.sparse24 import read_sparse24

        return read_sparse24(folder, spec, load)
    if fmt == "onnx":
        return OnnxModel(folder / "model.onnx")
    from lmdev.errors import LmdevError

    raise LmdevError(f"{folder}: unknown variant format {fmt!r}", "it was written by a newer lmdev")
