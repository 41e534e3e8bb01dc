"""A generated corpus of malicious and benign model files for the scanner's tests and benchmark.

Malicious pickles are assembled opcode by opcode (or with objects whose ``__reduce__`` names a
dangerous callable): writing them never runs the payload, and nothing here ever loads them. Each
payload, if it ever ran, would create the file named by ``canary`` — the tests check it never
appears.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

OK = b"."  # STOP


def _s(text: str) -> bytes:
    """SHORT_BINUNICODE (protocol 4)."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


def _p4(body: bytes) -> bytes:
    return b"\x80\x04" + body + OK


def stack_global_call(module: str, name: str, arg: str, proto: int = 4) -> bytes:
    """module.name(arg) with STACK_GLOBAL."""
    return b"\x80" + bytes([proto]) + _s(module) + _s(name) + b"\x93" + _s(arg) + b"\x85R" + OK


def global_call(module: str, name: str, arg: str, proto: int = 2) -> bytes:
    """module.name(arg) with GLOBAL (protocol 0 text, or 2 with a PROTO header)."""
    head = b"" if proto == 0 else b"\x80" + bytes([proto])
    return head + f"c{module}\n{name}\n(S'{arg}'\ntR".encode() + OK


def _cmd(canary: Path) -> str:
    return f"touch {canary}"


