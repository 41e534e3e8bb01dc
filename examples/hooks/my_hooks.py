"""User code for digits_hooks.yaml: a model factory, a loss and a callback.

lmdev finds this module beside the config (after the installed packages, so a file here
cannot shadow one of them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F


def two_layer(in_features: int, n_classes: int, width: int = 64) -> torch.nn.Module:
    """in_features and n_classes come from the data; width from the config's model.kwargs."""
    return torch.nn.Sequential(torch.nn.Linear(in_features, width), torch.nn.ReLU(), torch.nn.Linear(width, n_classes))


def focal_loss(output: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): cross-entropy down-weighted on examples already right."""
    log_p = F.log_softmax(output.float(), dim=-1).gather(1, target.reshape(-1, 1)).squeeze(1)
    return (-((1 - log_p.exp()) ** gamma) * log_p).mean()


class BestSoFar:
    """Prints each evaluation and the best so far; with HOOKS_REPORT set, writes what it saw
    there as JSON (the example's test reads it)."""

    def __init__(self) -> None:
        self.seen: dict[str, list] = {"eval": [], "checkpoint": [], "resume": []}

    def on_eval(self, trainer, step: int, metrics: dict[str, float]) -> None:
        self.seen["eval"].append([step, metrics["val/accuracy"]])
        best = max(acc for _, acc in self.seen["eval"])
        print(f"step {step}: val/accuracy {metrics['val/accuracy']:.3f} (best {best:.3f})", flush=True)
        self._write()

    def on_checkpoint(self, trainer, step: int, path: Path) -> None:
        self.seen["checkpoint"].append([step, path.name])
        self._write()

    def on_resume(self, trainer, step: int) -> None:
        self.seen["resume"].append(step)
        self._write()

    def _write(self) -> None:
        if os.environ.get("HOOKS_REPORT"):
            Path(os.environ["HOOKS_REPORT"]).write_text(json.dumps(self.seen))
