"""The model-file scanner: detect a file's format by its content, judge it, and refuse unsafe loads.

``scan_file(path)`` returns a ``ScanResult``; ``scan_paths`` walks folders; ``require_safe``
is the gate every lmdev load goes through (it raises ``UnsafeModelError`` unless the file is
safe or named in ``trust``). Every verdict is written to the audit log.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import mmap
import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from lmdev.errors import LmdevError
from lmdev.secure import audit
from lmdev.secure.formats import (
    GGUF_MAGIC,
    NPY_MAGIC,
    keras_config_findings,
    looks_like_safetensors,
    onnx_external_findings,
    scan_gguf,
    scan_npy,
    scan_safetensors,
)
from lmdev.secure.onnx_proto import NotProtobuf, external_locations, looks_like_onnx
from lmdev.secure.pickles import PickleVerdict, scan_pickles
from lmdev.secure.types import SKIPPED, Finding, ScanResult, verdict_of

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
AGE_MAGIC = b"age-encryption.org/v1\n"
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
TORCH_LEGACY_STREAMS = 5     # magic, protocol, sys_info, the object, the storage keys; raw data follows
COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"BZh", "bz2"), (b"]\x00\x00", "lzma"),
              (b"\x78\x01", "zlib"), (b"\x78\x5e", "zlib"), (b"\x78\x9c", "zlib"), (b"\x78\xda", "zlib"))
PICKLE_EXTS = (".pkl", ".pickle")
IN_MEMORY = 64 * 1024 * 1024
TEXT_EXTS = {".txt", ".md", ".json", ".yaml", ".yml", ".py", ".toml", ".cfg", ".csv", ".tsv", ".html",
             ".rst", ".ini", ".sh", ".log", ".jsonl", ".model", ".tiktoken", ".vocab", ".merges"}
_PROTO01_STARTS = set(b"(cdeglNIJKLMFGSTUVX}]).")


class ZlibReader:
    """A forward-only file over a zlib stream (joblib's default compression), decompressed in 1 MiB
    pieces: read, peek, tell and forward seek are all the pickle walk needs."""

    def __init__(self, path: str, mode: str = "rb") -> None:
        self._f = open(path, "rb")
        self._z = zlib.decompressobj()
        self._buf, self._pos = b"", 0

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            raw = self._f.read(1 << 20)
            if not raw:
                self._buf += self._z.flush()
                return
            self._buf += self._z.decompress(raw)

    def read(self, n: int = -1) -> bytes:
        self._fill(n if n >= 0 else 1 << 62)
        out, self._buf = (self._buf, b"") if n < 0 else (self._buf[:n], self._buf[n:])
        self._pos += len(out)
        return out

    def peek(self, n: int = 1) -> bytes:
        self._fill(n)
        return self._buf[:n]

    def readline(self) -> bytes:
        line = b""
        while not line.endswith(b"\n"):
            c = self.read(1)
            if not c:
                break
            line += c
        return line

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self._pos + offset
        if target < self._pos:
            raise OSError("cannot seek backwards in a zlib stream")
        while self._pos < target and self.read(min(target - self._pos, 1 << 20)):
            pass
        return self._pos

    def __enter__(self) -> ZlibReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


class UnsafeModelError(LmdevError):
    """A load refused because the scanner judged the file unsafe (exit code 2, like bad input:
    the fix is to use another file or to name it with ``--trust``)."""


def _pickle_result(path: str, fmt: str, f: IO[bytes], max_streams: int | None = None,
                   lenient: bool = False) -> ScanResult:
    """Scan the pickles of ``f``. ``lenient``: the content was only guessed to be a pickle (no
    PROTO header, or found in a folder walk), so data that breaks before naming any callable is
    binary data, not a pickle: skipped, since an unpickler would fail before it could call anything."""
    verdict = PickleVerdict()
    scan_pickles(f, verdict, None, max_streams)
    if (lenient and verdict.streams == 0 and not verdict.callables
            and all(x.kind == "broken" for x in verdict.findings)):
        return ScanResult(path, "other", SKIPPED, note="binary data (not a pickle: breaks before any callable)")
    return ScanResult(path, fmt, verdict_of(verdict.findings), verdict.findings, sorted(verdict.callables))


def _zip_result(path: str) -> ScanResult:
    findings: list[Finding] = []
    callables: set[str] = set()
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        fmt = _zip_format(names)
        for name in names:
            lower = name.lower()
            if lower.endswith(PICKLE_EXTS):
                verdict = PickleVerdict()
                with _member(z, name) as f:
                    scan_pickles(f, verdict, name)
                findings += verdict.findings
                callables |= verdict.callables
            elif lower.endswith(".npy"):
                with z.open(name) as f:
                    found, names_ = scan_npy(f, z.getinfo(name).file_size, name)
                findings += found
                callables |= names_
            elif fmt == "keras" and name == "config.json":
                findings += _keras_json(z.read(name), name)
            elif fmt == "torch-zip" and "/code/" in f"/{name}" and lower.endswith(".py"):
                findings.append(Finding("torchscript", "a TorchScript archive: loading it runs its "
                                        "program (use torch.jit.load only on code you trust)", None, name))
                break
    return ScanResult(path, fmt, verdict_of(findings), findings, sorted(callables))


def _member(z: zipfile.ZipFile, name: str) -> IO[bytes]:
    """A zip member to walk: in memory when small (a torch data.pkl), else streamed."""
    if z.getinfo(name).file_size <= IN_MEMORY:
        return io.BytesIO(z.read(name))
    return z.open(name)


def _zip_format(names: Sequence[str]) -> str:
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "torch-zip"
    if "config.json" in names and ("metadata.json" in names or "model.weights.h5" in names):
        return "keras"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def _keras_json(raw: bytes, member: str | None) -> list[Finding]:
    try:
        config = json.loads(raw)
    except ValueError as exc:
        return [Finding("broken", f"Keras config is not JSON: {exc}", None, member)]
    return keras_config_findings(config, member)


def _h5_result(path: str) -> ScanResult:
    try:
        import h5py
    except ImportError:
        return ScanResult(path, "hdf5", "unsafe", [Finding(
            "unreadable", "an HDF5 file, and h5py is not installed to read its model config", 0)])
    try:
        with h5py.File(path, "r") as h:
            raw = h.attrs.get("model_config")
    except OSError as exc:
        return ScanResult(path, "hdf5", "unsafe", [Finding("broken", f"HDF5 does not open: {exc}", 0)])
    if raw is None:
        return ScanResult(path, "hdf5", "safe")
    findings = _keras_json(raw if isinstance(raw, bytes) else str(raw).encode(), "model_config")
    return ScanResult(path, "keras-h5", verdict_of(findings), findings)


def _onnx_result(path: str, size: int) -> ScanResult | None:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        buf = memoryview(mm)
        try:
            if not looks_like_onnx(buf):
                return None
            try:
                locations = external_locations(buf)
            except NotProtobuf as exc:
                return ScanResult(path, "onnx", "unsafe", [Finding("broken", f"ONNX model does not parse: {exc}", 0)])
        finally:
            buf.release()
    findings = onnx_external_findings(locations, os.path.dirname(os.path.abspath(path)))
    return ScanResult(path, "onnx", verdict_of(findings), findings)


def _compressed_result(path: str, kind: str) -> ScanResult:
    openers: dict[str, Callable[..., Any]] = {"gzip": gzip.open, "xz": lzma.open, "lzma": lzma.open,
                                              "bz2": bz2.open, "zlib": ZlibReader}
    opener = openers[kind]
    try:
        with opener(path, "rb") as f:
            result = _pickle_result(path, f"{kind}-pickle", f)  # joblib's compressed files
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
        return ScanResult(path, f"{kind}-pickle", "unsafe", [Finding("broken", f"{kind} data does not "
                                                                      f"decompress: {exc}", 0)])
    return result


def _looks_like_old_pickle(path: str, head: bytes, explicit: bool) -> bool:
    """Protocol 0/1 pickles have no header: judge a file as one when it starts with an opcode and
    either it was named explicitly or its name is not a text file's."""
    if not head or head[0] not in _PROTO01_STARTS:
        return False
    return explicit or Path(path).suffix.lower() not in TEXT_EXTS


def _detect_and_scan(path: str, explicit: bool) -> ScanResult:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] == b"PK\x03\x04" or (head[:4] == b"PK\x05\x06"):
            pass
        elif head.startswith(NPY_MAGIC):
            f.seek(0)
            found, names = scan_npy(f, size)
            return ScanResult(path, "npy", verdict_of(found), found, sorted(names))
        elif head.startswith(GGUF_MAGIC):
            f.seek(0)
            found = scan_gguf(f, size)
            return ScanResult(path, "gguf", verdict_of(found), found)
        elif head.startswith(TORCH_LEGACY_MAGIC):
            f.seek(0)
            return _pickle_result(path, "torch-legacy", f, TORCH_LEGACY_STREAMS)
        elif head[:1] == b"\x80" and head[1:2] and 2 <= head[1] <= 5:
            f.seek(0)
            return _pickle_result(path, "pickle", f, lenient=not explicit)
        elif looks_like_safetensors(head, size):
            f.seek(0)
            found = scan_safetensors(f, size)
            return ScanResult(path, "safetensors", verdict_of(found), found)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        try:
            return _zip_result(path)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            return ScanResult(path, "zip", "unsafe", [Finding("broken", f"zip archive does not read: {exc}", 0)])
    return _other(path, head, size, explicit)


