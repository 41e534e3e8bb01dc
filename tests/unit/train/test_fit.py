"""The engine in-process (``lmdev.train.fit`` without the run store), on a tiny model: the
notebook API, explicit checkpoint paths for ``resume``, and config values that must be refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmdev.errors import LmdevError, LmdevWarning
from lmdev.train import checkpoint as ckpt
from lmdev.train import fit
from lmdev.train.config import ConfigError, load_config

TINY = {
    "name": "tiny", "seed": 1,
    "model": {"type": "mlp", "hidden": [8]},
    "data": {"type": "digits", "batch_size": 32, "val_fraction": 0.2},
    "optimizer": {"type": "sgd", "lr": 0.1},
    "train": {"max_steps": 40, "eval_every": 20, "log_every": 10},
    "checkpoint": {"every": 10, "keep": 10},
    "device": "cpu",
}


def test_fit_from_python(tmp_path: Path) -> None:
    result = fit(TINY, track=False, checkpoint_dir=tmp_path / "ck")
    assert result.status == "finished" and result.steps == 40 and result.run_id is None
    assert set(result.val) == {"val/loss", "val/accuracy"} and 0 <= result.val["val/accuracy"] <= 1
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "ck")] == [f"step-{s:08d}" for s in (10, 20, 30, 40)]
    # the same config twice gives the same numbers (a pure function of the config and seed)
    again = fit(TINY, track=False, checkpoint_dir=tmp_path / "ck2")
    assert again.train["train/loss"] == result.train["train/loss"] and again.val == result.val


def test_resume_from_an_explicit_checkpoint(tmp_path: Path) -> None:
    fit(TINY, track=False, checkpoint_dir=tmp_path / "ck")
    resumed = fit(TINY, track=False, resume=str(tmp_path / "ck" / "step-00000020"), checkpoint_dir=tmp_path / "r")
    assert resumed.steps == 40
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "r")] == ["step-00000030", "step-00000040"]


def test_resume_from_a_corrupt_explicit_checkpoint_uses_the_one_before(tmp_path: Path) -> None:
    fit(TINY, track=False, checkpoint_dir=tmp_path / "ck")
    weights = tmp_path / "ck" / "step-00000020" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.warns(LmdevWarning, match="step-00000020 is corrupt"):
        fit(TINY, track=False, resume=str(tmp_path / "ck" / "step-00000020"), checkpoint_dir=tmp_path / "r")
    # resumed from step 10: steps 20, 30 and 40 are trained again
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "r")] == ["step-00000020", "step-00000030",
                                                                       "step-00000040"]


def test_nothing_to_resume(tmp_path: Path) -> None:
    with pytest.raises(LmdevError, match="nothing to resume"):
        fit(TINY, track=False, resume=str(tmp_path / "nowhere"), checkpoint_dir=tmp_path / "r")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmdevError, match="no complete checkpoint"):
        fit(TINY, track=False, resume=str(tmp_path / "empty"), checkpoint_dir=tmp_path / "r")


@pytest.mark.parametrize("override", ["model.hidden=[64, -3]", "model.hidden=[0]"])
def test_layer_sizes_must_be_positive(override: str) -> None:
    with pytest.raises(ConfigError, match=r"model\.hidden"):
        load_config(TINY, [override])


def test_cnn_channels_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"model\.channels"):
        load_config({"model": {"type": "cnn", "channels": [-4]}})


def test_a_corrupt_checkpoint_skipped_on_resume_is_shown_to_the_user(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = fit(TINY, home=home, telemetry=False)
    newest = Path(first.checkpoint_dir) / "step-00000040" / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[-2] ^= 0xFF
    newest.write_bytes(bytes(data))
    # the user is told (an LmdevWarning, which the CLI prints as "lmdev: warning: ..." on stderr)
    with pytest.warns(LmdevWarning, match=r"step-00000040 is corrupt .*using the one before it"):
        resumed = fit(TINY, home=home, telemetry=False, resume=first.run_id,
                      overrides=["train.max_steps=50"])
    assert resumed.steps == 50


def test_keep_best_saves_the_best_even_between_checkpoint_steps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The best evaluation (step 20) falls between checkpoint steps (only the last, 40): it is
    saved when found, and pruning down to one checkpoint still keeps it."""
    from lmdev.train.components import evaluator

    losses = iter([0.5, 0.1, 0.3, 0.4])  # evaluations at steps 10, 20, 30, 40
    monkeypatch.setattr(evaluator, "evaluate", lambda *a, **k: {"val/loss": next(losses)})
    config = {**TINY, "train": {"max_steps": 40, "eval_every": 10, "log_every": 10},
              "checkpoint": {"every": 1000, "keep": 1, "keep_best": True}}
    result = fit(config, track=False, checkpoint_dir=tmp_path / "ck")
    assert result.best_checkpoint == str(tmp_path / "ck" / "step-00000020")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "ck")] == ["step-00000020", "step-00000040"]
    assert ckpt.verify(tmp_path / "ck" / "step-00000020") is None
