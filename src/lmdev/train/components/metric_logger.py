"""Training metrics: loss, accuracy and example counts summed between two logs (on the device,
so no step waits for it), then every ``train.log_every`` steps turned into the logged values
with throughput and model FLOPs utilisation, and the progress the caller is shown."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from lmdev.train.distributed import Dist


@dataclass
class TrainProgress:
    """What a progress bar shows after each step."""

    step: int
    max_steps: int
    metrics: dict[str, float]


@dataclass
class Throughput:
    """What a step's examples cost: tokens per example (0: not token data), training FLOPs per
    example and the device's peak FLOP/s (None: unknown, no MFU)."""

    tokens_per_example: int = 0
    flops_per_example: float = 0.0
    peak_flops: float | None = None


class Sums:
    """Sums between two logs: loss, examples, correct predictions, examples checked for them.
    Python floats (float64) on the CPU; a device tensor elsewhere, so no step waits on the GPU."""

    def __init__(self, device: torch.device) -> None:
        self.host = device.type == "cpu"
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.values: Any = [0.0, 0.0, 0.0, 0.0] if self.host else torch.zeros(4, device=self.device,
                                                                             dtype=torch.float64)

    def add(self, loss_sum: Any, count: float, n_correct: Any, checked: float) -> None:
        if self.host:
            v = self.values
            v[0] += loss_sum
            v[1] += count
            v[2] += n_correct
            v[3] += checked
        else:
            self.values += torch.stack([torch.as_tensor(loss_sum, device=self.device).double().reshape(()),
                                        torch.tensor(float(count), device=self.device, dtype=torch.float64),
                                        torch.as_tensor(n_correct, device=self.device).double().reshape(()),
                                        torch.tensor(float(checked), device=self.device, dtype=torch.float64)])

    def totals(self, d: Dist) -> list[float]:
        """The sums over every rank (a collective when there are several)."""
        return d.sum_list(self.values if self.host else self.values.tolist())


class MetricLogger:
    def __init__(self, dist: Dist, device: torch.device, every: int, throughput: Throughput, run: Any = None,
                 on_progress: Callable[[TrainProgress], None] | None = None) -> None:
        self.dist, self.every, self.throughput = dist, every, throughput
        self.run = run if dist.is_main else None  # one worker logs, the global batch's values
        self.on_progress = on_progress if dist.is_main else None
        self.sums = Sums(device)
        self.train: dict[str, float] = {}  # the last logged training metrics
        self.val: dict[str, float] = {}  # the last evaluation
        self.last_time, self.last_step = time.perf_counter(), 0

    def start(self, step: int) -> None:
        self.last_time, self.last_step = time.perf_counter(), step

    def due(self, step: int, last_step: int) -> bool:
        return step % self.every == 0 or step == last_step

    def add(self, loss_sum: Any, count: int, n_correct: Any, checked: int) -> None:
        self.sums.add(loss_sum, count, n_correct, checked)

    def log_training(self, step: int, lr: float) -> None:
        now = time.perf_counter()
        loss_total, n, n_right, n_checked = self.sums.totals(self.dist)
        metrics = {"train/lr": lr}
        if n:  # an interval whose every step was skipped has no loss to report
            metrics["train/loss"] = loss_total / n
        if n_checked:
            metrics["train/accuracy"] = n_right / n_checked
        dt = max(now - self.last_time, 1e-9)
        metrics["train/samples_per_s"] = n / dt
        metrics["train/steps_per_s"] = (step - self.last_step) / dt
        tp = self.throughput
        if tp.tokens_per_example:
            metrics["train/tokens_per_s"] = n * tp.tokens_per_example / dt
        if tp.peak_flops:  # model FLOPs utilisation: achieved training FLOP/s over the device's peak
            metrics["train/mfu"] = n * tp.flops_per_example / dt / tp.peak_flops
        if self.run is not None:
            self.run.log(metrics, step=step)
        self.sums.reset()
        self.train, self.last_time, self.last_step = metrics, now, step

    def log_validation(self, step: int, metrics: dict[str, float]) -> None:
        if self.run is not None and metrics:
            self.run.log(metrics, step=step)
        self.val = metrics

    def progress(self, step: int, max_steps: int) -> None:
        if self.on_progress:
            self.on_progress(TrainProgress(step, max_steps, {**self.train, **self.val}))

    def state_dict(self) -> dict[str, Any]:
        """The sums since the last log, over every rank (a collective: every rank calls it)."""
        return {"acc": torch.tensor(self.sums.totals(self.dist), dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The saved sums are the sum over ranks: rank 0 carries them, the others start at 0."""
        self.sums.reset()
        if "acc" in state and self.dist.is_main:
            self.sums.add(*state["acc"].tolist())
