"""The random generators a training step draws from: Python's, NumPy's legacy global one and
torch's (CPU and every CUDA device). Restoring them makes a resumed run draw what an
uninterrupted one would have drawn (dropout masks, any user code's randomness)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed % (2**63 - 1))


class RandomState:
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng.torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                state[f"rng.cuda.{i}"] = s
        version, internal, gauss = random.getstate()
        state["rng_python"] = [version, list(internal), gauss]
        np_state: Any = np.random.get_state()  # numpy's stub types the legacy state as a dict
        state["rng_numpy"] = [np_state[0], np_state[1].tolist(), *np_state[2:]]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["rng.torch"])
        cuda_states = [state[k] for k in sorted(state) if k.startswith("rng.cuda.")]
        if cuda_states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states)
        py = state["rng_python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npst = state["rng_numpy"]
        np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), *npst[2:]))
