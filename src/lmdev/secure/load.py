"""``lmdev.secure.load(path)``: scan a file, then load it in a way that cannot run its code.

safetensors -> a dict of tensors (torch if installed, else numpy); torch files ->
``torch.load(weights_only=True)``; .npy / .npz -> numpy with ``allow_pickle=False``; .keras ->
``keras.saving.load_model(safe_mode=True)``. A plain pickle or joblib file is refused even when
its scan is clean: lmdev never unpickles foreign data outside torch's weights-only unpickler.
"""

from __future__ import annotations

import os
from typing import Any

from lmdev.errors import LmdevError
from lmdev.secure.scan import require_safe


def load(path: str | os.PathLike[str], *, trust: bool = False, map_location: str = "cpu") -> Any:
    """Scan ``path`` and load it; raises ``UnsafeModelError`` for an unsafe file unless ``trust``
    (the override is written to the audit log)."""
    p = str(path)
    if not os.path.isfile(p):
        raise LmdevError(f"{p} is not a file", "give the path of a model file")
    results = require_safe(p, trust=[p] if trust else [], what="load")
    fmt = results[0].format if results else "other"
    if fmt == "safetensors":
        return _load_safetensors(p)
    if fmt in ("torch-zip", "torch-legacy"):
        import torch

        return torch.load(p, map_location=map_location, weights_only=True)
    if fmt in ("npy", "npz"):
        import numpy as np

        data = np.load(p, allow_pickle=False)
        if fmt == "npz":
            with data:
                return {k: data[k] for k in data.files}
        return data
    if fmt == "keras":
        import keras

        return keras.saving.load_model(p, safe_mode=True)
    raise LmdevError(f"{p} is a {fmt} file, which lmdev.secure.load does not load",
                     "convert the weights to safetensors; plain pickles are never loaded")


def _load_safetensors(path: str) -> dict[str, Any]:
    try:
        import safetensors.torch as tensors
    except ImportError:
        import safetensors.numpy as arrays

        return arrays.load_file(path)
    return tensors.load_file(path)