def _other(path: str, head: bytes, size: int, explicit: bool) -> ScanResult:
    if head.startswith(AGE_MAGIC):
        return ScanResult(path, "age", SKIPPED, note="age-encrypted: lmdev judges the content when it decrypts it")
    if head.startswith(HDF5_MAGIC):
        return _h5_result(path)
    for magic, kind in COMPRESSED:
        if head.startswith(magic):
            return _compressed_result(path, kind)
    if head[:1] == b"\x08" and size:
        found = _onnx_result(path, size)
        if found is not None:
            return found
    if _looks_like_old_pickle(path, head, explicit):
        with open(path, "rb") as f:
            return _pickle_result(path, "pickle", f, lenient=True)
    return ScanResult(path, "other", SKIPPED, note="not a model format (nothing that loads code)")


def scan_file(path: str | os.PathLike[str], *, explicit: bool = True, log: bool = True) -> ScanResult:
    """Judge one file by its content. ``explicit``: the file was named (not found in a folder walk),
    so a header-less protocol-0 pickle is judged whatever its name."""
    p = str(path)
    try:
        result = _detect_and_scan(p, explicit)
    except OSError as exc:
        raise LmdevError(f"cannot read {p}: {exc.strerror}", "check the path and its permissions") from None
    if log and result.verdict != SKIPPED:
        first = result.findings[0].message if result.findings else ""
        audit.append("scan", path=os.path.abspath(p), format=result.format, verdict=result.verdict,
                     findings=len(result.findings), first=first)
    return result


