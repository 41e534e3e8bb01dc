"""Encrypted datasets: a data file ending in .age is read by the training data readers with the
key, decrypted into memory (never to a file on disk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyrage")
pytest.importorskip("torch")

from lmdev.errors import LmdevError  # noqa: E402
from lmdev.secure import crypto  # noqa: E402
from lmdev.train.config import DataConfig  # noqa: E402
from lmdev.train.data import load_data  # noqa: E402


def _encrypted(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    enc = crypto.encrypt(path)
    path.unlink()
    return enc


def test_csv_npy_and_text_read_encrypted(tmp_path: Path) -> None:
    crypto.keygen()
    rows = "a,b,label\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40))
    csv = _encrypted(tmp_path / "t.csv", rows.encode())
    table = np.column_stack([np.arange(40.0), np.arange(40.0) % 3])
    import io

    buf = io.BytesIO()
    np.save(buf, table)
    npy = _encrypted(tmp_path / "t.npy", buf.getvalue())
    text = _encrypted(tmp_path / "corpus.txt", b"hello encrypted world " * 200)
    before = {p.name for p in tmp_path.iterdir()}
    got = load_data(DataConfig(type=f"csv:{csv.name}", batch_size=8), 0, base_dir=tmp_path)
    assert len(got.train) + len(got.val) == 40
    got = load_data(DataConfig(type=f"npy:{npy.name}", batch_size=8), 0, base_dir=tmp_path)
    assert len(got.train) + len(got.val) == 40
    got = load_data(DataConfig(type=f"text:{text.name}", seq_len=16, batch_size=4), 0, base_dir=tmp_path)
    assert len(got.train) > 0
    assert {p.name for p in tmp_path.iterdir()} == before  # no plaintext file appeared


def test_the_wrong_key_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crypto.keygen()
    csv = _encrypted(tmp_path / "t.csv", b"a,label\n1,0\n2,1\n")
    monkeypatch.setenv("LMDEV_AGE_KEY", crypto.keygen(tmp_path / "other.key").identity)
    with pytest.raises(LmdevError, match="cannot decrypt"):
        load_data(DataConfig(type=f"csv:{csv.name}"), 0, base_dir=tmp_path)
