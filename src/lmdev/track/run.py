"""A run being recorded: the caller appends to in-memory buffers; a writer thread batches them
into the store.

The training thread's cost of ``run.log`` is a type check per value, a dict copy and a
``deque.append`` (thread-safe without a lock). The writer wakes every ``flush_interval`` seconds
(sooner while a backlog builds up), converts values (scalar tensors on an accelerator in one
batch, so there is one device sync per flush rather than one per call), and writes everything
in one transaction. A process that dies loses at most what was logged since the last flush.

If the store cannot be written (disk full, read-only, I/O error) the run keeps accepting calls,
warns once, drops what it cannot write and records an error event once writing works again.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import numbers
import os
import re
import shutil
import sqlite3
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError
from lmdev.fsutil import atomic_write_bytes
from lmdev.names import check_metric_key
from lmdev.redact import redact, redact_argv, redact_value
from lmdev.track.store import BUSY_TIMEOUT_S, Store, pack_chunk, run_dir
from lmdev.track.types import Media, RunInfo

_now = time.time
_BUSY_BACKLOG = 20_000  # entries waiting: the writer flushes again at once instead of sleeping
_MAX_PENDING_CHUNKS = 100_000  # chunks kept for a retry while the store is locked by others
_CHUNK = 65_536  # points per stored chunk at most
FIRST_WAIT_S = 2.0  # how long run creation waits for the store's lock before saying it waits


def _locked(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


def create_waiting(store: Store, info: RunInfo, pid_start: float | None) -> int:
    """Create the run's row, waiting as long as another process holds the store's lock.

    After ``FIRST_WAIT_S`` it warns once (``LmdevWarning``) that it waits; it never gives up on a lock
    (Ctrl-C stops it), so a run is never silently left unrecorded."""
    told = False
    store.conn.execute(f"PRAGMA busy_timeout = {int(FIRST_WAIT_S * 1000)}")
    try:
        while True:
            try:
                return store.create_run(info, pid_start)
            except sqlite3.OperationalError as exc:
                if not _locked(exc):
                    raise
                if not told:
                    told = True
                    warnings.warn(f"the run store {store.path} is locked by another process; waiting for it "
                                  f"to create run {info.id} (nothing logged is lost)", LmdevWarning, stacklevel=4)
                    store.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    finally:
        store.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")


from lmdev.errors import LmdevWarning  # noqa: E402 - re-exported: recording problems warn with it
from lmdev.fsutil import sha256_file  # noqa: E402


def _coerce(key: Any, value: Any) -> Any:
    """A loggable value: a float or int, or a detached scalar tensor on an accelerator.

    Raises TypeError naming the key for anything that is not a single number.
    """
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):  # int/float subclasses, numpy scalars, Fraction...
        return float(value)
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"cannot log {key!r}: {type(value).__name__} {value!r:.40} is not a number")
    numel = getattr(value, "numel", None)
    if callable(numel) and hasattr(value, "detach"):  # a torch tensor
        if numel() != 1:
            raise TypeError(f"cannot log {key!r}: a tensor of shape {tuple(value.shape)} is not a "
                            "scalar (log one number per key)")
        if value.is_complex():
            raise TypeError(f"cannot log {key!r}: a complex tensor is not a real number")
        value = value.detach().reshape(())
        if value.device.type == "cpu":
            return float(value.item())  # no device to wait for
        return value.clone()  # converted by the writer, in a batch; clone: the caller may reuse it
    size = getattr(value, "size", None)
    if size == 1 and hasattr(value, "item") and hasattr(value, "dtype"):  # numpy array of one
        try:
            return float(value.item())
        except (TypeError, ValueError):
            pass
    if hasattr(type(value), "__float__") and not hasattr(value, "__len__"):  # TF eager scalars, Decimal
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"cannot log {key!r}: {type(value).__name__} is not a number (log ints, floats "
                    "or scalar tensors)")


def _utf8(text: str) -> str:
    """Text SQLite can store: a lone surrogate (a file name that is not UTF-8) becomes U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _tensor_values(tensors: list[Any]) -> list[float]:
    """Scalar tensors (possibly on an accelerator) -> floats, with one transfer per device."""
    import torch

    out: list[float] = [0.0] * len(tensors)
    by_device: dict[Any, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for device, idx in by_device.items():
        dtype = torch.float32 if device.type == "mps" else torch.float64
        values = torch.stack([tensors[i].to(dtype) for i in idx]).tolist()
        for i, v in zip(idx, values):
            out[i] = v
    return out


def _plain_values(values: list[Any]) -> list[float]:
    """Values of one key as floats: accelerator tensors read in one batch, huge ints as floats."""
    out: list[Any] = list(values)
    tensors = [i for i, v in enumerate(values) if type(v) is not float and type(v) is not int]
    if tensors:
        for i, value in zip(tensors, _tensor_values([values[i] for i in tensors])):
            out[i] = value
    for i, v in enumerate(out):
        if type(v) is int and not -(1 << 53) <= v <= (1 << 53):
            try:
                out[i] = float(v)
            except OverflowError:
                out[i] = math.inf if v > 0 else -math.inf
    return out


def jsonable(value: Any) -> Any:
    """Config values to something JSON can hold (dataclasses, Namespaces, paths, numbers)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return jsonable(dataclasses.asdict(value))
    if hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        return jsonable(vars(value))
    if isinstance(value, numbers.Real):
        return float(value)
    return str(value)


class Run:
    """A run being recorded. Create one with ``lmdev.init()``; see docs/api/tracking.md."""

    def __init__(self, info: RunInfo, store: Store | None, *, rank: int = 0, owner: bool = True,
                 log_metrics: bool = True, flush_interval: float = 1.0,
                 pid_start: float | None = None, reopen: bool = False) -> None:
        """Record ``info`` in ``store`` (None: record nothing) and start the writer thread.

        ``reopen``: ``info`` is an existing run that this process continues (``lmdev.init(
        resume=...)``): it is marked running again with this process's pid, and steps continue
        after its last logged one. ``owner``: this process sets the run's final status."""
        self.info = info
        self.rank = rank
        self.owner = owner  # sets the final status; False for other ranks and `lmdev run` children
        self.flush_interval = float(flush_interval)
        self._store = store
        self._home = store.home if store is not None else None
        self._rid = 0
        self._next_step = 0
        self._mute = not log_metrics
        self._finished = False
        self._forked = False
        self._metrics: deque[tuple[int, float, dict[str, Any]]] = deque()
        self._system: deque[tuple[float, int, str, str, float]] = deque()
        self._events: deque[tuple[float, str, str, str]] = deque()
        self._artifacts: deque[tuple[Path, str]] = deque()
        self._pending: dict[str, list[tuple[Any, ...]]] | None = None
        self._lock = threading.Lock()  # one flush at a time (writer thread or finish/flush)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failed: str | None = None  # the store error that is making us drop data
        self._dropped = 0
        self._warned = False
        self._last_beat = 0.0
        self._sampler: Any = None
        self._keys: set[str] = set()  # metric keys already checked
        self._media: deque[tuple[int, float, str, Media]] = deque()
        self._media_seq = 0
        self._partial: dict[str, Any] | None = None  # log(..., commit=False) waiting for its step
        self._partial_step = 0
        self._rewound_to: int | None = None  # the last rewind, while nothing was logged after it
        if store is not None:
            try:
                self._rid = create_waiting(store, info, pid_start)
            except (sqlite3.Error, LmdevError) as exc:
                self._store_failed(exc)
                store.close()
                self._store = None  # nothing can be attached to a run that was never created
        if reopen and self._store is not None:
            self._reopen(pid_start)
        self._thread = threading.Thread(target=self._loop, name=f"lmdev-writer-{info.id}", daemon=True)
        self._thread.start()

    # -- the public API -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def dir(self) -> Path | None:
        """This run's folder for artifacts and logs: ``$LMDEV_HOME/runs/<id>``."""
        return None if self._home is None else run_dir(self._home, self.id)

    @property
    def finished(self) -> bool:
        return self._finished

    def log(self, data: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
        """Record metrics at ``step`` (default: one more than the last step logged).

        Values are ints, floats, numpy scalars or scalar tensors (not synchronised here), or
        media: ``lmdev.Histogram``, ``lmdev.Image``, ``lmdev.Text``, ``lmdev.Table``.
        Other values raise TypeError naming the key; NaN and Inf are stored and flagged.
        ``commit=False`` (W&B's semantics) adds ``data`` to the current step without ending it:
        the next ``log`` (committed) writes everything gathered at that step and moves on; a
        ``log`` at another explicit step first commits what was gathered.
        Returns at once: the writer thread stores the values within ``flush_interval``.
        """
        if self._mute:
            return
        if commit is not True or self._partial is not None:
            self._gather(data, step, commit is not False)
            return
        if step is None:
            step = self._next_step
        elif type(step) is not int:
            step = int(step)
        self._next_step = step + 1
        self._rewound_to = None
        keys = self._keys
        for k, v in data.items():
            t = type(v)
            if t is not float and t is not int or type(k) is not str or k not in keys:
                scalars = self._checked(data, step)
                if scalars:
                    self._metrics.append((step, _now(), scalars))
                return
        self._metrics.append((step, _now(), dict(data)))

    def _gather(self, data: Mapping[str, Any], step: int | None, commit: bool) -> None:
        """``log`` with ``commit=False``, or the committing call after one."""
        if step is not None and type(step) is not int:
            step = int(step)
        if self._partial is not None and step is not None and step != self._partial_step:
            self._commit_partial()
        if self._partial is None:
            self._partial = {}
            self._partial_step = self._next_step if step is None else step
        self._partial.update(data)
        if commit:
            self._commit_partial()

    def _commit_partial(self) -> None:
        partial, self._partial = self._partial, None
        if partial:
            self.log(partial, step=self._partial_step)

    def _checked(self, data: Mapping[str, Any], step: int) -> dict[str, Any]:
        """``data``'s scalars with their keys checked (``lmdev.names``) and their values made
        numbers; its media (histograms, images, ...) go to their own buffer."""
        out = {}
        for k, v in data.items():
            key = k if type(k) is str and k in self._keys else check_metric_key(str(k))
            if isinstance(v, Media):
                self._media.append((step, _now(), key, v))
                continue
            out[key] = v if type(v) is float or type(v) is int else _coerce(key, v)
        self._keys.update(out)
        return out

    def event(self, message: str, level: str = "info", **data: Any) -> None:
        """Record an event (a checkpoint saved, a NaN skipped, a warning...)."""
        if level not in ("debug", "info", "warning", "error"):
            raise ValueError(f"level must be debug, info, warning or error, not {level!r}")
        if self._finished or self._forked:
            return
        fields = json.dumps(redact_value(jsonable(data)), sort_keys=True)
        self._events.append((_now(), level, redact(_utf8(str(message))), fields))

    def log_artifact(self, path: str | os.PathLike[str], kind: str = "file", copy: bool = False) -> Path:
        """Record a file (its size and sha256, hashed by the writer thread).

        With ``copy=True`` the file is first copied into this run's folder and that copy is
        recorded. Returns the recorded path.
        """
        src = Path(path)
        if not src.is_file():
            raise LmdevError(f"cannot log artifact {src}: no such file", "give the path of a file")
        if copy and self.dir is not None:
            dest_dir = self.dir / "artifacts"
            dest_dir.mkdir(parents=True, exist_ok=True)
            dest = dest_dir / src.name
            shutil.copy2(src, dest)
            src = dest
        src = src.resolve()
        self._artifacts.append((src, kind))
        self._wake.set()
        return src

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Merge entries into the run's config (hyperparameters known only after ``init``)."""
        items = redact_value(jsonable(dict(config)))  # secrets never reach the store
        self.info.config.update(items)
        self._write_run(lambda s: s.merge_run_json(self._rid, "config", items))

    def fingerprint(self, name: str, data: Any) -> str:
        """Record a data fingerprint (sha256) of a file, bytes or an array under ``name``."""
        if isinstance(data, (str, os.PathLike)) and Path(data).is_file():
            digest = sha256_file(Path(data))
        elif isinstance(data, (bytes, bytearray, memoryview)):
            digest = hashlib.sha256(data).hexdigest()
        elif hasattr(data, "tobytes"):
            digest = hashlib.sha256(data.tobytes()).hexdigest()
        elif hasattr(data, "numpy") and hasattr(data, "detach"):
            digest = hashlib.sha256(data.detach().cpu().numpy().tobytes()).hexdigest()
        else:
            raise TypeError(f"cannot fingerprint {name!r}: give a file path, bytes or an array")
        self.info.data_fingerprints[name] = digest
        self._write_run(lambda s: s.merge_run_json(self._rid, "data_fingerprints", {name: digest}))
        return digest

    @property
    def next_step(self) -> int:
        """The step the next ``log()`` without an explicit step records at."""
        return self._next_step

    def continue_after(self, step: int) -> None:
        """Number the next logged step ``step + 1`` (a fork continues its parent's steps); a
        ``rewind(step)`` right after it is a no-op (a fork has nothing to replace)."""
        self._next_step = int(step) + 1
        self._rewound_to = int(step)

    def rewind(self, step: int) -> int:
        """Forget what this run logged past ``step``; returns how many points were dropped.

        Call it right after restoring a checkpoint saved at ``step``: the points the earlier
        (crashed or killed) process logged after that checkpoint are removed from the store, so
        the resumed training's points replace them and the run keeps one curve (media logged
        past ``step`` go too). A second rewind to the same step with nothing logged in between
        is the same resume: it does nothing and returns 0. What is still
        buffered is written first, so this works while the writer thread runs. Records an
        event ``resumed at step S (N points past it replaced)`` with data
        ``{"kind": "resume", "step": S, "dropped": N}``. The next ``log()`` without a step
        logs at ``step + 1``.
        """
        step = int(step)
        if self._finished or self._forked:
            return 0
        self._commit_partial()
        if self._rewound_to == step:
            return 0  # rewound to this step already, nothing logged since: the same resume
        self._flush()
        dropped = 0
        with self._lock:
            if self._store is not None:
                try:
                    dropped = self._store.rewind(self._rid, step)
                except sqlite3.Error as exc:
                    self._store_failed(exc)
        self._next_step = step + 1
        self._rewound_to = step
        self.event(f"resumed at step {step} ({dropped} points past it replaced)",
                   kind="resume", step=step, dropped=dropped)
        self._wake.set()
        return dropped

    def flush(self) -> None:
        """Write everything logged so far, now (blocks until it is stored)."""
        if not self._forked:
            self._commit_partial()
            self._flush()

    def finish(self, status: str = "finished", exit_code: int | None = None) -> None:
        """Stop telemetry, write everything, and record the final status. Safe to call twice."""
        if self._finished or self._forked:
            return
        self._commit_partial()
        self._finished = True
        self._mute = True
        if self._sampler is not None:
            self._sampler.stop()
            try:  # a last reading: even a run shorter than the interval has one
                self._add_system(self._sampler.sample())
            except Exception:
                pass
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=120)
        self._flush()
        if self.owner:
            fields: dict[str, Any] = {"status": status, "end_time": _now()}
            if exit_code is not None:
                fields["exit_code"] = exit_code
            self.info.status = status  # type: ignore[assignment]
            self.info.end_time = fields["end_time"]
            self._write_run(lambda s: s.update_run(self._rid, **fields))
        if self._store is not None:
            self._store.close()
        _forget(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt):
            self.event("interrupted (KeyboardInterrupt)", level="error")
            self.finish("killed")
        else:
            self.event(f"{exc_type.__name__}: {exc}", level="error")
            self.finish("failed")

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, name={self.name!r}, status={self.info.status!r})"

    # -- for integrations and telemetry ------------------------------------------------------

    def record_system(self, samples: list[tuple[float, int, str, str, float]]) -> None:
        """Add telemetry samples: (time, rank, device, key, value) each (``track.telemetry``)."""
        if not self._forked:
            self._system.extend(samples)

    _add_system = record_system  # the name the telemetry sampler and older callers use

    def start_telemetry(self, interval: float = 2.0, *, host: bool = True, pid: int | None = None) -> None:
        """Sample the system every ``interval`` seconds into this run until it finishes
        (``host``: machine-wide readings too; ``pid``: watch that process instead of this one)."""
        from lmdev.track.telemetry import Sampler

        if self._sampler is None:
            kwargs: dict[str, Any] = {"interval": interval, "rank": self.rank, "host": host}
            if pid is not None:
                kwargs["pid"] = pid
            self._sampler = Sampler(self.record_system, **kwargs).start()

    def set_command(self, argv: list[str]) -> None:
        """Record the command line that runs this training (redacted)."""
        self.info.command = redact_argv([str(a) for a in argv])
        self._write_run(lambda s: s.update_run(self._rid, command=self.info.command))

    def take_over(self, pid_start: float | None) -> None:
        """Rank 0 of a launch whose row another rank (or this launch's worker before an
        elastic restart) created first: the row gets this process's name, config, pid and
        command, and is running again."""
        info = self.info

        def claim(s: Store) -> None:
            s.reopen_run(self._rid, info.pid, pid_start, info.host, info.command)
            s.update_run(self._rid, name=info.name, config=info.config)

        self._write_run(claim)

    @property
    def config(self) -> RunConfig:
        """The run's config as a mapping: ``run.config["lr"]``, ``run.config.update({...})`` and
        ``run.config["lr"] = 0.1`` store the change at once (secret-looking values redacted)."""
        return RunConfig(self)

    @property
    def summary(self) -> RunSummary:
        """The run's summary: by default each metric's last value; ``run.summary["best"] = x``
        sets (and stores) a value that replaces it (``lmdev runs show`` lists it)."""
        return RunSummary(self)

    def _reopen(self, pid_start: float | None) -> None:
        store = self._store
        assert store is not None
        info = self.info
        self._write_run(lambda s: s.reopen_run(self._rid, info.pid, pid_start, info.host, info.command))
        info.status, info.end_time, info.exit_code = "running", None, None
        try:
            last = store.last_step(info)
        except LmdevError:
            last = None
        self._next_step = 0 if last is None else last + 1

    def _write_media(self, rid: int) -> list[tuple[Any, ...]]:
        """Media rows for the store; images are written as PNG files under the run's folder."""
        rows: list[tuple[Any, ...]] = []
        media = self._media
        for _ in range(len(media)):
            step, t, key, item = media.popleft()
            rel: str | None = None
            if item.kind == "image":
                rel = self._image_path(key, step)
                folder = self.dir
                if folder is None:
                    continue
                try:
                    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(folder / rel, item.png())
                except (OSError, LmdevError) as exc:
                    self._events.append((_now(), "warning", f"image {key!r} at step {step} not stored: {exc}", "{}"))
                    continue
            try:
                payload = json.dumps(item.payload(), allow_nan=False, separators=(",", ":"))
            except ValueError as exc:  # a histogram range of inf...: never break the batch
                self._events.append((_now(), "warning", f"{item.kind} {key!r} at step {step} not stored: {exc}", "{}"))
                continue
            rows.append((rid, step, key, item.kind, t, payload, rel))
        return rows

    def _image_path(self, key: str, step: int) -> str:
        """``media/<key, made safe>-<hash>/<step>-<n>.png``, relative to the run's folder."""
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)[:64]
        tag = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:6]
        self._media_seq += 1
        return f"media/{safe}-{tag}/{step:08d}-{self._media_seq}.png"

    def _after_fork(self) -> None:
        """In a forked child (a DataLoader worker): the writer thread and connection are not ours."""
        self._forked = True
        self._mute = True
        self._finished = True

    # -- the writer ---------------------------------------------------------------------------

    def _write_run(self, fn: Any) -> None:
        if self._store is None:
            return
        with self._lock:
            try:
                fn(self._store)
            except sqlite3.Error as exc:
                self._store_failed(exc)

    def _loop(self) -> None:
        busy = False
        while not self._stop.is_set():
            self._wake.wait(0.001 if busy else self.flush_interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            busy = self._flush() > _BUSY_BACKLOG

    def _drain(self) -> dict[str, list[tuple[Any, ...]]]:
        """Take what is buffered and turn it into rows for the store (registering new keys).

        Metrics become one chunk per key (``store.pack_chunk``): the per-value work is a dict
        lookup and three list appends; packing and checking run at C speed.
        """
        store = self._store
        assert store is not None
        rid = self._rid
        metrics = self._metrics
        popleft = metrics.popleft
        entries = [popleft() for _ in range(len(metrics))]
        groups: dict[str, tuple[list[int], list[float], list[Any]]] = {}
        get = groups.get
        for step, t, data in entries:
            for k, v in data.items():
                g = get(k)
                if g is None:
                    g = groups[k] = ([], [], [])
                g[0].append(step)
                g[1].append(t)
                g[2].append(v)
        try:
            ids = store.metric_key_ids(groups)
        except sqlite3.OperationalError as exc:
            if _locked(exc):  # keep the points for the next flush
                metrics.extendleft(reversed(entries))
            raise
        chunks = []
        for k, (steps, times, values) in groups.items():
            try:
                total = sum(values)  # tensors would sum too: hence the type check
                plain = type(total) is float or (type(total) is int and -(1 << 62) < total < (1 << 62))
            except (TypeError, OverflowError):
                plain = False
            if not plain:
                values = _plain_values(values)
            for i in range(0, len(steps), _CHUNK):
                chunks.append(pack_chunk(rid, ids[k], steps[i:i + _CHUNK], times[i:i + _CHUNK],
                                         values[i:i + _CHUNK]))
        out: dict[str, list[tuple[Any, ...]]] = {"metrics": chunks}
        system = self._system
        out["system"] = [(rid, *system.popleft()) for _ in range(len(system))]
        events = self._events
        out["events"] = [(rid, *events.popleft()) for _ in range(len(events))]
        arts = []
        for _ in range(len(self._artifacts)):
            path, kind = self._artifacts.popleft()
            try:
                arts.append((rid, _utf8(str(path)), _utf8(str(kind)), path.stat().st_size, sha256_file(path), _now()))
            except OSError as exc:
                out["events"].append((rid, _now(), "warning", f"artifact {path} not recorded: {exc}", "{}"))
        out["artifacts"] = arts
        out["media"] = self._write_media(rid)
        return out

    def _merge_pending(self, batch: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
        if self._pending is None:
            return batch
        return {k: self._pending.get(k, []) + v for k, v in batch.items()}

    def _flush(self) -> int:
        """Write what is buffered; returns how many log calls it took from the buffer."""
        with self._lock:
            n = len(self._metrics)
            if self._store is None:
                self._metrics.clear()
                self._media.clear()
                self._system.clear()
                self._events.clear()
                self._artifacts.clear()
                return n
            try:
                batch = self._merge_pending(self._drain())
            except sqlite3.Error as exc:  # registering new keys failed
                if not _locked(exc):  # a lock keeps the values for the next flush; else they are lost
                    self._dropped += n
                    self._store_failed(exc)
                return n
            except Exception as exc:  # a tensor that cannot be read: never break training
                self._warn_once(f"lmdev: could not convert logged values ({exc}); they are dropped")
                return n
            self._pending = None
            if not any(batch.values()) and _now() - self._last_beat < self.flush_interval:
                return n
            now = _now()
            try:
                self._write(batch, now)
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" in text or "busy" in text) and len(batch["metrics"]) < _MAX_PENDING_CHUNKS:
                    self._pending = batch  # another process held the lock too long: retry later
                else:
                    self._lost(batch, exc)
            except sqlite3.Error as exc:
                self._lost(batch, exc)
            return n

    def _write(self, batch: dict[str, list[tuple[Any, ...]]], now: float) -> None:
        store = self._store
        assert store is not None
        events = batch["events"]
        if self._failed is not None:  # the store works again: say what was lost
            events = [*events, (self._rid, now, "error", f"{self._dropped} values were not stored: "
                                f"{self._failed}", "{}")]
        store.insert_batch(self._rid, metrics=batch["metrics"], system=batch["system"], events=events,
                           artifacts=batch["artifacts"], heartbeat=now, media=batch.get("media", ()))
        self._last_beat = now
        if self._failed is not None:
            self._failed = None
            self._dropped = 0

    def _lost(self, batch: dict[str, list[tuple[Any, ...]]], exc: BaseException) -> None:
        self._dropped += (sum(chunk[2] for chunk in batch["metrics"]) + len(batch["system"])
                          + len(batch.get("media", ())))
        self._store_failed(exc)

    def _store_failed(self, exc: BaseException) -> None:
        path = self._store.path if self._store is not None else "the run store"
        self._failed = f"{type(exc).__name__}: {exc}"
        self._warn_once(f"lmdev: cannot write to {path} ({exc}); training continues but metrics of "
                        f"run {self.id} are being dropped")

    def _warn_once(self, message: str) -> None:
        if not self._warned:
            self._warned = True
            warnings.warn(message, LmdevWarning, stacklevel=2)


class RunConfig(MutableMapping[str, Any]):
    """``run.config``: the run's config, read like a dict; changes are stored at once.

    ``run.config["lr"]``, ``run.config.lr``, ``"lr" in run.config``, ``dict(run.config)``;
    ``run.config["lr"] = 0.1`` and ``run.config.update({...})`` merge into the stored config
    (values made JSON, secret-looking ones redacted, as ``lmdev.init(config=...)``)."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def __getitem__(self, key: str) -> Any:
        return self._run.info.config[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._run.info.config[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setitem__(self, key: str, value: Any) -> None:
        self._run.log_config({key: value})

    def __delitem__(self, key: str) -> None:
        raise TypeError("a run's config entries cannot be removed (set a new value instead)")

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self._run.info.config))

    def __len__(self) -> int:
        return len(self._run.info.config)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Merge ``other`` (a mapping, a dataclass, a Namespace) and ``kwargs`` in one write."""
        items = jsonable(other) if other != () else {}
        if not isinstance(items, dict):
            raise TypeError("run.config.update() takes a mapping, a dataclass or an argparse Namespace")
        self._run.log_config({**items, **kwargs})

    def __repr__(self) -> str:
        return f"RunConfig({self._run.info.config!r})"


class RunSummary(MutableMapping[str, Any]):
    """``run.summary``: each metric's last value, with what the user set on top.

    Reading flushes what is buffered and asks the store, so it reflects everything logged so
    far. ``run.summary["best/accuracy"] = 0.98`` (numbers, strings, lists, dicts) is stored at
    once and wins over the metric's last value."""

    def __init__(self, run: Run) -> None:
        self._run = run

    def _values(self) -> dict[str, Any]:
        run = self._run
        out: dict[str, Any] = {}
        run.flush()
        with run._lock:
            if run._store is not None and not run.finished:
                try:
                    out = {m.key: m.last for m in run._store.summaries(run.info)}
                except (sqlite3.Error, LmdevError):
                    out = {}
        out.update(run.info.summary)
        return out

    def __getitem__(self, key: str) -> Any:
        return self._values()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        raise TypeError("summary entries cannot be removed (set a new value instead)")

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __len__(self) -> int:
        return len(self._values())

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set several summary values in one write."""
        items = {str(k): _summary_value(v) for k, v in {**dict(other), **kwargs}.items()}
        run = self._run
        run.info.summary.update(items)
        run._write_run(lambda s: s.merge_run_json(run._rid, "summary", items))

    def __repr__(self) -> str:
        return f"RunSummary({self._values()!r})"


def _summary_value(value: Any) -> Any:
    """A summary value as JSON the store can hold: numbers (tensors read), text, lists, dicts;
    NaN and infinities as their names (JSON has no NaN)."""
    if isinstance(value, Media):
        raise TypeError("a summary holds numbers, text, lists and dicts, not media")
    try:
        value = _coerce("summary", value)
    except TypeError:
        value = jsonable(value)
    if hasattr(value, "detach"):
        value = float(value.cpu().item())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return redact_value(value)


# -- the runs of this process ----------------------------------------------------------------
# The run lifecycle's process-wide half: which runs are open, which one is active, finishing
# them at exit and forgetting them in a forked child.

_runs: list[Run] = []
_registry_lock = threading.Lock()
_hooks_installed = False
_uncaught = False


def active_run() -> Run | None:
    """The newest unfinished run started in this process, if any."""
    with _registry_lock:
        return _runs[-1] if _runs else None


def register(run: Run) -> None:
    """Make ``run`` the active run of this process (finished at exit unless finished before)."""
    with _registry_lock:
        _runs.append(run)
    _install_hooks()


def finish_previous() -> list[Run]:
    """Finish the unfinished runs this process owns (a notebook cell run again calls
    ``lmdev.init`` again: W&B finishes the previous run too). Returns them."""
    with _registry_lock:
        owned = [r for r in _runs if r.owner]
    for run in owned:
        run.finish()
    return owned


def _forget(run: Run) -> None:
    with _registry_lock:
        if run in _runs:
            _runs.remove(run)


def _at_exit() -> None:
    while True:
        run = active_run()
        if run is None:
            return
        try:
            run.finish("failed" if _uncaught else "finished")
        except Exception:
            _forget(run)


def _after_fork_in_child() -> None:
    global _runs, _registry_lock
    _registry_lock = threading.Lock()  # another thread may have held it at the fork
    for run in _runs:
        run._after_fork()
    _runs = []


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    previous = sys.excepthook

    def hook(exc_type: Any, exc: Any, tb: Any) -> None:
        global _uncaught
        _uncaught = True
        run = active_run()
        if run is not None:
            run.event(f"{exc_type.__name__}: {exc}", level="error")
        previous(exc_type, exc, tb)

    sys.excepthook = hook
