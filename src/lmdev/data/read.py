"""Reading the data to check, in chunks: a table is never loaded whole (csv is parsed a block of
lines at a time, npy is memory-mapped, parquet is read a record batch at a time), a text corpus
is read a line at a time. The bundled digits and a ``python:`` data function are small and come
as one chunk."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmdev.errors import LmdevError

CHUNK_BYTES = 16 << 20  # csv: parse about this many bytes of lines at a time
CHUNK_ROWS = 200_000  # npy / parquet rows per chunk
MISSING = {"", "na", "nan", "null", "none", "n/a", "?"}


@dataclass
class TableChunk:
    start: int  # the index of its first row in the split
    x: np.ndarray  # float64 [n, features]; NaN where a value is missing
    y: np.ndarray  # float64 [n] labels (NaN where missing)
    non_numeric: np.ndarray  # int64 [features + 1]: values that are not numbers (label last)


@dataclass
class TableSource:
    """One split of a table: where it is and how to read it in chunks."""

    name: str  # train | val | test
    path: Path | None  # None for the bundled digits and python: data
    kind: str  # csv | npy | npz | parquet | digits | python
    label: str | int | None = None  # the label column (name or index); default the last
    columns: list[str] = field(default_factory=list)  # feature names, filled when opened
    label_name: str = ""
    arrays: tuple[np.ndarray, np.ndarray] | None = None  # digits / python: (x, y) in memory

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else self.kind

    def chunks(self) -> Iterator[TableChunk]:
        if self.arrays is not None:
            x, y = self.arrays
            self.columns = self.columns or [f"f{i}" for i in range(x.shape[1])]
            self.label_name = self.label_name or "label"
            yield TableChunk(0, np.asarray(x, np.float64), np.asarray(y, np.float64),
                             np.zeros(x.shape[1] + 1, np.int64))
        elif self.kind == "csv":
            yield from _csv_chunks(self)
        elif self.kind in ("npy", "npz"):
            yield from _npy_chunks(self)
        elif self.kind == "parquet":
            yield from _parquet_chunks(self)
        else:
            raise LmdevError(f"cannot read {self.kind} data as a table")


@dataclass
class TextSource:
    """One split of a text corpus; a sample is a line. ``start``/``stop`` are byte offsets (the
    training split of one corpus is its first (1 - val_fraction) of tokens, the rest is val)."""

    name: str
    path: Path | None
    text: bytes | None = None  # the generated arithmetic corpus
    start: int = 0
    stop: int | None = None

    @property
    def source(self) -> str:
        return str(self.path) if self.path is not None else "synthetic (arithmetic corpus)"

    def size(self) -> int:
        return len(self.text) if self.text is not None else self.path.stat().st_size  # type: ignore[union-attr]

    def lines(self) -> Iterator[bytes]:
        """The lines (without their newline) whose first byte lies in [start, stop)."""
        stop = self.size() if self.stop is None else self.stop
        f: Any = io.BytesIO(self.text) if self.text is not None else open(self.path, "rb")  # type: ignore[arg-type]
        with f:
            if self.start:  # begin at the first line starting at or after `start`
                f.seek(self.start - 1)
                if f.read(1) != b"\n":
                    f.readline()
            pos = f.tell()
            for line in f:
                if pos >= stop:
                    break
                pos += len(line)
                yield line.rstrip(b"\r\n") if line.endswith(b"\n") else line


# --------------------------------------------------------------------------- csv


def label_index(names: list[str], label: str | int | None, where: str) -> int:
    if label is None:
        return len(names) - 1
    if isinstance(label, int) or str(label).lstrip("-").isdigit():
        i = int(label)
        if not -len(names) <= i < len(names):
            raise LmdevError(f"{where} has {len(names)} columns; there is no column {i}")
        return i % len(names)
    if label not in names:
        raise LmdevError(f"{where} has no column {label!r}", f"columns: {', '.join(names)}")
    return names.index(str(label))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _csv_chunks(src: TableSource) -> Iterator[TableChunk]:
    assert src.path is not None
    with open(src.path, newline="", encoding="utf-8", errors="replace") as f:
        first = f.readline()
        if not first.strip():
            raise LmdevError(f"{src.path} is empty", "give a csv file with a header row and data rows")
        head = next(csv.reader([first]))
        has_header = any(not _is_number(c) and c.strip().lower() not in MISSING for c in head)
        names = [c.strip() for c in head] if has_header else [f"c{i}" for i in range(len(head))]
        col = label_index(names, src.label, str(src.path))
        src.label_name = names[col]
        src.columns = [n for i, n in enumerate(names) if i != col]
        pending = [] if has_header else [first]
        start = 0
        while True:
            lines = pending + f.readlines(CHUNK_BYTES)
            pending = []
            if not lines:
                break
            table, bad = _parse_lines(lines, len(names))
            order = [i for i in range(len(names)) if i != col] + [col]
            yield TableChunk(start, table[:, order[:-1]], table[:, col], bad[order])
            start += len(table)


def _parse_lines(lines: list[str], width: int) -> tuple[np.ndarray, np.ndarray]:
    """A block of csv lines as float64 [n, width] (NaN for missing) and the count of values per
    column that are not numbers. numpy's C parser first; the csv module when that fails."""
    try:  # numpy's parser skips blank lines, as the fallback below does
        table = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
        if table.shape[1] == width or not len(table):
            return table.reshape(-1, width), np.zeros(width, np.int64)
    except ValueError:
        pass
    lines = [ln for ln in lines if ln.strip()]
    table = np.full((len(lines), width), np.nan)
    bad = np.zeros(width, np.int64)
    for r, row in enumerate(csv.reader(lines)):
        for c, cell in enumerate(row[:width]):
            try:
                table[r, c] = float(cell)
            except ValueError:
                if cell.strip().lower() not in MISSING:
                    bad[c] += 1
    return table, bad


