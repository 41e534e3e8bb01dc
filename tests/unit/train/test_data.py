"""Data: a deterministic batch order, tables from csv / npy, byte-level text, the generated corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lmdev.errors import LmdevError
from lmdev.train.config import DataConfig
from lmdev.train.data import Batches, arithmetic_corpus, load_data


def test_batch_order_is_a_pure_function_of_seed_and_step() -> None:
    a, b = Batches(100, 10, seed=7), Batches(100, 10, seed=7)
    sequential = [a.indices(k).clone() for k in range(35)]
    for k in [34, 3, 20, 0, 19, 11, 34, 5]:  # random access, across epochs, on a fresh object
        assert torch.equal(b.indices(k), sequential[k]), k
    other = Batches(100, 10, seed=8)
    assert not all(torch.equal(other.indices(k), sequential[k]) for k in range(10))


def test_every_example_once_per_epoch() -> None:
    order = Batches(96, 8, seed=0)
    assert order.per_epoch == 12
    epochs = []
    for epoch in range(3):
        seen = torch.cat([order.indices(epoch * 12 + b) for b in range(12)])
        assert sorted(seen.tolist()) == list(range(96)), epoch
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch


def test_a_partial_last_batch_is_dropped_but_nothing_repeats() -> None:
    order = Batches(50, 8, seed=3)
    assert order.per_epoch == 6
    for epoch in range(2):
        seen = torch.cat([order.indices(epoch * 6 + b) for b in range(6)]).tolist()
        assert len(seen) == len(set(seen)) == 48
        assert all(len(order.indices(epoch * 6 + b)) == 8 for b in range(6))


def test_fewer_examples_than_a_batch() -> None:
    with pytest.raises(LmdevError, match="fewer than one batch"):
        Batches(5, 8, seed=0)


def test_digits() -> None:
    data = load_data(DataConfig(type="digits", val_fraction=0.2), seed=0)
    assert data.shape.input_shape == (64,) and data.shape.n_outputs == 10
    assert data.shape.task == "classification"
    assert len(data.train) + len(data.val) == 1797 and len(data.val) == round(1797 * 0.2)
    assert float(data.train.x.max()) <= 1.0
    again = load_data(DataConfig(type="digits", val_fraction=0.2), seed=0)
    assert torch.equal(again.train.x, data.train.x) and torch.equal(again.val.y, data.val.y)
    other = load_data(DataConfig(type="digits", val_fraction=0.2), seed=1)
    assert not torch.equal(other.train.y, data.train.y)


def _csv(path: Path, header: bool = True) -> None:
    rows = [(i * 0.5, (i % 3) * 1.0, i % 2) for i in range(20)]
    lines = (["a,label,b"] if header else []) + [f"{a},{c},{b}" for a, b, c in rows]
    path.write_text("\n".join(lines) + "\n")


def test_csv_with_a_header_and_a_named_target(tmp_path: Path) -> None:
    _csv(tmp_path / "t.csv")
    data = load_data(DataConfig(type="csv:t.csv", target="label", val_fraction=0.25), 0, base_dir=tmp_path)
    assert data.shape.input_shape == (2,) and data.shape.task == "classification" and data.shape.n_outputs == 2
    assert len(data.train) == 15 and len(data.val) == 5
    x, y = data.train.batch(torch.arange(15))
    # x keeps columns a and b; the label is a's index parity
    assert torch.equal(y, (x[:, 0] * 2).long() % 2)
    assert torch.equal(x[:, 1], ((x[:, 0] * 2).long() % 3).float())


def test_csv_target_by_index_default_last_and_regression(tmp_path: Path) -> None:
    _csv(tmp_path / "t.csv")
    by_index = load_data(DataConfig(type=f"csv:{tmp_path / 't.csv'}", target=0, val_fraction=0.0), 0)
    assert by_index.shape.task == "regression"  # a: 0, 0.5, 1.0, ...
    assert by_index.shape.n_outputs == 1
    last = load_data(DataConfig(type="csv:t.csv", val_fraction=0.0), 0, base_dir=tmp_path)
    assert last.shape.task == "classification" and last.shape.n_outputs == 3  # b: 0, 1, 2
    forced = load_data(DataConfig(type="csv:t.csv", val_fraction=0.0, task="regression"), 0, base_dir=tmp_path)
    assert forced.train.y.dtype == torch.float32 and forced.train.y.shape == (20, 1)


def test_csv_without_a_header(tmp_path: Path) -> None:
    _csv(tmp_path / "t.csv", header=False)
    data = load_data(DataConfig(type="csv:t.csv", val_fraction=0.0), 0, base_dir=tmp_path)
    assert len(data.train) == 20 and data.shape.input_shape == (2,)
    with pytest.raises(LmdevError, match="no column 'label'"):
        load_data(DataConfig(type="csv:t.csv", target="label"), 0, base_dir=tmp_path)


def test_csv_errors(tmp_path: Path) -> None:
    _csv(tmp_path / "t.csv")
    with pytest.raises(LmdevError, match="columns: a, label, b"):
        load_data(DataConfig(type="csv:t.csv", target="colour"), 0, base_dir=tmp_path)
    (tmp_path / "words.csv").write_text("a,b\n1,2\nthree,4\n")
    with pytest.raises(LmdevError, match="not a number"):
        load_data(DataConfig(type="csv:words.csv"), 0, base_dir=tmp_path)
    with pytest.raises(LmdevError, match="does not exist") as info:
        load_data(DataConfig(type="csv:missing.csv"), 0, base_dir=tmp_path)
    assert str(tmp_path / "missing.csv") in str(info.value)


def test_npy_table_and_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = np.column_stack([rng.normal(size=(30, 3)), np.arange(30) % 4]).astype(np.float32)
    np.save(tmp_path / "t.npy", table)
    data = load_data(DataConfig(type="npy:t.npy", val_fraction=0.0), 0, base_dir=tmp_path)
    assert data.shape.input_shape == (3,) and data.shape.n_outputs == 4 and data.shape.task == "classification"
    x, y = data.train.batch(torch.arange(30))
    assert sorted(zip(y.tolist(), x[:, 0].tolist())) == sorted(zip((np.arange(30) % 4).tolist(), table[:, 0].tolist()))
    np.savez(tmp_path / "t.npz", x=rng.normal(size=(12, 2, 5)), y=rng.normal(size=12))
    z = load_data(DataConfig(type="npy:t.npz", val_fraction=0.25), 0, base_dir=tmp_path)
    assert z.shape.input_shape == (2, 5) and z.shape.task == "regression"
    assert len(z.train) == 9 and len(z.val) == 3
    np.savez(tmp_path / "bad.npz", a=np.zeros(3))
    with pytest.raises(LmdevError, match="x and y"):
        load_data(DataConfig(type="npy:bad.npz"), 0, base_dir=tmp_path)
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(LmdevError, match="1-D"):
        load_data(DataConfig(type="npy:flat.npy"), 0, base_dir=tmp_path)


def test_text_is_a_byte_level_memmap(tmp_path: Path) -> None:
    text = bytes(range(256)) * 4 + b"the end\n"  # 1032 bytes
    (tmp_path / "corpus.txt").write_bytes(text)
    data = load_data(DataConfig(type="text:corpus.txt", seq_len=16, val_fraction=0.25), 0, base_dir=tmp_path)
    assert data.shape.kind == "tokens" and data.shape.n_outputs == 256 and data.shape.input_shape == (16,)
    assert isinstance(data.train.tokens, np.memmap)
    split = 1032 - int(1032 * 0.25)
    assert len(data.train) == (split - 1) // 16 and len(data.val) == (1032 - split - 1) // 16
    x, y = data.train.batch(torch.tensor([0, 3]))
    assert x.dtype == torch.int64 and x.shape == y.shape == (2, 16)
    assert x[0].tolist() == list(text[:16]) and y[0].tolist() == list(text[1:17])
    assert x[1].tolist() == list(text[48:64]) and y[1].tolist() == list(text[49:65])
    vx, _ = data.val.batch(torch.tensor([0]))
    assert vx[0].tolist() == list(text[split:split + 16])


def test_text_too_short(tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_bytes(b"abc")
    with pytest.raises(LmdevError, match="too few"):
        load_data(DataConfig(type="text:tiny.txt", seq_len=16), 0, base_dir=tmp_path)


def test_empty_text_file_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(LmdevError):
        load_data(DataConfig(type="text:empty.txt", seq_len=16), 0, base_dir=tmp_path)


def test_arithmetic_corpus_never_repeats_a_problem() -> None:
    lines = arithmetic_corpus(20_000, seed=3).splitlines()
    assert len(lines) == 20_000 and len(set(lines)) == 20_000


def test_arithmetic_corpus_is_deterministic_and_correct() -> None:
    a, b = arithmetic_corpus(200, seed=5), arithmetic_corpus(200, seed=5)
    assert a == b and a != arithmetic_corpus(200, seed=6)
    lines = a.splitlines()
    assert len(lines) == 200
    for line in lines:
        lhs, rhs = line.split("=")
        op = next(c for c in "+-*" if c in lhs[1:])
        x, y = lhs.split(op, 1) if lhs[0] != "-" else (lhs, "")
        assert int(rhs) == {"+": int(x) + int(y), "-": int(x) - int(y), "*": int(x) * int(y)}[op], line
    d1 = load_data(DataConfig(type="synthetic", n_examples=300, seq_len=32, val_fraction=0.1), seed=2)
    d2 = load_data(DataConfig(type="synthetic", n_examples=300, seq_len=32, val_fraction=0.1), seed=2)
    assert d1.fingerprint == d2.fingerprint and np.array_equal(d1.train.tokens, d2.train.tokens)
    assert d1.shape.n_outputs == 256 and d1.shape.task == "language_modeling"


def test_python_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lmdev_test_user_data.py").write_text(
        "import numpy as np\n"
        "def make():\n    return np.ones((10, 3)), np.arange(10) % 2\n"
        "def bad():\n    return 5\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    data = load_data(DataConfig(type="python:lmdev_test_user_data:make", val_fraction=0.2), 0)
    assert data.shape.input_shape == (3,) and data.shape.task == "classification" and len(data.train) == 8
    with pytest.raises(LmdevError, match=r"\(x, y\)"):
        load_data(DataConfig(type="python:lmdev_test_user_data:bad"), 0)


def test_a_large_seed_is_accepted() -> None:
    order = Batches(100, 10, seed=1_732_800_000_000_000_000)
    assert sorted(torch.cat([order.indices(b) for b in range(10)]).tolist()) == list(range(100))
