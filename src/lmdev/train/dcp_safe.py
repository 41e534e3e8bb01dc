"""Reading torch.distributed.checkpoint (DCP) folders without running code from them.

DCP writes its index, ``dcp/.metadata``, as a pickle, and its reader loads it with
``pickle.load``; non-tensor entries (the optimizer's hyper-parameters) it loads with
``torch.load(weights_only=False)``. Either runs whatever a crafted file asks. Here:

- :func:`read_metadata` unpickles ``.metadata`` with an unpickler that resolves only the
  classes DCP's own index uses (listed in :data:`ALLOWED`, found by writing real sharded
  checkpoints and listing the globals their index names), then checks the shape of what it
  built (a ``Metadata`` whose shard files are plain names inside the folder);
- :class:`SafeReader` is DCP's file reader with that check in place of ``pickle.load``;
- :class:`SafePlanner` is DCP's load planner with ``torch.load(weights_only=True)`` for the
  non-tensor entries.

Every ``dcp.load`` in lmdev goes through both (see tests/unit/train/test_no_unpickle.py).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError

METADATA_LIMIT = 256 * 1024**2  # an index larger than this is not one lmdev wrote

# (module, name) pairs the index of a DCP checkpoint names; nothing else is resolved.
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    ("torch.distributed.checkpoint.metadata", "Metadata"),
    ("torch.distributed.checkpoint.metadata", "MetadataIndex"),
    ("torch.distributed.checkpoint.metadata", "StorageMeta"),
    ("torch.distributed.checkpoint.metadata", "TensorProperties"),
    ("torch.distributed.checkpoint.metadata", "TensorStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "BytesStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "ChunkStorageMetadata"),
    ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING"),  # an Enum, called with an int
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch.serialization", "_get_layout"),  # returns a torch.layout by name, nothing else
    ("torch", "Size"),
    ("pathlib", "PosixPath"),  # the checkpoint id DCP records (a path, never opened here)
    ("pathlib", "PurePosixPath"),
    ("pathlib._local", "PosixPath"),  # the same class's module from Python 3.13
    ("pathlib._local", "PurePosixPath"),
    ("collections", "OrderedDict"),
})


class UnsafeCheckpoint(LmdevError):
    """A DCP index that names something other than DCP's own classes, or is malformed."""


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        import torch

        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)  # torch.float32 and the like: a value, not a callable
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a DCP index never does")


def read_metadata(path: str | Path) -> Any:
    """The ``Metadata`` in a DCP ``.metadata`` file, or UnsafeCheckpoint saying what is wrong.

    Nothing outside :data:`ALLOWED` (and torch's dtypes) is imported or called."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > METADATA_LIMIT:
            raise UnsafeCheckpoint(f"{path} is {size} bytes, larger than any DCP index lmdev writes")
        data = path.read_bytes()
    except OSError as exc:
        raise UnsafeCheckpoint(f"cannot read {path}: {exc.strerror}") from None
    try:
        md = _Restricted(io.BytesIO(data)).load()
    except Exception as exc:  # UnpicklingError, and anything a damaged stream raises
        raise UnsafeCheckpoint(f"{path} is not a DCP index lmdev can read safely: {exc}",
                               "only load checkpoints you trust; this one was refused unread") from None
    problem = _shape_problem(md)
    if problem:
        raise UnsafeCheckpoint(f"{path} is not a valid DCP index: {problem}",
                               "only load checkpoints you trust; this one was refused")
    return md


def _shape_problem(md: Any) -> str | None:
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (
        BytesStorageMetadata,
        Metadata,
        MetadataIndex,
        TensorStorageMetadata,
    )

    if not isinstance(md, Metadata):
        return f"it holds a {type(md).__name__}, not a Metadata"
    entries = getattr(md, "state_dict_metadata", None)
    if not isinstance(entries, dict) or not all(
            isinstance(k, str) and isinstance(v, (TensorStorageMetadata, BytesStorageMetadata))
            for k, v in entries.items()):
        return "its state_dict_metadata is not a mapping of names to tensor or bytes entries"
    storage = getattr(md, "storage_data", None)
    if not isinstance(storage, dict):
        return "its storage_data is not a mapping"
    for key, info in storage.items():
        if not isinstance(key, MetadataIndex) or not isinstance(info, _StorageInfo):
            return "its storage_data holds entries of the wrong type"
        rel = info.relative_path
        if not isinstance(rel, str) or not rel or "/" in rel or "\\" in rel or rel in (".", ".."):
            return f"a shard file name {rel!r} points outside the checkpoint folder"
    return None


def _reader_class() -> type:
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        """DCP's file reader, reading the index with :func:`read_metadata`."""

        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            rank = kwargs.get("rank")
            md = read_metadata(Path(self._get_metadata_path(rank)))
            if getattr(md, "storage_meta", None) is None:
                md.storage_meta = StorageMeta()
            md.storage_meta.load_id = self.load_id
            return md

    return SafeReader


def _planner_class() -> type:
    import torch
    from torch.distributed.checkpoint import DefaultLoadPlanner
    from torch.distributed.checkpoint._traverse import set_element  # what DefaultLoadPlanner uses
    from torch.distributed.checkpoint.planner import ReadItem

    class SafePlanner(DefaultLoadPlanner):
        """DCP's load planner, loading non-tensor entries with ``weights_only=True``."""

        def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
            try:
                obj = torch.load(value, weights_only=True)
            except Exception as exc:
                raise UnsafeCheckpoint(f"the checkpoint entry {read_item.dest_index.fqn} was refused: "
                                       f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                                       "only load checkpoints you trust") from None
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return SafePlanner


def safe_reader(folder: str | Path) -> Any:
    """A DCP storage reader for ``folder`` that never unpickles untrusted bytes."""
    return _reader_class()(str(folder))


def safe_planner() -> Any:
    return _planner_class()()


def load(state_dict: dict[str, Any], folder: str | Path) -> None:
    """``dcp.load`` of ``folder`` into ``state_dict``, through the safe reader and planner."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.simplefilter("ignore", UserWarning)
            dcp.load(state_dict, storage_reader=safe_reader(folder), planner=safe_planner())
    except CheckpointException as exc:  # a BaseException that wraps each rank's error
        raise checkpoint_error(exc, f"cannot load the sharded checkpoint {folder}") from None


def checkpoint_error(exc: BaseException, what: str) -> LmdevError:
    """One LmdevError for DCP's CheckpointException: the first rank's own LmdevError if it
    raised one, else ``what`` and the first line of the first rank's error."""
    failures = getattr(exc, "failures", {}) or {}
    inner = [pair[0] if isinstance(pair, tuple) else pair for pair in failures.values()]
    for e in inner:
        if isinstance(e, LmdevError):
            return e
    first = next((str(e).strip().splitlines()[0] for e in inner if str(e).strip()), type(exc).__name__)
    return LmdevError(f"{what}: {first}", "check the checkpoint matches this model, and that the disk has room")


def load_tensors(folder: str | Path, prefix: str) -> dict[str, Any]:
    """Every tensor under ``prefix`` (e.g. ``model.``) of a DCP checkpoint, whole, on the CPU,
    keyed by its name without the prefix. Only tensors are read: no bytes entry is loaded."""
    import torch
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    md = read_metadata(Path(folder) / ".metadata")
    wanted = {k: torch.empty(tuple(v.size), dtype=v.properties.dtype)
              for k, v in md.state_dict_metadata.items()
              if k.startswith(prefix) and isinstance(v, TensorStorageMetadata)}
    if wanted:
        load(wanted, folder)
    return {k.removeprefix(prefix): v for k, v in wanted.items()}
