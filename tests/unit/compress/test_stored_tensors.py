"""The int8/int4 loaders read safetensors files with their own reader: a tensor reads back as
written, and a file whose header does not match its bytes is refused with one line (never a
traceback, never an allocation the header asks for without the bytes to fill it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lmdev.compress.formats import StoredTensors
from lmdev.errors import LmdevError


def _write(path: Path, header: dict, data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


def test_tensors_read_back_as_written(tmp_path: Path) -> None:
    tensors = {"w": torch.arange(12, dtype=torch.int8).reshape(3, 4), "s": torch.tensor([0.5, 2.0])}
    save_file(tensors, str(tmp_path / "m.safetensors"))
    stored = StoredTensors(tmp_path / "m.safetensors")
    assert sorted(stored.keys()) == ["s", "w"]
    for name, t in tensors.items():
        assert torch.equal(stored.get(name), t)


@pytest.mark.parametrize("header, data", [
    ({"w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 16]}}, b"\0" * 16),  # huge shape
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}, b"\0" * 16),  # offsets past the end
    ({"w": {"dtype": "X9", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16),  # unknown dtype
    ({"w": {"dtype": "F32", "shape": [4]}}, b"\0" * 16),  # no offsets
])
def test_a_header_that_does_not_match_its_bytes_is_refused(tmp_path: Path, header: dict, data: bytes) -> None:
    with pytest.raises(LmdevError, match="not a valid safetensors file"):
        StoredTensors(_write(tmp_path / "bad.safetensors", header, data))


def test_a_header_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.safetensors"
    path.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(LmdevError, match="header length"):
        StoredTensors(path)
