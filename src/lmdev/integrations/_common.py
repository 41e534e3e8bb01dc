"""What the integrations share: finding or starting the run they record into."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from lmdev.track import api
from lmdev.track.run import Run


def ensure_run(run: Run | None = None, **init_kwargs: Any) -> tuple[Run, bool]:
    """The run to record into and whether we started it (then we also finish it).

    ``run`` if given, else the active run of this process, else a new one (which attaches to
    ``$LMDEV_RUN_ID`` under ``lmdev run``).
    """
    if run is not None and not run.finished:
        return run, False
    active = api.active_run()
    if active is not None:
        return active, False
    return api.init(**init_kwargs), True


def numeric(logs: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """The numeric entries of a framework's logs (frameworks also log strings, lists...)."""
    out: dict[str, Any] = {}
    for key, value in (logs or {}).items():
        if isinstance(value, numbers.Real) or (hasattr(value, "numel") and value.numel() == 1):
            out[prefix + str(key)] = value
        elif hasattr(value, "shape") and getattr(value, "shape", None) in ((), [], (1,)):
            out[prefix + str(key)] = value
    return out


def weight_histograms(named: Any, prefix: str = "weights/", bins: int = 64) -> dict[str, Any]:
    """``{prefix + name: lmdev.Histogram}`` of each (name, tensor or array) in ``named`` (a
    model's parameters), counted now (a later update does not change what is logged)."""
    from lmdev.track.media import Histogram

    out: dict[str, Any] = {}
    for name, value in named:
        key = prefix + str(name).replace(".", "/").replace(":", "_")
        try:
            out[key] = Histogram(value, bins=bins)
        except Exception:  # an empty or exotic tensor: leave it out, never break training
            continue
    return out


def sample_images(images: Any, predicted: Any, truth: Any = None, key: str = "samples",
                  limit: int = 8) -> dict[str, Any]:
    """A few inputs of an image model as ``lmdev.Image``s captioned with the prediction (and
    the truth): ``{key/0: Image, ...}``; empty when the inputs are not images (HW, HWC, CHW)."""
    import numpy as np

    from lmdev.track.media import Image

    arr = np.asarray(images)
    if arr.ndim not in (3, 4):
        return {}
    out: dict[str, Any] = {}
    pred = np.asarray(predicted)
    labels = pred.argmax(axis=-1) if pred.ndim > 1 else pred
    want = None if truth is None else np.asarray(truth)
    if want is not None and want.ndim > 1:
        want = want.argmax(axis=-1)
    for i in range(min(limit, len(arr))):
        img = arr[i].astype(np.float32)
        lo, hi = float(img.min()), float(img.max())
        if hi > lo:
            img = (img - lo) / (hi - lo)
        caption = f"predicted {labels[i]}" + ("" if want is None else f", true {want[i]}")
        try:
            out[f"{key}/{i}"] = Image(img, caption=caption)
        except Exception:
            return {}
    return out
