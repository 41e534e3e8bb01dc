"""Where the training is in its data: the number of global batches drawn so far, which is also
the step. The order of examples is a pure function of (seed, position), so a resumed run reads
exactly what an uninterrupted one would have read next."""

from __future__ import annotations

from typing import Any

import torch

from lmdev.train.data import Batches


class DataPosition:
    def __init__(self, batches: Batches) -> None:
        self.batches = batches
        self.step = 0

    def next_batch(self) -> torch.Tensor:
        """The indices of the global batch of the current step (not advanced: see ``advance``)."""
        return self.batches.indices(self.step)

    def advance(self) -> None:
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "data_position": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