def malicious(canary: Path) -> dict[str, bytes | Callable[[Path], None]]:
    """name -> the file's bytes (or a writer for files a library writes). Every one is unsafe."""
    cmd = _cmd(canary)
    py = f"open({str(canary)!r}, 'w').close()"
    out: dict[str, bytes | Callable[[Path], None]] = {
        "os_system_p0.pkl": global_call("os", "system", cmd, 0),
        "posix_system_p2.pkl": global_call("posix", "system", cmd, 2),
        "subprocess_popen_p4.pkl": stack_global_call("subprocess", "getoutput", cmd),
        "eval_p3.pkl": global_call("builtins", "eval", py, 3),
        "exec_p5.pkl": stack_global_call("builtins", "exec", py, 5),
        "py2_builtin_eval.pkl": global_call("__builtin__", "eval", py, 0),
        "import_module.pkl": stack_global_call("importlib", "import_module", "antigravity"),
        "dunder_import.pkl": stack_global_call("builtins", "__import__", "antigravity"),
        "getattr.pkl": _p4(_s("builtins") + _s("getattr") + b"\x93" + _s("builtins") + _s("open")
                          + b"\x93" + _s("__call__") + b"\x86R"),
        "pip_main.pkl": stack_global_call("pip", "main", "install"),
        "pkgutil_resolve.pkl": stack_global_call("pkgutil", "resolve_name", "os:system"),
        "pydoc_locate.pkl": stack_global_call("pydoc", "locate", "os.system"),
        "ctypes_cdll.pkl": stack_global_call("ctypes", "CDLL", "libc.so.6"),
        "io_fileio.pkl": stack_global_call("_io", "FileIO", str(canary)) ,
        "timeit.pkl": stack_global_call("timeit", "timeit", py),
        "cprofile_run.pkl": stack_global_call("cProfile", "run", py),
        "runpy.pkl": stack_global_call("runpy", "run_path", "/dev/null"),
        "code_interact.pkl": stack_global_call("code", "InteractiveInterpreter", "x"),
        "operator_attrgetter.pkl": stack_global_call("operator", "attrgetter", "system"),
        "functools_partial.pkl": stack_global_call("functools", "partial", "x"),
        "numpy_runstring.pkl": stack_global_call("numpy.testing._private.utils", "runstring", py),
        "shutil_rmtree.pkl": stack_global_call("shutil", "rmtree", "/nonexistent-lmdev"),
        "webbrowser.pkl": stack_global_call("webbrowser", "open", "http://127.0.0.1:9"),
        "torch_load_from_bytes.pkl": stack_global_call("torch.storage", "_load_from_bytes", "x"),
        "torch_hub_load.pkl": stack_global_call("torch.hub", "load", "x"),
        "torch_jit_load.pkl": stack_global_call("torch.jit", "load", "x"),
        "pickle_loads_nested.pkl": stack_global_call("pickle", "loads", "x"),
        "asyncio_subprocess.pkl": stack_global_call("asyncio.subprocess", "create_subprocess_shell", cmd),
        "dotted_name_globals.pkl": stack_global_call("collections", "OrderedDict.__init__.__globals__", "x"),
        "inst_opcode.pkl": f"(S'{cmd}'\nios\nsystem\n.".encode(),
        "obj_opcode.pkl": f"(cos\nsystem\nS'{cmd}'\no.".encode(),
        "newobj_popen.pkl": _p4(_s("subprocess") + _s("Popen") + b"\x93" + _s(cmd) + b"\x85\x81"),
        "newobj_ex.pkl": _p4(_s("subprocess") + _s("Popen") + b"\x93" + _s(cmd) + b"\x85}\x92"),
        "memo_indirection.pkl": _p4(_s("os") + b"\x94" + _s("system") + b"\x94" + b"0" + b"0"
                                    + b"h\x00h\x01\x93" + _s(cmd) + b"\x85R"),
        "long_binget_memo.pkl": _p4(_s("os") + b"r\x05\x00\x00\x00" + _s("system") + b"r\x06\x00\x00\x00"
                                    + b"00j\x05\x00\x00\x00j\x06\x00\x00\x00\x93" + _s(cmd) + b"\x85R"),
        "second_stream.pkl": pickle.dumps({"weights": [1.0, 2.0]}, protocol=4) + global_call("os", "system", cmd, 2),
        "broken_stream.pkl": global_call("os", "system", cmd, 2)[:-1] + b"\x8c\xff",
        "ext1_opcode.pkl": b"\x80\x02\x82\x01)R.",
        "build_on_global.pkl": _p4(_s("collections") + _s("OrderedDict") + b"\x93" + b"N}"
                                   + _s("__reduce__") + b"N" + b"s\x86b"),
        "computed_stack_global.pkl": _p4(_s("builtins") + _s("str") + b"\x93" + _s("os") + b"\x85R"
                                         + _s("system") + b"\x93" + _s(cmd) + b"\x85R"),
        "torch_zip_payload.pt": _torch_zip(global_call("os", "system", cmd, 2)),
        "torch_zip_wrong_ext.safetensors": _torch_zip(stack_global_call("builtins", "exec", py)),
        "pickle_named_json.json": stack_global_call("os", "system", cmd),
        "torch_legacy_payload.pt": _torch_legacy(global_call("os", "system", cmd, 2)),
        "object_array.npy": _npy_object(cmd),
        "object_array.npz": _npz_object(cmd),
        "keras_lambda.keras": _keras({"class_name": "Lambda", "config": {"function": {"class_name": "__lambda__",
                                     "config": {"code": "4wEAAAAAAAAA"}}}, "module": "keras.layers"}),
        "keras_custom_module.keras": _keras({"class_name": "Evil", "module": "evil_pkg.layers",
                                             "registered_name": "Evil", "config": {}}),
        "safetensors_offsets_outside.safetensors": _safetensors({"w": {"dtype": "F32", "shape": [4],
                                                                       "data_offsets": [0, 4096]}}, 16),
        "safetensors_overlap.safetensors": _safetensors({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                                         "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, 24),
        "safetensors_huge_header.safetensors": struct.pack("<Q", 1 << 40) + b"{}",
        "gguf_absurd_counts.gguf": b"GGUF" + struct.pack("<IQQ", 3, 1 << 60, 1 << 60) + b"\0" * 32,
        "onnx_external_dotdot.onnx": _onnx("../../../etc/passwd"),
        "onnx_external_absolute.onnx": _onnx("/etc/shadow"),
    }
    out["joblib_payload.joblib"] = _joblib_writer(cmd, None)
    out["joblib_payload_zlib.joblib"] = _joblib_writer(cmd, 3)
    out["joblib_payload_gzip.joblib"] = _joblib_writer(cmd, ("gzip", 3))
    return out


class _Payload:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, (self.cmd,))


def _joblib_writer(cmd: str, compress: object) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import joblib

        joblib.dump({"w": np.arange(8, dtype=np.float32), "x": _Payload(cmd)}, path,
                    compress=compress or 0)
    return write


def _torch_zip(data_pkl: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", b"\0" * 64)
        for k, v in (extra or {}).items():
            z.writestr(k, v)
    return buf.getvalue()


def _torch_legacy(payload: bytes) -> bytes:
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    return (magic + pickle.dumps(1001, protocol=2) + pickle.dumps({"protocol_version": 1001}, protocol=2)
            + payload + pickle.dumps([], protocol=2) + b"\0" * 32)


def _npy_object(cmd: str) -> bytes:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    header = header + " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + global_call("os", "system", cmd, 2)


def _npz_object(cmd: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("ok.npy", _npy_bytes(np.arange(4, dtype=np.float32)))
        z.writestr("evil.npy", _npy_object(cmd))
    return buf.getvalue()


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _keras(layer: dict[str, object]) -> bytes:
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "m", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [None, 4]}},
        layer]}, "registered_name": None}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", json.dumps(config))
        z.writestr("model.weights.h5", b"")
    return buf.getvalue()


def _safetensors(header: dict[str, object], data_len: int) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + b"\0" * data_len


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _onnx(location: str | None) -> bytes:
    """An ONNX ModelProto with one initializer, stored inline or at ``location``."""
    tensor = b"\x08\x04" + b"\x10\x01" + _field(8, b"w")  # dims=[4], data_type=FLOAT, name='w'
    if location is None:
        tensor += _field(9, b"\0" * 16)                    # raw_data
    else:
        tensor += _field(13, _field(1, b"location") + _field(2, location.encode())) + b"\x70\x01"
    graph = _field(2, b"g") + _field(5, tensor)
    return b"\x08\x08" + _field(7, graph) + _field(8, b"\x10\x11")  # ir_version 8, graph, opset


