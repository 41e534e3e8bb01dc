"""Checks on a training config before anything is created (no run in the store, no checkpoint
folder, no progress bar): the data files exist and can be read, and the shapes that can be
known without loading the data agree with the model."""

from __future__ import annotations

import os
from pathlib import Path

from lmdev.errors import LmdevError
from lmdev.train.config import GPTConfig, TrainConfig

FILE_KINDS = ("csv", "npy", "parquet", "text", "sparse")


def preflight(cfg: TrainConfig, base_dir: Path | None = None) -> None:
    """Raise LmdevError naming the first problem: a data file (train, val or test) that is
    missing, not a regular file or unreadable; a .npy table that is not 2-D; text sequences
    longer than the GPT's block_size; a loss or callback of the user's that cannot be imported."""
    base = base_dir or Path.cwd()
    kind, _, arg = cfg.data.type.partition(":")
    if kind in FILE_KINDS:
        main = check_readable(arg, base, "data.type")
        if kind == "npy" and main.suffix == ".npy":
            check_npy_table(main)
    for field, value in (("data.val", cfg.data.val), ("data.test", cfg.data.test)):
        if value:
            check_readable(value, base, field)
    if kind in ("text", "synthetic") and isinstance(cfg.model, GPTConfig) and cfg.data.seq_len > cfg.model.block_size:
        raise LmdevError(f"data.seq_len {cfg.data.seq_len} is longer than model.block_size {cfg.model.block_size}",
                         "raise model.block_size or lower data.seq_len")
    check_references(cfg, base)


def check_references(cfg: TrainConfig, base_dir: Path) -> None:
    """The user code a config names (a ``module:function`` loss, ``module:Class`` callbacks) can
    be imported, looked up beside the config."""
    from lmdev.train.models import add_search_folder, load_object

    specs = [("loss", cfg.loss.type.removeprefix("python:"))] if ":" in cfg.loss.type else []
    specs += [("callback", spec) for spec in cfg.callbacks]
    if specs:
        add_search_folder(base_dir)
    for what, spec in specs:
        load_object(spec, what)


def check_readable(arg: str, base: Path, field: str) -> Path:
    """The file ``arg`` (relative to ``base``) as a path, once it is known to be a readable file."""
    path = Path(os.path.expanduser(arg))
    if not path.is_absolute():
        path = base / path
    if not path.exists():
        raise LmdevError(f"data file {path} does not exist ({field})", "check the path (relative to the config file)")
    if not path.is_file():
        raise LmdevError(f"data file {path} is not a regular file ({field})", "give a file (csv, npy, parquet, text)")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise LmdevError(f"data file {path} cannot be read ({field}): {exc.strerror or exc}",
                         "check the file's permissions") from None
    return path


def check_npy_table(path: Path) -> None:
    """A .npy table is 2-D (features and the target as columns): its header says so, unread data."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
    except (ValueError, OSError) as exc:
        raise LmdevError(f"data file {path} is not a valid .npy file ({exc})", "save it with numpy.save") from None
    if len(shape) != 2:
        raise LmdevError(f"data file {path} holds a {len(shape)}-D array of shape {shape}; a table is 2-D "
                         "with the target as a column", "reshape it to (rows, features + 1)")
