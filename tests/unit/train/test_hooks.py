"""The training hooks: a loss of the user's (module:function), callbacks (config or Python),
and Trainer subclasses whose custom step and extra model resume exactly."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from lmdev.errors import LmdevError
from lmdev.train.config import load_config
from lmdev.train.preflight import preflight
from lmdev.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[3]
TINY = {
    "name": "hooks", "seed": 1,
    "model": {"type": "mlp", "hidden": [8]},
    "data": {"type": "digits", "batch_size": 32, "val_fraction": 0.2},
    "optimizer": {"type": "sgd", "lr": 0.1},
    "train": {"max_steps": 20, "eval_every": 10, "log_every": 10},
    "checkpoint": {"every": 10, "keep": 5, "keep_best": False},
    "device": "cpu",
}


@pytest.fixture
def user_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "lmdev_test_hooks_user.py").write_text(textwrap.dedent("""
        import torch.nn.functional as F

        CALLS = []

        def doubled(out, target):
            CALLS.append(len(target))
            return 2 * F.cross_entropy(out, target)

        def per_example(out, target):
            return F.cross_entropy(out, target, reduction="none")

        class Seen:
            def __init__(self):
                self.events = []

            def on_eval(self, trainer, step, metrics):
                self.events.append(("eval", step, sorted(metrics)))

            def on_checkpoint(self, trainer, step, path):
                self.events.append(("checkpoint", step, path.name))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "lmdev_test_hooks_user", raising=False)
    return tmp_path


def test_a_loss_of_the_users_is_the_loss_trained_on(user_code: Path, tmp_path: Path) -> None:
    import lmdev_test_hooks_user as user  # type: ignore[import-not-found]

    base = Trainer(load_config(TINY), checkpoint_dir=tmp_path / "a").train()
    doubled = Trainer(load_config({**TINY, "loss": {"type": "lmdev_test_hooks_user:doubled"}}),
                      checkpoint_dir=tmp_path / "b").train()
    assert len(user.CALLS) >= 20  # every training step (and each evaluation batch) called it
    # the same first step's loss, doubled (the first log averages steps 1-10: compare the evaluations' scale)
    assert doubled.val["val/loss"] != pytest.approx(base.val["val/loss"])
    assert doubled.val["val/loss"] > base.val["val/loss"]


def test_a_loss_that_is_not_one_number_is_named(user_code: Path, tmp_path: Path) -> None:
    cfg = load_config({**TINY, "loss": {"type": "lmdev_test_hooks_user:per_example"}})
    with pytest.raises(LmdevError, match=r"loss lmdev_test_hooks_user:per_example returned a tensor of shape \(32,\)"):
        Trainer(cfg, checkpoint_dir=tmp_path / "c").train()


def test_user_code_that_cannot_be_imported_is_refused_before_anything_starts(tmp_path: Path) -> None:
    for override in ("loss.type=no_such_module_abc:fn", "callbacks=[no_such_module_abc:Cls]"):
        with pytest.raises(LmdevError, match="cannot import 'no_such_module_abc'"):
            preflight(load_config(TINY, [override]), tmp_path)
    with pytest.raises(LmdevError, match="unknown loss 'focal'"):
        load_config(TINY, ["loss.type=focal"])


def test_callbacks_from_the_config_and_from_python(user_code: Path, tmp_path: Path) -> None:
    import lmdev_test_hooks_user as user

    class Resumed:
        steps: list[int] = []

        def on_resume(self, trainer: Any, step: int) -> None:
            self.steps.append(step)

    cfg = load_config({**TINY, "callbacks": ["lmdev_test_hooks_user:Seen"]})
    trainer = Trainer(cfg, checkpoint_dir=tmp_path / "ck")
    trainer.train()
    (seen,) = [cb for cb in trainer.callbacks.callbacks if isinstance(cb, user.Seen)]
    assert seen.events == [("eval", 10, ["val/accuracy", "val/loss"]), ("checkpoint", 10, "step-00000010"),
                           ("eval", 20, ["val/accuracy", "val/loss"]), ("checkpoint", 20, "step-00000020")]
    resumed = Resumed()
    longer = load_config({**TINY, "train": {**TINY["train"], "max_steps": 30}})
    Trainer(longer, checkpoint_dir=tmp_path / "ck2", callbacks=[resumed]).train(resume=tmp_path / "ck" / "step-00000020")
    assert resumed.steps == [20]


def _example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"lmdev_example_{name}", ROOT / "examples" / "hooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_custom_step_with_a_second_optimizer_resumes_exactly(tmp_path: Path) -> None:
    example = _example("custom_trainer")
    cfg = load_config(example.CONFIG, ["train.max_steps=40", "checkpoint.every=20"])
    whole = example.CriticTrainer(cfg, checkpoint_dir=tmp_path / "whole")
    whole_result = whole.train()
    half = example.CriticTrainer(load_config(example.CONFIG, ["train.max_steps=20", "checkpoint.every=20"]),
                                 checkpoint_dir=tmp_path / "half")
    half.train()
    resumed = example.CriticTrainer(cfg, checkpoint_dir=tmp_path / "resumed")
    result = resumed.train(resume=tmp_path / "half" / "step-00000020")
    assert result.val == whole_result.val and result.train["train/loss"] == whole_result.train["train/loss"]
    for a, b in zip(whole.critic.parameters(), resumed.critic.parameters()):
        assert torch.equal(a, b)  # the critic (weights and Adam state) was checkpointed and restored
    assert example.AuxLossTrainer(cfg, checkpoint_dir=tmp_path / "aux").train().status == "finished"


def test_callbacks_given_to_a_tracked_fit_are_called(tmp_path: Path) -> None:
    """lmdev.train.fit records a run by default; callbacks passed to it reach the trainer."""
    from lmdev.train import fit

    class Evals:
        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_eval(self, trainer: Any, step: int, metrics: dict[str, float]) -> None:
            self.steps.append(step)

    evals = Evals()
    result = fit(TINY, callbacks=[evals], home=tmp_path / "home", telemetry=False)
    assert evals.steps == [10, 20]
    assert result.run_id