# --------------------------------------------------------------------------- npy, parquet


def _npy_chunks(src: TableSource) -> Iterator[TableChunk]:
    assert src.path is not None
    if src.kind == "npz":
        with np.load(src.path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise LmdevError(f"{src.path} must hold arrays named x and y", f"it holds: {', '.join(z.files)}")
            x, y = z["x"], z["y"]
        x = x.reshape(len(x), -1)
        src.columns, src.label_name = [f"f{i}" for i in range(x.shape[1])], "y"
        yield TableChunk(0, x.astype(np.float64), y.astype(np.float64).reshape(len(y), -1)[:, 0],
                         np.zeros(x.shape[1] + 1, np.int64))
        return
    table = np.load(src.path, mmap_mode="r", allow_pickle=False)
    if table.ndim != 2:
        raise LmdevError(f"{src.path} holds a {table.ndim}-D array; a table is 2-D with the label as a column")
    names = [f"c{i}" for i in range(table.shape[1])]
    col = label_index(names, src.label, str(src.path))
    src.label_name = names[col]
    src.columns = [n for i, n in enumerate(names) if i != col]
    keep = [i for i in range(table.shape[1]) if i != col]
    for start in range(0, len(table), CHUNK_ROWS):
        block = np.asarray(table[start:start + CHUNK_ROWS], dtype=np.float64)
        yield TableChunk(start, block[:, keep], block[:, col], np.zeros(len(keep) + 1, np.int64))


def _parquet_chunks(src: TableSource) -> Iterator[TableChunk]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LmdevError("parquet data needs the pyarrow package", "pip install pyarrow") from None
    assert src.path is not None
    pf = pq.ParquetFile(src.path)
    names = list(pf.schema_arrow.names)
    col = label_index(names, src.label, str(src.path))
    src.label_name = names[col]
    src.columns = [n for i, n in enumerate(names) if i != col]
    order = src.columns + [src.label_name]
    start = 0
    for batch in pf.iter_batches(batch_size=CHUNK_ROWS, columns=order):
        cols, bad = [], np.zeros(len(order), np.int64)
        for j, name in enumerate(order):
            arr = batch.column(name)
            try:
                cols.append(arr.to_numpy(zero_copy_only=False).astype(np.float64))
            except (ValueError, TypeError):
                cols.append(np.full(len(arr), np.nan))
                bad[j] = len(arr) - arr.null_count
        table = np.column_stack(cols) if cols else np.empty((0, 0))
        yield TableChunk(start, table[:, :-1], table[:, -1], bad)
        start += len(table)


def table_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    return {".csv": "csv", ".npy": "npy", ".npz": "npz", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "text")


def resolve(arg: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(arg))
    if not path.is_absolute():
        path = base_dir / path
    if not path.is_file():
        raise LmdevError(f"data file {path} does not exist", "check the path (relative to the config file)")
    return path