def walk(paths: Iterable[str | os.PathLike[str]]) -> Iterable[tuple[str, bool]]:
    """(file, explicit) for every file under ``paths`` (folders recursively, .git skipped)."""
    for root in paths:
        root = str(root)
        if os.path.isdir(root):
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d != ".git")
                for name in sorted(files):
                    yield os.path.join(folder, name), False
        elif os.path.exists(root):
            yield root, True
        else:
            raise LmdevError(f"{root} does not exist", "give a file or folder to scan")


def scan_paths(paths: Iterable[str | os.PathLike[str]]) -> list[ScanResult]:
    return [scan_file(path, explicit=explicit) for path, explicit in walk(paths)]


def require_safe(path: str | os.PathLike[str], trust: Iterable[str | os.PathLike[str]] = (),
                 what: str = "load") -> list[ScanResult]:
    """Scan ``path`` (a file or a folder) before lmdev loads it; raise ``UnsafeModelError`` naming
    the first unsafe file and why, unless that file is in ``trust`` or ``$LMDEV_TRUST`` (paths
    separated by ``os.pathsep``; ``lmdev --trust PATH``), and then the override is audited. A
    file or folder that carries a signature (``FILE.sig``, ``DIR/model.sig``) must verify first."""
    from lmdev.secure.signing import verify_if_signed

    verify_if_signed(path, what)  # a signed file or folder must still match its signature
    env = [t for t in os.environ.get("LMDEV_TRUST", "").split(os.pathsep) if t]
    trusted = {os.path.realpath(t) for t in [*trust, *env]}
    results = scan_paths([path])
    for result in results:
        if result.verdict != "unsafe":
            continue
        if os.path.realpath(result.path) in trusted or os.path.realpath(str(path)) in trusted:
            audit.append("trust", path=os.path.abspath(result.path), what=what,
                         findings=[f.message for f in result.findings[:5]])
            continue
        audit.append("refuse", path=os.path.abspath(result.path), what=what)
        f = result.findings[0]
        where = f" at byte {f.position}" if f.position is not None else ""
        inside = f" in {f.member}" if f.member else ""
        raise UnsafeModelError(
            f"refusing to {what} {result.path}: {f.message}{inside}{where}",
            f"see `lmdev secure scan {result.path}`; if you trust this file, pass --trust {result.path}")
    return results


def require_safe_safetensors(data: bytes, name: str | os.PathLike[str], what: str = "load") -> None:
    """Judge decrypted bytes that lmdev is about to parse as safetensors (an encrypted checkpoint
    file) with the same header checks as a file: raise ``UnsafeModelError`` when they fail."""
    if not looks_like_safetensors(data[:64], len(data)):
        found = [Finding("header", "not a safetensors file (after decryption)", 0)]
    else:
        found = scan_safetensors(io.BytesIO(data), len(data))
    if found:
        audit.append("refuse", path=os.path.abspath(name), what=what, findings=[f.message for f in found[:5]])
        raise UnsafeModelError(f"refusing to {what} {name}: {found[0].message}",
                               "the decrypted file is not the safetensors file lmdev wrote")
