"""``lmdev run --guard``: make a user script's loaders scan before they load.

``install()`` wraps ``pickle.load`` / ``pickle.loads`` / ``pickle.Unpickler`` (its ``load`` scans the
file it was given first; subclasses with their own ``find_class`` inherit the check), and — as soon as the script imports them —
``torch.load``, ``joblib.load`` and ``numpy.load`` (when called with ``allow_pickle=True``). Each
wrapper runs the scanner on what it is about to read and raises ``UnsafeModelError`` instead of
loading an unsafe file. Paths listed in ``$LMDEV_TRUST`` (separated by ``os.pathsep``; set by
``--trust``) load anyway, and the override is audited. Not covered: ``_pickle`` (the C module) used
directly, and C extensions that unpickle on their own.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import io
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from lmdev.secure.pickles import PickleVerdict, scan_pickles
from lmdev.secure.scan import UnsafeModelError, require_safe
from lmdev.secure.types import Finding

ENV = "LMDEV_GUARD"
TRUST_ENV = "LMDEV_TRUST"
_installed = False


def _trust() -> list[str]:
    return [p for p in os.environ.get(TRUST_ENV, "").split(os.pathsep) if p]


def _check_path(path: Any, what: str) -> None:
    require_safe(os.fspath(path), trust=_trust(), what=what)


def _check_stream(f: Any, what: str) -> None:
    """Scan one pickle stream from a file object at its position, then rewind to it."""
    name = getattr(f, "name", None)
    if isinstance(name, str) and os.path.isfile(name) and f.tell() == 0:
        _check_path(name, what)
        return
    if not f.seekable():
        raise UnsafeModelError(f"refusing to {what} from a stream that cannot be scanned (not seekable)",
                               "load from a file or bytes instead")
    pos = f.tell()
    verdict = PickleVerdict()
    try:
        scan_pickles(f, verdict, max_streams=1)
    finally:
        f.seek(pos)
    _raise(verdict.findings, what)


def _raise(findings: list[Finding], what: str) -> None:
    if findings:
        f = findings[0]
        raise UnsafeModelError(f"refusing to {what}: {f.message} at byte {f.position}",
                               "see `lmdev secure scan`; pass --trust PATH for a file you trust")


def _spooled(f: Any, what: str) -> None:
    """torch.load from a file object: copy it to a temporary file to scan its zip / pickles."""
    name = getattr(f, "name", None)
    if isinstance(name, str) and os.path.isfile(name):
        _check_path(name, what)
        return
    pos = f.tell()
    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
        shutil.copyfileobj(f, tmp)
        tmp.flush()
        f.seek(pos)
        _check_path(tmp.name, what)


def _wrap_pickle(pickle_mod: Any) -> None:
    load, loads = pickle_mod.load, pickle_mod.loads

    @functools.wraps(load)
    def guarded_load(file: Any, *args: Any, **kwargs: Any) -> Any:
        _check_stream(file, "pickle.load")
        return load(file, *args, **kwargs)

    @functools.wraps(loads)
    def guarded_loads(data: Any, *args: Any, **kwargs: Any) -> Any:
        verdict = PickleVerdict()
        scan_pickles(io.BytesIO(bytes(data)), verdict, max_streams=1)
        _raise(verdict.findings, "pickle.loads")
        return loads(data, *args, **kwargs)

    pickle_mod.load, pickle_mod.loads = guarded_load, guarded_loads
    pickle_mod.Unpickler = _guarded_unpickler(pickle_mod.Unpickler)
    pickle_mod._Unpickler = _guarded_unpickler(pickle_mod._Unpickler)  # the pure-Python one


def _guarded_unpickler(base: type) -> type:
    """A subclass of ``base`` whose ``load`` scans the stream it reads before reading it."""

    class GuardedUnpickler(base):  # type: ignore[misc, valid-type]
        def __init__(self, file: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(file, *args, **kwargs)
            self._lmdev_file = file

        def load(self) -> Any:
            _check_stream(self._lmdev_file, "pickle.Unpickler.load")
            return super().load()

    GuardedUnpickler.__name__ = GuardedUnpickler.__qualname__ = base.__name__
    GuardedUnpickler.__module__ = base.__module__
    return GuardedUnpickler


def _wrap_loader(module: Any, attr: str, what: str, needs_scan: Callable[[tuple, dict], bool]) -> None:
    original = getattr(module, attr, None)
    if original is None or getattr(original, "_lmdev_guarded", False):
        return

    @functools.wraps(original)
    def guarded(f: Any, *args: Any, **kwargs: Any) -> Any:
        if needs_scan(args, kwargs):
            if isinstance(f, (str, os.PathLike)):
                _check_path(f, what)
            else:
                _spooled(f, what)
        return original(f, *args, **kwargs)

    guarded._lmdev_guarded = True  # type: ignore[attr-defined]
    setattr(module, attr, guarded)


def _numpy_pickles(args: tuple, kwargs: dict) -> bool:
    return bool(kwargs.get("allow_pickle", args[1] if len(args) > 1 else False))


_PATCHES: dict[str, Callable[[Any], None]] = {
    "torch": lambda m: _wrap_loader(m, "load", "torch.load", lambda a, k: True),
    "joblib": lambda m: _wrap_loader(m, "load", "joblib.load", lambda a, k: True),
    "numpy": lambda m: _wrap_loader(m, "load", "numpy.load", _numpy_pickles),
}


class _PatchOnImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Patches torch / joblib / numpy right after the script imports them."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name not in _PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        inner = spec.loader
        original_exec = inner.exec_module

        def exec_module(module: Any) -> None:
            original_exec(module)
            _PATCHES[name](module)

        inner.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Wrap the loaders in this process (idempotent)."""
    global _installed
    if _installed:
        return
    _installed = True
    import multiprocessing.reduction  # noqa: F401  (binds the real pickle.loads for worker processes)

    _wrap_pickle(pickle)
    for name, patch in _PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchOnImport())
