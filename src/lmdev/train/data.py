"""Data for training: tables (digits, csv, npy), token streams (text files, a generated arithmetic
corpus) and ``python:module:function`` datasets, served in a deterministic order.

The order of examples is a pure function of (seed, epoch), and the position in the data is the
number of micro-batches drawn so far, so a resumed run reads exactly what an uninterrupted one
would have read next."""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmdev.errors import LmdevError
from lmdev.fsutil import sha256_file
from lmdev.train.config import DataConfig
from lmdev.train.models import DataShape


@dataclass
class Split:
    """One split of the data. Tables hold x and y; token data holds a 1-D token array."""

    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    tokens: np.ndarray | None = None  # uint8 / uint16 / uint32, possibly a memmap
    seq_len: int = 0
    csr: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None  # (indptr, indices, data, n_features)

    def __len__(self) -> int:
        if self.tokens is not None:
            return max(0, (len(self.tokens) - 1) // self.seq_len)
        if self.csr is not None:
            return len(self.csr[0]) - 1
        assert self.x is not None
        return len(self.x)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokens is not None:
            starts = index.numpy() * self.seq_len
            window = np.stack([self.tokens[s: s + self.seq_len + 1] for s in starts]).astype(np.int64)
            t = torch.from_numpy(window)
            return t[:, :-1], t[:, 1:]
        assert self.y is not None
        if self.csr is not None:  # the rows of a CSR matrix, as a torch sparse CSR batch
            indptr, indices, values, width = self.csr
            rows = index.numpy()
            starts, ends = indptr[rows], indptr[rows + 1]
            cols = np.concatenate([indices[a:b] for a, b in zip(starts, ends)]) if len(rows) else indices[:0]
            vals = np.concatenate([values[a:b] for a, b in zip(starts, ends)]) if len(rows) else values[:0]
            crow = np.concatenate([[0], np.cumsum(ends - starts)])
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                x = torch.sparse_csr_tensor(
                    torch.from_numpy(crow.astype(np.int64)), torch.from_numpy(cols.astype(np.int64)),
                    torch.from_numpy(vals.astype(np.float32)), (len(rows), width), check_invariants=False)
            return x, self.y[index]
        assert self.x is not None
        return self.x[index], self.y[index]


@dataclass
class Data:
    shape: DataShape
    train: Split
    val: Split
    fingerprint: str  # sha256 of the data that was read, for the run record


class Batches:
    """The training order: micro-batch k of the run, a pure function of (seed, k)."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise LmdevError(f"the training split has {n} examples, fewer than one batch of {batch_size}",
                             "lower data.batch_size or add data")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size  # the last partial batch is dropped: every step is full
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def indices(self, k: int) -> torch.Tensor:
        epoch, b = divmod(k, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (2**63 - 1))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm[b * self.batch_size: (b + 1) * self.batch_size]


# --------------------------------------------------------------------------- loading


def load_data(cfg: DataConfig, seed: int, base_dir: Path | None = None, cache_dir: Path | None = None) -> Data:
    kind, _, arg = cfg.type.partition(":")
    base_dir = base_dir or Path.cwd()
    if kind == "digits":
        x, y = load_digits()
        return _table(x / 16.0, y, cfg, seed, "classification", hashlib.sha256(x.tobytes()).hexdigest())
    if kind in ("csv", "npy", "parquet"):
        path = _resolve(arg, base_dir)
        _check_fits(path)
        reader = {"csv": _read_csv, "npy": _read_npy, "parquet": _read_parquet}[kind]
        x, y, task = reader(path, cfg)
        if cfg.val:  # a separate validation file: its rows come last, no random split
            vx, vy, _ = reader(_resolve(cfg.val, base_dir), cfg)
            return _table(np.concatenate([x, vx]), np.concatenate([y, vy]), cfg, seed, task, sha256_file(path), len(vx))
        return _table(x, y, cfg, seed, task, sha256_file(path))
    if kind == "sparse":
        path = _resolve(arg, base_dir)
        return _sparse(path, cfg, seed)
    if kind == "text":
        path = _resolve(arg, base_dir)
        tokens, vocab, digest = _tokens_from_text(path, cfg, cache_dir)
        if cfg.val:  # a separate validation file instead of the corpus's tail
            val_tokens = _tokens_from_text(_resolve(cfg.val, base_dir), cfg, cache_dir)[0]
            data = _token_data(tokens, vocab, cfg.model_copy(update={"val_fraction": 0.0}), digest)
            data.val = Split(tokens=val_tokens, seq_len=cfg.seq_len)
            return data
        return _token_data(tokens, vocab, cfg, digest)
    if kind == "synthetic":
        text = arithmetic_corpus(cfg.n_examples, seed).encode()
        tokens = np.frombuffer(text, dtype=np.uint8)
        return _token_data(tokens, 256, cfg, hashlib.sha256(text).hexdigest())
    if kind == "python":
        from lmdev.train.models import load_object

        fn = load_object(arg, "data")
        result = fn()  # type: ignore[operator]
        try:
            x, y = (np.asarray(a) for a in result)
        except (TypeError, ValueError):
            raise LmdevError(f"data function {arg} must return (x, y) arrays") from None
        task = cfg.task if cfg.task != "auto" else _guess_task(y)
        return _table(x.astype(np.float32), y, cfg, seed, task, hashlib.sha256(x.tobytes()).hexdigest())
    raise LmdevError(f"unknown data type {cfg.type!r}")


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled handwritten digits (1,797 images of 8x8 pixels, 0-16), read from
    the data file inside the package: importing scikit-learn itself takes seconds."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise LmdevError("the digits data set ships with scikit-learn, which is not installed",
                         "pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :-1], table[:, -1].astype(np.int64)


def _resolve(arg: str, base_dir: Path) -> Path:
    path = Path(os.path.expanduser(arg))
    if not path.is_absolute():
        path = base_dir / path
    if not path.exists():
        raise LmdevError(f"data file {path} does not exist", "check data.type's path (relative to the config file)")
    if not path.is_file():  # a folder, a device (/dev/zero), a pipe: never read one into memory
        raise LmdevError(f"data file {path} is not a regular file", "give a file (csv, npy, parquet, text)")
    if path.name.endswith(".age"):  # age-encrypted (lmdev secure encrypt): read from memory, never decrypted to disk
        from lmdev.secure.crypto import decrypt_to_memory_file
        return decrypt_to_memory_file(path)
    return path


def _check_fits(path: Path) -> None:
    """A table is read whole: refuse one larger than the memory available now, before reading."""
    try:
        import psutil

        available = psutil.virtual_memory().available
    except Exception:
        return
    size = path.stat().st_size
    if size > available:
        raise LmdevError(f"data file {path} is {size / 1024**3:.1f} GiB, more than the "
                         f"{available / 1024**3:.1f} GiB of memory available to read it into",
                         "use a smaller file, or text:PATH data (memory-mapped)")


def _guess_task(y: np.ndarray) -> str:
    if y.dtype.kind in "iub" or (y.dtype.kind == "f" and np.all(np.mod(y, 1) == 0) and len(np.unique(y)) <= 1000):
        return "classification"
    return "regression"


def _read_csv(path: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise LmdevError(f"{path} is empty")
    header = rows[0]
    has_header = any(not _is_number(c) for c in header)
    body = rows[1:] if has_header else rows
    target = cfg.target if cfg.target is not None else len(header) - 1
    if isinstance(target, str) and not target.lstrip("-").isdigit():
        if not has_header or target not in header:
            raise LmdevError(f"{path} has no column {target!r}",
                             f"columns: {', '.join(header) if has_header else '(no header row)'}")
        col = header.index(target)
    else:
        col = int(target) % len(header)
    try:
        table = np.array([[float(c) for c in r] for r in body if r], dtype=np.float64)
    except ValueError as exc:
        raise LmdevError(f"{path} has a value that is not a number ({exc})", "tables must be numeric") from None
    y = table[:, col]
    x = np.delete(table, col, axis=1).astype(np.float32)
    task = cfg.task if cfg.task != "auto" else _guess_task(y)
    return x, y, task


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_npy(path: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str]:
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise LmdevError(f"{path} must hold arrays named x and y", f"it holds: {', '.join(z.files)}")
            x, y = z["x"], z["y"]
    else:
        table = np.load(path, allow_pickle=False)
        if table.ndim != 2:
            raise LmdevError(f"{path} holds a {table.ndim}-D array; a table is 2-D with the target as a column")
        col = int(cfg.target) if cfg.target is not None else -1
        y, x = table[:, col], np.delete(table, col % table.shape[1], axis=1)
    task = cfg.task if cfg.task != "auto" else _guess_task(y)
    return x.astype(np.float32), y, task


def _read_parquet(path: Path, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, str]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LmdevError("parquet data needs the pyarrow package", "pip install pyarrow") from None
    table = pq.read_table(path)
    names = table.column_names
    target = cfg.target if cfg.target is not None else names[-1]
    if isinstance(target, int) or str(target).lstrip("-").isdigit():
        target = names[int(target)]
    if target not in names:
        raise LmdevError(f"{path} has no column {target!r}", f"columns: {', '.join(names)}")
    try:
        x = np.column_stack([table.column(n).to_numpy().astype(np.float32) for n in names if n != target])
    except (ValueError, TypeError) as exc:
        raise LmdevError(f"{path} has a column that is not numeric ({exc})", "tables must be numeric") from None
    y = table.column(target).to_numpy()
    task = cfg.task if cfg.task != "auto" else _guess_task(y)
    return x, y, task


def _sparse(path: Path, cfg: DataConfig, seed: int) -> Data:
    """A CSR matrix and its labels in one .npz: arrays indptr, indices, data, shape and y
    (``np.savez(path, indptr=X.indptr, indices=X.indices, data=X.data, shape=X.shape, y=y)``)."""
    with np.load(path, allow_pickle=False) as z:
        missing = {"indptr", "indices", "data", "shape", "y"} - set(z.files)
        if missing:
            raise LmdevError(f"{path} lacks the arrays {', '.join(sorted(missing))}",
                             "save a CSR matrix as indptr, indices, data, shape plus labels y")
        indptr, indices, values, shape, y = (z[k] for k in ("indptr", "indices", "data", "shape", "y"))
    n, width = int(shape[0]), int(shape[1])
    if len(indptr) != n + 1 or len(y) != n:
        raise LmdevError(f"{path}: indptr has {len(indptr)} entries and y {len(y)} for {n} rows",
                         "indptr needs rows+1 entries and y one label per row")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * cfg.val_fraction))
    task = cfg.task if cfg.task != "auto" else _guess_task(y)
    yt = (torch.from_numpy(y.astype(np.int64)) if task == "classification"
          else torch.from_numpy(y.astype(np.float32)).reshape(n, -1))

    def subset(rows: np.ndarray) -> Split:
        lengths = indptr[rows + 1] - indptr[rows]
        sub_ptr = np.concatenate([[0], np.cumsum(lengths)])
        sub_idx = np.concatenate([indices[indptr[r]:indptr[r + 1]] for r in rows]) if len(rows) else indices[:0]
        sub_val = np.concatenate([values[indptr[r]:indptr[r + 1]] for r in rows]) if len(rows) else values[:0]
        return Split(y=yt[torch.from_numpy(rows)], csr=(sub_ptr, sub_idx, sub_val, width))

    n_out = int(y.max()) + 1 if task == "classification" else yt.shape[1]
    shape_ = DataShape("sparse", (width,), n_out, task)
    return Data(shape_, subset(order[n_val:]), subset(order[:n_val]), sha256_file(path))


def _table(x: np.ndarray, y: np.ndarray, cfg: DataConfig, seed: int, task: str, digest: str,
           val_rows: int | None = None) -> Data:
    n = len(x)
    if val_rows is None:
        order = np.random.default_rng(seed).permutation(n)
        n_val = int(round(n * cfg.val_fraction))
    else:  # the last val_rows rows are the validation split
        order, n_val = np.r_[np.arange(n - val_rows, n), np.arange(n - val_rows)], val_rows
    val_idx, train_idx = order[:n_val], order[n_val:]
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if task == "classification":
        classes = np.unique(y)
        if not np.array_equal(classes, np.arange(len(classes))) and (y.min() < 0 or y.dtype.kind == "f" and np.any(np.mod(y, 1))):
            raise LmdevError("classification labels must be integers 0..K-1", "set data.task: regression")
        yt = torch.from_numpy(y.astype(np.int64))
        n_out = int(y.max()) + 1
    else:
        yt = torch.from_numpy(y.astype(np.float32)).reshape(n, -1)
        n_out = yt.shape[1]
    shape = DataShape("table", tuple(x.shape[1:]), n_out, task)
    return Data(shape, Split(xt[train_idx], yt[train_idx]), Split(xt[val_idx], yt[val_idx]), digest)


def _token_data(tokens: np.ndarray, vocab: int, cfg: DataConfig, digest: str) -> Data:
    n_val = int(len(tokens) * cfg.val_fraction)
    split = len(tokens) - n_val
    train = Split(tokens=tokens[:split], seq_len=cfg.seq_len)
    val = Split(tokens=tokens[split:], seq_len=cfg.seq_len)
    if len(train) == 0:
        raise LmdevError(f"the text has {len(tokens)} tokens, too few for one sequence of {cfg.seq_len}",
                         "lower data.seq_len or use a longer text")
    return Data(DataShape("tokens", (cfg.seq_len,), vocab, "language_modeling"), train, val, digest)


def _tokens_from_text(path: Path, cfg: DataConfig, cache_dir: Path | None) -> tuple[np.ndarray, int, str]:
    digest = sha256_file(path)
    if path.stat().st_size == 0:
        raise LmdevError(f"{path} is empty", "give a text file with some text in it")
    if cfg.tokenizer == "byte":
        # The file itself is the token array: memory-mapped, so corpora larger than RAM work.
        return np.memmap(path, dtype=np.uint8, mode="r"), 256, digest
    try:
        import tiktoken
    except ImportError:
        raise LmdevError("data.tokenizer tiktoken needs the tiktoken package",
                         "pip install tiktoken, or use tokenizer: byte") from None
    enc = tiktoken.get_encoding("gpt2")
    cache_dir = cache_dir or Path(".lmdev") / "cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = cache_dir / f"tokens-{digest[:16]}-gpt2.u16"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        with open(path, encoding="utf-8", errors="replace") as src, open(tmp, "wb") as dst:
            for chunk in iter(lambda: src.read(1 << 22), ""):  # 4 MiB of text at a time
                np.asarray(enc.encode_ordinary(chunk), dtype=np.uint16).tofile(dst)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, out)
    return np.memmap(out, dtype=np.uint16, mode="r"), enc.n_vocab, digest


def arithmetic_corpus(n: int, seed: int) -> str:
    """A generated corpus with structure a small model can learn: additions, subtractions and
    multiplications of small numbers with their results, one per line (``17+205=222``).

    No problem appears twice, so the validation tail never repeats a training line (up to the
    2.1 million distinct problems there are)."""
    rng = random.Random(seed)
    lines: list[str] = []
    seen: set[tuple[str, int, int]] = set()
    while len(lines) < n and len(seen) < 2_100_000:
        op = rng.choice("+-*")
        a, b = rng.randint(0, 999), rng.randint(0, 999 if op != "*" else 99)
        if (op, a, b) in seen:
            continue
        seen.add((op, a, b))
        value = a + b if op == "+" else a - b if op == "-" else a * b
        lines.append(f"{a}{op}{b}={value}")
    return "\n".join(lines) + "\n"


def describe(data: Data) -> dict[str, Any]:
    return {"kind": data.shape.kind, "task": data.shape.task, "train_examples": len(data.train),
            "val_examples": len(data.val), "input_shape": list(data.shape.input_shape),
            "outputs": data.shape.n_outputs, "sha256": data.fingerprint}
