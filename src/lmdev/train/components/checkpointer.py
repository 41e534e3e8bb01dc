"""Checkpoints of a training: where they go, when they are saved, and putting one back.

A checkpoint holds the model's weights and the state of every stateful part of the trainer
(``parts``: each part's ``state_dict``, merged). Rank 0 writes it (DDP keeps every rank's state
identical) while the others wait; under FSDP every rank writes its shards. Old checkpoints are
pruned to ``checkpoint.keep``, always keeping the best evaluation's (``keep_best``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmdev.errors import LmdevError
from lmdev.train import checkpoint as ckpt
from lmdev.train.components import Stateful
from lmdev.train.components.events import RunEvents
from lmdev.train.config import TrainConfig
from lmdev.train.runtime import Runtime


def checkpoint_folder(checkpoint_dir: str | Path | None, run: Any) -> Path:
    """Where checkpoints go: ``checkpoint_dir``, else the run's folder; ``./checkpoints`` only
    when there is no run at all. A run that is not recorded (its store could not be opened) has
    no folder: refused, rather than sharing ``./checkpoints`` with every other run."""
    if checkpoint_dir:
        return Path(checkpoint_dir)
    if run is None:
        return Path("checkpoints")
    if getattr(run, "dir", None) is None:
        raise LmdevError("the run is not recorded in a store, so it has no folder for its checkpoints",
                         "make the store writable (LMDEV_HOME), or pass checkpoint_dir")
    return Path(run.dir) / "checkpoints"


class Checkpointer:
    def __init__(self, folder: Path, config: TrainConfig, model: torch.nn.Module, runtime: Runtime,
                 events: RunEvents) -> None:
        self.folder, self.config, self.model, self.runtime, self.events = folder, config, model, runtime, events
        self.parts: dict[str, Stateful] = {}
        self.optimizer: torch.optim.Optimizer | None = None  # saved with the shards under FSDP
        self.best_step: Callable[[], int | None] = lambda: None
        self.on_saved: Callable[[int, Path], None] = lambda step, path: None
        self.last_saved = -1

    def due(self, step: int, new_best: bool) -> bool:
        """Every ``checkpoint.every`` steps, at the last step, and at a new best (keep_best), so
        the best weights are always on disk."""
        cfg = self.config.checkpoint
        return step % cfg.every == 0 or step == self.config.train.max_steps or (new_best and cfg.keep_best)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Every part's state, split into tensors and JSON values (every rank calls this)."""
        merged: dict[str, Any] = {}
        for part in self.parts.values():
            merged.update(part.state_dict())
        tensors = {k: v for k, v in merged.items() if isinstance(v, torch.Tensor)}
        payload = {k: v for k, v in merged.items() if not isinstance(v, torch.Tensor)}
        payload["config"] = self.config.model_dump(mode="json")
        return tensors, payload

    def save(self, step: int) -> None:
        d = self.runtime.dist
        tensors, payload = self.state()
        if self.runtime.strategy == "fsdp":
            assert self.optimizer is not None
            path = ckpt.save_sharded(self.folder, step, self.model, self.optimizer, tensors, payload,
                                     d.is_main, d.barrier)
        elif d.is_main:
            path, _ = ckpt.save(self.folder, step, self.model.state_dict(), tensors, payload)
        if d.is_main:
            self._after_save(path, step)
        if self.runtime.strategy != "fsdp":
            d.barrier()
        self.last_saved = step

    def _after_save(self, path: Path, step: int) -> None:
        """Prune old checkpoints (keeping the best) and record the new one's files as artifacts."""
        best = self.best_step()
        protect = self.folder / f"{ckpt.PREFIX}{best:08d}" if (self.config.checkpoint.keep_best and best) else None
        ckpt.prune(self.folder, self.config.checkpoint.keep, protect)
        run = self.events.run
        if run is not None:
            run.event(f"checkpoint saved at step {step}", level="info")
            for f in sorted(path.glob("*.safetensors")):
                run.log_artifact(f, kind="checkpoint")
            if ckpt.is_sharded(path):
                run.log_artifact(path / "manifest.json", kind="checkpoint")
        self.on_saved(step, path)

    def find(self, path: Path) -> ckpt.Checkpoint:
        """The checkpoint to resume from at ``path`` (a checkpoint, or a folder of them): it, or the
        newest valid one before it; refused when its model config differs from this one's."""
        if not path.exists():
            raise LmdevError(f"nothing to resume at {path}", "give a run id, a run's checkpoints folder or a checkpoint")
        warn = self.events.tell_user if self.runtime.is_main else (lambda message: None)
        if (path / "manifest.json").exists():  # one checkpoint: it, or the newest valid one before it
            problem = ckpt.verify(path)
            found = ckpt.load(path, check=False) if problem is None else None
            if problem is not None:
                warn(f"checkpoint {path.name} is corrupt ({problem}); using the one before it")
                number = path.name[len(ckpt.PREFIX):]
                found = ckpt.load_latest(path.parent, warn, before=int(number) if number.isdigit() else None)
        else:
            found = ckpt.load_latest(path, warn)
        if found is None:
            raise LmdevError(f"no complete checkpoint under {path}", "the run saved none before it stopped")
        self._check_same_model(found)
        return found

    def _check_same_model(self, found: ckpt.Checkpoint) -> None:
        from lmdev.track.export import config_changes

        saved = found.state.get("config")
        old_model = saved.get("model") if isinstance(saved, dict) else None
        if not isinstance(old_model, dict):
            raise LmdevError(f"cannot resume {found.path}: its state.json has no model config",
                             "resume from another checkpoint, or start a new run")
        changes = config_changes(old_model, self.config.model.model_dump(mode="json"), "model")
        if changes:
            diff = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in changes)
            raise LmdevError(f"cannot resume {found.path}: the model config changed ({diff})",
                             "resume with the original model settings, or start a new run")

    def latest(self) -> ckpt.Checkpoint | None:
        """The newest valid checkpoint of this training (a rollback's target)."""
        return ckpt.load_latest(self.folder, warn=self.events.tell_user)

    def apply(self, found: ckpt.Checkpoint) -> None:
        """Put the weights and every part's state back as ``found`` holds them."""
        if ckpt.is_sharded(found.path):  # torch.distributed.checkpoint reshards to this world size
            assert self.optimizer is not None
            ckpt.load_sharded_into(found.path, self.model, self.optimizer)
        elif hasattr(self.model, "set_requires_gradient_sync"):  # a method fully_shard adds
            raise LmdevError(f"{found.path} was saved without FSDP and cannot be loaded into a sharded model",
                             "resume it with strategy: ddp (or on one worker)")
        else:
            device = next(self.model.parameters()).device
            self.model.load_state_dict({k: v.to(device) for k, v in found.weights.items()})
        state = {**found.state, **found.tensors}
        for part in self.parts.values():
            part.load_state_dict(state)
