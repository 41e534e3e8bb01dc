"""Header checks of the non-pickle formats: numpy .npy, safetensors, GGUF, ONNX, Keras configs.

Each function reads only the header it judges and returns findings (empty: safe).
"""

from __future__ import annotations

import ast
import json
import math
import os
import struct
from pathlib import PurePosixPath, PureWindowsPath
from typing import IO, Any

from lmdev.secure.pickles import PickleVerdict, scan_pickles
from lmdev.secure.types import Finding

NPY_MAGIC = b"\x93NUMPY"
GGUF_MAGIC = b"GGUF"
MAX_HEADER = 100 * 1024 * 1024          # safetensors' own limit on its JSON header
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
                      "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4,
                      "I64": 8, "U64": 8, "F64": 8, "C64": 8, "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1}


def _broken(message: str, member: str | None = None, pos: int | None = 0) -> list[Finding]:
    return [Finding("broken", message, pos, member)]


def scan_npy(f: IO[bytes], size: int, member: str | None = None) -> tuple[list[Finding], set[str]]:
    """A .npy header: an object dtype means np.load(allow_pickle=True) unpickles the data."""
    head = f.read(8)
    if len(head) < 8 or head[:6] != NPY_MAGIC or head[6] not in (1, 2, 3):
        return _broken("not a valid .npy header", member), set()
    if head[6] == 1:
        (hlen,) = struct.unpack("<H", f.read(2))
    else:
        (hlen,) = struct.unpack("<I", f.read(4))
    try:
        header = ast.literal_eval(f.read(hlen).decode("latin-1" if head[6] < 3 else "utf-8"))
        import numpy as np

        dtype = np.lib.format.descr_to_dtype(header["descr"])
        shape = tuple(int(s) for s in header["shape"])
    except Exception as exc:  # a header that is not the documented dict literal
        return _broken(f".npy header does not parse: {exc}", member), set()
    if dtype.hasobject:
        verdict = PickleVerdict()
        start = f.tell()
        scan_pickles(f, verdict, member, max_streams=1)
        names = ", ".join(f.callable for f in verdict.findings if f.callable) or "none it names"
        return [Finding("object-array", f"object array: numpy.load(allow_pickle=True) unpickles its "
                        f"data (unsafe callables: {names})", start, member)] + verdict.findings, verdict.callables
    need = f.tell() + math.prod(shape) * dtype.itemsize
    if size >= 0 and need > size:
        return _broken(f".npy data truncated: {size} bytes, header needs {need}", member), set()
    return [], set()


def scan_safetensors(f: IO[bytes], size: int) -> list[Finding]:
    """The checks safetensors makes before it maps a file: a sane header length, known dtypes,
    shape x dtype = byte length, offsets inside the file, tensors back to back with no overlap or gap."""
    raw = f.read(8)
    if len(raw) < 8:
        return _broken("shorter than a safetensors header")
    (n,) = struct.unpack("<Q", raw)
    if n > MAX_HEADER or n + 8 > size:
        return [Finding("header", f"header length {n} is not sane for a {size}-byte file", 0)]
    try:
        header = json.loads(f.read(n))
    except ValueError as exc:
        return [Finding("header", f"header is not JSON: {exc}", 8)]
    if not isinstance(header, dict):
        return [Finding("header", "header is not a JSON object", 8)]
    return _check_tensors(header, size - 8 - n)


def _check_tensors(header: dict[str, Any], data_len: int) -> list[Finding]:
    spans, out = [], []
    for name, info in header.items():
        if name == "__metadata__":
            if not (isinstance(info, dict) and all(isinstance(v, str) for v in info.values())):
                out.append(Finding("header", "__metadata__ is not a map of strings", 8))
            continue
        problem = _tensor_problem(name, info, data_len)
        if problem:
            out.append(Finding("header", problem, 8))
        else:
            spans.append((info["data_offsets"][0], info["data_offsets"][1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            what = "overlaps the tensor before it" if begin < end else f"leaves a gap of {begin - end} bytes"
            out.append(Finding("header", f"tensor {name!r} {what}", 8))
        end = max(end, stop)
    if not out and end != data_len:
        out.append(Finding("header", f"{data_len - end} bytes after the last tensor", 8))
    return out


def _tensor_problem(name: str, info: Any, data_len: int) -> str | None:
    if not isinstance(info, dict):
        return f"tensor {name!r}: entry is not an object"
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in SAFETENSORS_DTYPES:
        return f"tensor {name!r}: unknown dtype {dtype!r}"
    if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
        return f"tensor {name!r}: shape {shape!r} is not a list of sizes"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
        return f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end]"
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        return f"tensor {name!r}: offsets {offsets} fall outside the {data_len}-byte data"
    if (end - begin) != math.prod(shape) * SAFETENSORS_DTYPES[dtype] and dtype not in ("F4", "F6_E2M3", "F6_E3M2"):
        return f"tensor {name!r}: {end - begin} bytes, but shape {shape} of {dtype} needs " \
               f"{math.prod(shape) * SAFETENSORS_DTYPES[dtype]}"
    return None


def looks_like_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return n >= 2 and head[8:9] == b"{"  # the length itself is judged by scan_safetensors


def scan_gguf(f: IO[bytes], size: int) -> list[Finding]:
    """GGUF: magic, a known version, tensor and metadata counts the file could hold."""
    raw = f.read(24)
    if len(raw) < 24:
        return _broken("shorter than a GGUF header")
    version, n_tensors, n_kv = struct.unpack("<IQQ", raw[4:24])
    out = []
    if version not in (1, 2, 3):
        out.append(Finding("header", f"GGUF version {version} is not 1, 2 or 3", 4))
    # every tensor info needs >= 24 bytes and every key/value >= 13 bytes: counts beyond the file
    # size are how the published GGUF parser overflows are triggered
    if n_tensors * 24 > size or n_kv * 13 > size:
        out.append(Finding("header", f"GGUF counts ({n_tensors} tensors, {n_kv} metadata keys) "
                           f"cannot fit in {size} bytes", 8))
    return out


def keras_config_findings(config: Any, member: str | None) -> list[Finding]:
    """Lambda layers and objects from modules outside keras in a Keras model config."""
    out: list[Finding] = []
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            cls, module = node.get("class_name"), node.get("module")
            if cls in ("Lambda", "__lambda__"):  # TFOpLambda names a TF op by string: not code
                out.append(Finding("lambda", f"a Keras {cls} layer: its function is Python code that "
                                   "runs at load time with safe_mode off", None, member, cls))
            if isinstance(module, str) and module.split(".")[0] not in ("keras", "tf_keras"):
                out.append(Finding("custom-object", f"a {cls} from module {module!r}: custom objects "
                                   "run their own code when loaded", None, member, f"{module}.{cls}"))
            stack.extend(node.values())
    return out


def onnx_external_findings(locations: list[str], folder: str) -> list[Finding]:
    out = []
    for loc in locations:
        posix, win = PurePosixPath(loc), PureWindowsPath(loc)
        inside = os.path.realpath(os.path.join(folder, loc)).startswith(os.path.realpath(folder) + os.sep)
        if posix.is_absolute() or win.is_absolute() or ".." in posix.parts or ".." in win.parts or not inside:
            out.append(Finding("external-data", f"external data location {loc!r} escapes the model's "
                               "folder", None))
    return out
