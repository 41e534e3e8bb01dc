"""What a non-finite loss does, by ``train.nan_policy``:

- ``skip``: the step's update is dropped; after ``max_nan_skips`` skips the guard rolls back;
- ``rollback``: back to the last checkpoint, and the batch that made the loss non-finite is
  skipped when the (exact) replay reaches it; after ``max_rollbacks`` the run stops;
- ``stop``: the run stops at once.
"""

from __future__ import annotations

from typing import Any

from lmdev.errors import LmdevError
from lmdev.train.components.events import RunEvents
from lmdev.train.config import TrainLoopConfig


class NaNStop(LmdevError):
    exit_code = 1


class NaNGuard:
    def __init__(self, cfg: TrainLoopConfig, events: RunEvents) -> None:
        self.events = events
        self.policy, self.max_skips, self.max_rollbacks = cfg.nan_policy, cfg.max_nan_skips, cfg.max_rollbacks
        self.skips = 0
        self.rollbacks = 0
        self.skip_steps: set[int] = set()  # steps whose batch is skipped after a rollback

    def skips_batch(self, step: int) -> bool:
        return step in self.skip_steps

    def decide(self, step: int) -> str:
        """After a non-finite loss at ``step``: "skip" or "rollback"; raises NaNStop to stop."""
        self.skips += 1
        if self.policy == "stop":
            raise NaNStop(f"loss is not finite at step {step}", "lower the learning rate or use nan_policy: skip")
        if self.policy == "skip" and self.skips <= self.max_skips:
            self.events.warning(f"non-finite loss at step {step}: step skipped ({self.skips}/{self.max_skips})")
            return "skip"
        if self.rollbacks >= self.max_rollbacks:
            raise NaNStop(f"loss is not finite at step {step} after {self.rollbacks} rollback(s)",
                          "lower the learning rate, clip gradients (train.grad_clip) or check the data")
        return "rollback"

    def state_after_rollback(self, step: int) -> dict[str, Any]:
        """The guard's state once the checkpoint is restored: the checkpoint's own guard state
        does not know of this rollback, nor of the batch to skip."""
        return {"nan_skips": 0, "skip_steps": sorted(self.skip_steps | {step}), "rollbacks": self.rollbacks + 1}

    def state_dict(self) -> dict[str, Any]:
        return {"nan_skips": self.skips, "skip_steps": sorted(self.skip_steps), "rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skips = int(state.get("nan_skips", 0))
        self.skip_steps = set(state.get("skip_steps", []))
        self.rollbacks = int(state.get("rollbacks", 0))