def _gguf_ok() -> bytes:
    key = b"general.name"
    kv = struct.pack("<Q", len(key)) + key + struct.pack("<I", 8) + struct.pack("<Q", 4) + b"tiny"
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + kv


def benign() -> dict[str, bytes | Callable[[Path], None]]:
    """name -> bytes or writer. Every one is safe."""
    out: dict[str, bytes | Callable[[Path], None]] = {}
    plain = {"lr": 0.1, "layers": [1, 2, 3], "name": "m", "tags": {"a", "b"}, "blob": b"\x00\x01",
             "frozen": frozenset({1}), "c": complex(1, 2), "s": slice(1, 5), "ba": bytearray(b"x"),
             "nested": {"t": (1, 2.5, None, True)}}
    for proto in range(6):
        out[f"plain_p{proto}.pkl"] = pickle.dumps(plain, protocol=proto)
    out["numpy_p2.pkl"] = pickle.dumps({"a": np.arange(6.0).reshape(2, 3), "s": np.float32(1)}, protocol=2)
    out["numpy_p5.pkl"] = pickle.dumps([np.arange(4, dtype=np.int64), np.dtype("f2")], protocol=5)
    from collections import OrderedDict

    out["ordered_dict_p2.pkl"] = pickle.dumps(OrderedDict(a=1, b=[2]), protocol=2)
    out["array.npy"] = _npy_bytes(np.arange(12, dtype=np.float32).reshape(3, 4))
    out["arrays.npz"] = _npz_writer(False)
    out["arrays_compressed.npz"] = _npz_writer(True)
    out["model.safetensors"] = _st_writer()
    out["model_np.safetensors"] = _st_np_writer()
    out["ok.gguf"] = _gguf_ok()
    out["inline.onnx"] = _onnx(None)
    out["external_ok.onnx"] = _onnx("weights/w.bin")
    out["ok.keras"] = _keras({"module": "keras.layers", "class_name": "Dense", "config": {"units": 2},
                              "registered_name": None})
    out["README.md"] = b"# a model\n"
    out["config.json"] = b'{"model_type": "gpt2"}'
    for name, writer in _torch_writers().items():
        out[name] = writer
    for name, compress in (("arrays.joblib", 0), ("arrays_zlib.joblib", 3), ("arrays_gzip.joblib", ("gzip", 3))):
        out[name] = _joblib_benign(compress)
    return out


def _npz_writer(compressed: bool) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, a=np.arange(5), b=np.ones((2, 2)))
    return write


def _st_writer() -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import torch
        from safetensors.torch import save_file

        save_file({"w": torch.ones(3, 4), "b": torch.zeros(4, dtype=torch.bfloat16)}, str(path))
    return write


def _st_np_writer() -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"x": np.arange(10, dtype=np.int64)}, str(path), metadata={"format": "np"})
    return write


def _joblib_benign(compress: object) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        import joblib

        joblib.dump({"w": np.arange(100, dtype=np.float64).reshape(10, 10), "b": np.ones(3, np.float32),
                     "n": 3}, path, compress=compress)
    return write


def _torch_writers() -> dict[str, Callable[[Path], None]]:
    def state_dict(path: Path) -> None:
        import torch

        torch.save(torch.nn.Linear(4, 3).state_dict(), path)

    def legacy(path: Path) -> None:
        import torch

        torch.save(torch.nn.Linear(4, 3).state_dict(), path, _use_new_zipfile_serialization=False)

    def rich(path: Path) -> None:
        import torch

        sd = torch.nn.Linear(2, 2).state_dict()
        sd.update(h=torch.zeros(2, dtype=torch.bfloat16), p=torch.nn.Parameter(torch.ones(1)),
                  cfg={"dtype": torch.float16, "device": torch.device("cpu"), "size": torch.Size([2])})
        torch.save(sd, path)

    def optimizer(path: Path) -> None:
        import torch

        model = torch.nn.Linear(3, 3)
        opt = torch.optim.AdamW(model.parameters())
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": 1}, path)

    def tensors(path: Path) -> None:
        import torch

        torch.save([torch.arange(5), torch.ones(2, 2, dtype=torch.float64)], path)

    return {"state_dict.pt": state_dict, "legacy.pt": legacy, "rich.pt": rich, "optimizer.ckpt": optimizer,
            "tensor_list.pth": tensors}


def write_all(entries: dict[str, bytes | Callable[[Path], None]], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in entries.items():
        path = folder / name
        if callable(content):
            content(path)
        else:
            path.write_bytes(content)
        paths.append(path)
    return paths
