"""A config that cannot train is refused before anything is created: no run in the store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lmdev.errors import LmdevError
from lmdev.track import Store
from lmdev.train.config import load_config
from lmdev.train.session import train_session


def refused_without_a_run(config: dict, tmp_path: Path, match: str) -> None:
    cfg = load_config({"name": "pre", "device": "cpu", "train": {"max_steps": 2}, **config})
    home = tmp_path / "home"
    with pytest.raises(LmdevError, match=match):
        train_session(cfg, base_dir=tmp_path, telemetry=False, home=home)
    if (home / "lmdev.db").exists():
        with Store(home) as store:
            assert store.list_runs() == []


def test_a_missing_data_file(tmp_path: Path) -> None:
    refused_without_a_run({"data": {"type": "csv", "path": "missing.csv"}}, tmp_path,
                          r"data file .*missing\.csv does not exist")


def test_a_missing_validation_file(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("a,b\n1,0\n2,1\n")
    refused_without_a_run({"data": {"type": "csv:train.csv", "val": "nope.csv"}}, tmp_path,
                          r"nope\.csv does not exist \(data\.val\)")


def test_a_folder_instead_of_a_file(tmp_path: Path) -> None:
    (tmp_path / "folder.csv").mkdir()
    refused_without_a_run({"data": {"type": "csv:folder.csv"}}, tmp_path, "is not a regular file")


def test_a_npy_table_that_is_not_2d(tmp_path: Path) -> None:
    np.save(tmp_path / "cube.npy", np.zeros((4, 3, 2), dtype=np.float32))
    refused_without_a_run({"data": {"type": "npy:cube.npy"}}, tmp_path, r"3-D array of shape \(4, 3, 2\)")


def test_sequences_longer_than_the_gpt_block(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("hello world " * 100)
    refused_without_a_run({"data": {"type": "text:t.txt", "seq_len": 64},
                           "model": {"type": "gpt", "block_size": 32, "n_layer": 1, "n_embd": 16, "n_head": 2}},
                          tmp_path, "seq_len 64 is longer than model.block_size 32")
