"""The parts a :class:`lmdev.train.trainer.Trainer` is made of, one concern per module.

Each part that carries training state has ``state_dict()`` and ``load_state_dict(state)``: a
checkpoint is the union of their states (tensors go to ``optimizer.safetensors``, everything
else to ``state.json``), and a resume or a rollback hands each part back its own keys.

- :mod:`.checkpointer`: where checkpoints go; save (whole or sharded), prune, restore;
- :mod:`.data_position`: which global batch comes next (the data order is a function of it);
- :mod:`.nan_guard`: what a non-finite loss does (skip the step, roll back, stop);
- :mod:`.evaluator`: validation metrics and the best evaluation so far;
- :mod:`.optimization`: optimizer, learning-rate schedule, gradient scaler and clipping;
- :mod:`.random_state`: the Python, NumPy and torch random generators;
- :mod:`.metric_logger`: training metrics between two logs, throughput and MFU, progress;
- :mod:`.events`: a run's event log as each rank writes it;
- :mod:`.callbacks`: user code called on evaluation, checkpoint and resume.
"""

from __future__ import annotations

from typing import Any, Protocol


class Stateful(Protocol):
    """A part of the trainer whose state a checkpoint keeps. Keys are flat and unique across
    parts; a value that is a tensor is stored as a tensor, anything else as JSON."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
