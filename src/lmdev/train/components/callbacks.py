"""User code called at points of a training: ``on_eval`` after each evaluation, ``on_checkpoint``
after each saved checkpoint, ``on_resume`` once a checkpoint is restored. A callback is any
object with some of these methods (missing ones are skipped); they run on rank 0 only.

In a config: ``callbacks: [mypkg.hooks:Report]`` (each class is built with no arguments and
found like a ``python:`` model factory); in Python: ``Trainer(config, callbacks=[Report()])``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError


class Callbacks:
    def __init__(self, callbacks: list[Any], active: bool = True) -> None:
        self.callbacks, self.active = list(callbacks), active

    def _call(self, method: str, *args: Any) -> None:
        if not self.active:
            return
        for cb in self.callbacks:
            fn = getattr(cb, method, None)
            if fn is not None:
                fn(*args)

    def on_eval(self, trainer: Any, step: int, metrics: dict[str, float]) -> None:
        self._call("on_eval", trainer, step, metrics)

    def on_checkpoint(self, trainer: Any, step: int, path: Path) -> None:
        self._call("on_checkpoint", trainer, step, path)

    def on_resume(self, trainer: Any, step: int) -> None:
        self._call("on_resume", trainer, step)


def load_callbacks(specs: list[str]) -> list[Any]:
    """Instances of the ``module:Class`` names of a config's ``callbacks``."""
    from lmdev.train.models import load_object

    out = []
    for spec in specs:
        cls = load_object(spec, "callback")
        if not callable(cls):
            raise LmdevError(f"callback {spec} is a {type(cls).__name__}, not a class", "name a class: module:Class")
        try:
            out.append(cls())
        except TypeError as exc:
            raise LmdevError(f"callback {spec} cannot be built without arguments ({exc})",
                             "give its arguments defaults, or pass an instance from Python") from None
    return out
