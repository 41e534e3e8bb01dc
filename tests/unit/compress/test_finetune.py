"""The learning rate of compress's short trainings, and the thread pin they leave in place."""

from __future__ import annotations

import os

import pytest
import torch

from lmdev.compress.finetune import FROM_SCRATCH, RECOVERY, LrPlan, finetune
from lmdev.train.config import load_config

from .conftest import make_source


def _cfg(schedule: dict, max_steps: int = 600):
    return load_config({"name": "t", "model": {"type": "mlp", "hidden": [8]}, "data": {"type": "digits"},
                        "schedule": schedule, "train": {"max_steps": max_steps}})


def test_a_student_from_scratch_follows_the_runs_schedule_compressed_to_its_steps():
    cfg = _cfg({"type": "cosine", "warmup_steps": 60, "min_lr_ratio": 0.1})
    f = [FROM_SCRATCH.factor(s, 100, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1)  # warm-up of 60 of 600 steps -> 10 of 100
    assert f[9] == pytest.approx(1.0)
    assert f[-1] == pytest.approx(0.1, abs=0.01)  # ends where the run ended: min_lr_ratio
    assert FROM_SCRATCH.factor(50, 100, _cfg({"type": "constant"})) == 1.0


def test_the_recovery_fine_tune_never_reaches_the_runs_peak_and_ends_near_zero():
    f = [RECOVERY.factor(s, 100) for s in range(100)]
    assert max(f) == pytest.approx(RECOVERY.peak) and RECOVERY.peak < 1.0
    assert f[0] < f[9] and f.index(max(f)) == 9  # 10% warm-up
    assert f[-1] < 0.01 * RECOVERY.peak
    assert "cosine to 0" in RECOVERY.describe()
    assert LrPlan(peak=2.0, warmup=0.0).factor(0, 10) == pytest.approx(2.0)


def test_a_fine_tune_trains_on_every_core_and_leaves_the_timing_pin_in_place():
    big = make_source({"type": "mlp", "hidden": [1024, 1024]})  # over SMALL_MODEL parameters
    seen: list[int] = []

    def hook(out, x, y):
        seen.append(torch.get_num_threads())
        return torch.nn.functional.cross_entropy(out, y)

    torch.set_num_threads(1)
    finetune(big.model, big, 2, loss_hook=hook, plan=RECOVERY)
    assert torch.get_num_threads() == 1  # the latency measured after it is still pinned
    assert seen == [len(os.sched_getaffinity(0))] * 2
