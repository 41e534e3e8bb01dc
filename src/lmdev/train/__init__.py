"""The training engine: configs, models, data, losses, optimizers, the loop and checkpoints.

From a notebook::

    from lmdev.train import fit
    result = fit("examples/digits_mlp.yaml", overrides=["optimizer.lr=0.05"])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fit(config: Any, *, overrides: list[str] | None = None, resume: str | None = None,
        track: bool = True, **kwargs: Any) -> Any:
    """Train from a config (a TrainConfig, a dict, or a YAML/TOML path), as ``lmdev train`` does.

    With ``track`` (the default) the run is recorded in the run store; ``resume`` is a run id,
    a run name or a checkpoint path. Returns a TrainResult."""
    from lmdev.train.config import TrainConfig, load_config

    base_dir = None
    if isinstance(config, (str, Path)):
        base_dir = Path(config).resolve().parent
        cfg = load_config(config, overrides)
    elif isinstance(config, dict):
        cfg = load_config(config, overrides)
    else:
        assert isinstance(config, TrainConfig)
        cfg = load_config(config.model_dump(mode="json"), overrides)
    if track:
        from lmdev.train.session import train_session

        return train_session(cfg, resume=resume, base_dir=base_dir, **kwargs)
    from lmdev.train.trainer import Trainer

    return Trainer(cfg, base_dir=base_dir, **kwargs).train(resume=resume)


__all__ = ["fit"]
