"""A run's model, rebuilt from the run's recorded config and one of its checkpoints
(safetensors weights), with the data it was trained on."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


@dataclass
class RunModel:
    run_id: str
    run_name: str
    step: int
    cfg: Any  # TrainConfig
    model: Any  # torch.nn.Module, in eval mode, on the CPU
    data: Any  # lmdev.train.data.Data
    base_dir: Path


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``RUN`` or ``RUN@STEP``."""
    run, sep, step = ref.rpartition("@")
    if not sep:
        return ref, None
    if not step.isdigit() or not run:
        raise LmdevError(f"{ref!r} is not RUN or RUN@STEP", "e.g. lmdev explain 3f2a@500")
    return run, int(step)


def config_dir(command: list[str] | None) -> Path:
    """The folder of the config the run was started with (data paths are relative to it)."""
    for arg in command or []:
        p = Path(arg)
        if p.suffix in CONFIG_SUFFIXES and p.is_file():
            return p.resolve().parent
    return Path.cwd()


def load_run_model(ref: str, home: str | Path | None = None, data_dir: Path | None = None) -> RunModel:
    from lmdev.track.store import Store, run_dir
    from lmdev.train.config import load_config
    from lmdev.train.data import load_data
    from lmdev.train.models import build_model

    name, step = parse_ref(ref)
    store = Store.existing(home)
    try:
        info = store.get_run(name)
        folder = run_dir(store.home, info.id) / "checkpoints"
    finally:
        store.close()
    config = {k: v for k, v in info.config.items()}
    if not config:
        raise LmdevError(f"run {info.id} recorded no config", "explain works on runs of `lmdev train`")
    cfg = load_config(config)
    base = data_dir or config_dir(info.command)
    data = load_data(cfg.data, cfg.seed, base)
    model = build_model(cfg.model, data.shape)
    found_step, weights = checkpoint_weights(folder, step, info.id)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if not k.startswith("head.")]:
        raise LmdevError(f"the checkpoint's weights do not fit the model built from run {info.id}'s config "
                         f"(missing {len(missing)}, unexpected {len(unexpected)})")
    model.eval()
    return RunModel(info.id, info.name, found_step, cfg, model, data, base)


def checkpoint_weights(folder: Path, step: int | None, run_id: str) -> tuple[int, dict[str, Any]]:
    """(step, weights) of the checkpoint at ``step`` (default: the newest that verifies)."""
    from safetensors.torch import load_file

    from lmdev.train import checkpoint as ckpt

    paths = ckpt.list_checkpoints(folder)
    if not paths:
        raise LmdevError(f"run {run_id} saved no checkpoint", "train it with checkpoint.every below train.max_steps")
    if step is not None:
        chosen = [p for p in paths if int(p.name[len(ckpt.PREFIX):]) == step]
        if not chosen:
            steps = ", ".join(p.name[len(ckpt.PREFIX):].lstrip("0") or "0" for p in paths)
            raise LmdevError(f"run {run_id} has no checkpoint at step {step}", f"its checkpoints: {steps}")
        path = chosen[0]
        problem = ckpt.verify(path)
        if problem:
            raise LmdevError(f"checkpoint {path} is corrupt: {problem}", "choose another step")
    else:
        good = [p for p in reversed(paths) if ckpt.verify(p) is None]
        if not good:
            raise LmdevError(f"every checkpoint of run {run_id} is corrupt", "check them: lmdev checkpoint verify")
        path = good[0]
    if ckpt.is_sharded(path):  # gather the shards into one safetensors file first
        with tempfile.TemporaryDirectory() as tmp:
            out = ckpt.export_safetensors(path, Path(tmp) / "model.safetensors")
            weights = load_file(str(out))
    else:
        weights = ckpt.load(path, check=False).weights
    return int(path.name[len(ckpt.PREFIX):]), weights
