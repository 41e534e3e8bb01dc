"""A Lightning logger that records a ``Trainer`` into a run.

``LmdevLogger`` subclasses ``lightning.pytorch``'s ``Logger`` when the ``lightning`` package is
installed, else ``pytorch_lightning``'s; ``logger_class("pytorch_lightning")`` gives the one for
a given package (a Trainer only accepts loggers of its own package).

    trainer = Trainer(logger=LmdevLogger())
    logger = LmdevLogger(); logger.watch(model, log_freq=100)  # + weight histograms every 100 steps
"""

from __future__ import annotations

import importlib
from argparse import Namespace
from collections.abc import Mapping
from typing import Any

from lmdev.integrations._common import ensure_run, numeric, weight_histograms
from lmdev.track.run import Run

PACKAGES = ("lightning.pytorch", "pytorch_lightning")
_classes: dict[str, type] = {}


def logger_class(package: str = "lightning.pytorch") -> type:
    """The LmdevLogger class for ``package`` ("lightning.pytorch" or "pytorch_lightning")."""
    if package not in PACKAGES:
        raise ValueError(f"package must be one of {PACKAGES}, not {package!r}")
    if package in _classes:
        return _classes[package]
    loggers = importlib.import_module(f"{package}.loggers")
    rank_zero_only = importlib.import_module(f"{package}.utilities").rank_zero_only

    class LmdevLogger(loggers.Logger):  # type: ignore[misc, name-defined]
        """Record a Lightning training into ``run`` (default: the active run, or a new one)."""

        def __init__(self, run: Run | None = None, **init_kwargs: Any) -> None:
            super().__init__()
            self._given = run
            self._init_kwargs = init_kwargs
            self._run: Run | None = None
            self._created = False
            self._watched: Any = None
            self._log_freq = 0
            self._last_histogram: int | None = None

        def watch(self, model: Any, log_freq: int = 100) -> None:
            """Log a 64-bin histogram of each of ``model``'s parameters (``weights/<name>``)
            every ``log_freq`` steps, with the metrics logged at that step."""
            if log_freq < 1:
                raise ValueError("log_freq must be >= 1")
            self._watched, self._log_freq = model, log_freq

        @property
        def name(self) -> str:
            return "lmdev"

        @property
        def version(self) -> str:
            return self.experiment.id

        @property
        def experiment(self) -> Run:
            if self._run is None or self._run.finished:
                self._run, self._created = ensure_run(self._given, **self._init_kwargs)
            return self._run

        @rank_zero_only
        def log_image(self, key: str, images: list[Any], step: int | None = None,
                      caption: list[str] | None = None) -> None:
            """Log a few images (arrays, tensors, PIL; e.g. sample predictions of an image
            model, from a callback) as ``key/0``, ``key/1``... at ``step`` (WandbLogger's shape)."""
            from lmdev.track.media import Image

            captions: list[Any] = list(caption) if caption is not None else [None] * len(images)
            self.experiment.log({f"{key}/{i}": Image(img, caption=c)
                                 for i, (img, c) in enumerate(zip(images, captions))}, step=step)

        @rank_zero_only
        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            if isinstance(params, Namespace):
                params = vars(params)
            config = {"framework": package.split(".")[0]}
            if isinstance(params, Mapping):
                config.update(dict(params))
            self.experiment.log_config(config)

        @rank_zero_only
        def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
            values = numeric(metrics)
            if self._watched is not None and step is not None and (
                    self._last_histogram is None or step - self._last_histogram >= self._log_freq):
                self._last_histogram = step
                values.update(weight_histograms(self._watched.named_parameters()))
            self.experiment.log(values, step=step)

        @rank_zero_only
        def finalize(self, status: str) -> None:
            run = self._run
            if run is None or run.finished:
                return
            if self._created:
                run.finish("finished" if status == "success" else "failed")
            else:
                run.flush()

    LmdevLogger.__module__ = __name__
    LmdevLogger.__qualname__ = "LmdevLogger"
    _classes[package] = LmdevLogger
    return LmdevLogger


def __getattr__(name: str) -> Any:
    if name == "LmdevLogger":
        for package in PACKAGES:
            try:
                return logger_class(package)
            except ImportError:
                continue
        raise ImportError("LmdevLogger needs Lightning: pip install 'lmdev[lightning]'")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
