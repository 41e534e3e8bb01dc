"""``lmdev.autolog()``: record every Keras ``Model.fit``, Lightning ``Trainer`` and Hugging Face
``Trainer`` of this process, without changing the training code.

Frameworks already imported are patched at once; the others when (and if) they are imported,
through a post-import hook, so autolog itself imports no framework. What it attaches:

- Keras: ``Model.fit`` gets an ``LmdevCallback`` (unless one is already in ``callbacks``).
- Lightning (``lightning.pytorch`` and ``pytorch_lightning``): every ``Trainer`` gets an
  ``LmdevLogger`` after its own loggers (``logger=False`` is respected).
- transformers: every ``Trainer`` gets an ``LmdevTrainerCallback``.

Each training records into the active run, or starts a run and finishes it when training ends.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

_lock = threading.Lock()
_settings: dict[str, Any] = {"log_every_n_batches": 50}
_patched: set[str] = set()
_waiting: dict[str, Callable[[ModuleType], None]] = {}
_finder: _PostImportFinder | None = None


def autolog(*, keras: bool = True, lightning: bool = True, transformers: bool = True,
            log_every_n_batches: int = 50) -> None:
    """Attach lmdev to the frameworks' training loops in this process (idempotent)."""
    _settings["log_every_n_batches"] = log_every_n_batches
    targets: dict[str, Callable[[ModuleType], None]] = {}
    if keras:
        targets["keras"] = _patch_keras
    if lightning:
        targets["lightning.pytorch"] = _patch_lightning
        targets["pytorch_lightning"] = _patch_lightning
    if transformers:
        targets["transformers.trainer"] = _patch_transformers
    for name, patch in targets.items():
        when_imported(name, patch)


def when_imported(name: str, patch: Callable[[ModuleType], None]) -> None:
    """Call ``patch(module)`` now if ``name`` is imported, else right after it is imported."""
    global _finder
    with _lock:
        if name in _patched:
            return
        module = sys.modules.get(name)
        if module is None:
            _waiting[name] = patch
            if _finder is None:
                _finder = _PostImportFinder()
                sys.meta_path.insert(0, _finder)
            return
        _patched.add(name)
    patch(module)


def _imported(name: str, module: ModuleType) -> None:
    with _lock:
        patch = _waiting.pop(name, None)
        if patch is None or name in _patched:
            return
        _patched.add(name)
    patch(module)


class _HookLoader(importlib.abc.Loader):
    """Wraps a module's loader to call the patch once the module has run."""

    def __init__(self, loader: Any, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        _imported(self._name, module)

    def __getattr__(self, attr: str) -> Any:  # get_resource_reader, is_package, ...
        return getattr(self._loader, attr)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _waiting:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _HookLoader(spec.loader, fullname)
                return spec
        return None


def _patch_keras(module: ModuleType) -> None:
    model_cls = getattr(module, "Model", None)
    if model_cls is None or getattr(model_cls.fit, "_lmdev", False):
        return
    original = model_cls.fit

    @functools.wraps(original)
    def fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        from lmdev.integrations.keras import LmdevCallback

        if len(args) > 5:  # fit(x, y, batch_size, epochs, verbose, callbacks, ...)
            args = (*args[:5], _with_callback(args[5], LmdevCallback), *args[6:])
        else:
            kwargs["callbacks"] = _with_callback(kwargs.get("callbacks"), LmdevCallback)
        return original(self, *args, **kwargs)

    fit._lmdev = True  # type: ignore[attr-defined]
    model_cls.fit = fit


def _with_callback(callbacks: Any, cls: type) -> list[Any]:
    callbacks = list(callbacks or [])
    if not any(isinstance(c, cls) for c in callbacks):
        callbacks.append(cls(log_every_n_batches=_settings["log_every_n_batches"]))
    return callbacks


def _patch_lightning(module: ModuleType) -> None:
    trainer_cls = getattr(module, "Trainer", None)
    if trainer_cls is None or getattr(trainer_cls.__init__, "_lmdev", False):
        return
    package = module.__name__
    original = trainer_cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if kwargs.get("logger", True) is False:
            return
        from lmdev.integrations.lightning import logger_class

        cls = logger_class(package)
        if not any(isinstance(lg, cls) for lg in self.loggers):
            self.loggers = [*self.loggers, cls()]

    __init__._lmdev = True  # type: ignore[attr-defined]
    trainer_cls.__init__ = __init__


def _patch_transformers(module: ModuleType) -> None:
    trainer_cls = getattr(module, "Trainer", None)
    if trainer_cls is None or getattr(trainer_cls.__init__, "_lmdev", False):
        return
    original = trainer_cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        from lmdev.integrations.transformers import LmdevTrainerCallback

        if not any(isinstance(cb, LmdevTrainerCallback) for cb in self.callback_handler.callbacks):
            self.add_callback(LmdevTrainerCallback())

    __init__._lmdev = True  # type: ignore[attr-defined]
    trainer_cls.__init__ = __init__
