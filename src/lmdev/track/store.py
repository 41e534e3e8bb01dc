"""The run store: one SQLite file (WAL mode) under ``LMDEV_HOME``, its schema, migrations, queries.

Layout: ``$LMDEV_HOME/lmdev.db`` and ``$LMDEV_HOME/runs/<run-id>/`` (artifacts, logs). The schema
is versioned with ``PRAGMA user_version``; ``MIGRATIONS[i]`` takes a store from version ``i`` to
``i + 1``. A store written by a newer lmdev is refused. The schema is documented in
``docs/schemas/runs.md``.

Several processes may write at once: every write is one short ``BEGIN IMMEDIATE`` transaction
and every connection waits for the lock (``busy_timeout``) instead of failing.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import time
from array import array
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError
from lmdev.names import run_path
from lmdev.track.types import (
    Artifact,
    Event,
    MediaItem,
    MetricSummary,
    RunInfo,
    SystemSample,
)

DB_NAME = "lmdev.db"
_BIG_ENDIAN = sys.byteorder == "big"  # chunks are stored little-endian
BUSY_TIMEOUT_S = 60.0
STALE_AFTER_S = 600.0  # a run on another host with no heartbeat for this long is killed

_V1 = [
    """CREATE TABLE runs (
        rid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        project TEXT NOT NULL,
        status TEXT NOT NULL,
        start_time REAL NOT NULL,
        end_time REAL,
        heartbeat REAL,
        config TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '[]',
        parent_id TEXT,
        git_commit TEXT,
        git_dirty INTEGER,
        host TEXT NOT NULL DEFAULT '',
        pid INTEGER,
        pid_start REAL,
        lmdev_version TEXT NOT NULL DEFAULT '',
        framework_versions TEXT NOT NULL DEFAULT '{}',
        data_fingerprints TEXT NOT NULL DEFAULT '{}',
        exit_code INTEGER,
        command TEXT
    )""",
    "CREATE INDEX runs_name ON runs(name)",
    "CREATE TABLE metric_keys (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE)",
    # Metrics are stored in chunks: one row per (run, key, flush) holding that flush's points
    # as packed little-endian arrays. One SQLite row per point costs ~2-4 us to insert with its
    # index; a chunk costs about as much as one row, whatever its length.
    """CREATE TABLE metrics (
        run INTEGER NOT NULL, key INTEGER NOT NULL, n INTEGER NOT NULL,
        step_min INTEGER NOT NULL, step_max INTEGER NOT NULL,
        time_min REAL NOT NULL, time_max REAL NOT NULL,
        value_min REAL, value_max REAL, nonfinite INTEGER NOT NULL DEFAULT 0,
        steps BLOB NOT NULL, times BLOB NOT NULL, vals BLOB NOT NULL
    )""",
    "CREATE INDEX metrics_run_key ON metrics(run, key)",
    """CREATE TABLE system_metrics (
        run INTEGER NOT NULL, time REAL NOT NULL, rank INTEGER NOT NULL,
        device TEXT NOT NULL, key TEXT NOT NULL, value REAL
    )""",
    "CREATE INDEX system_metrics_run ON system_metrics(run, key)",
    """CREATE TABLE events (
        run INTEGER NOT NULL, time REAL NOT NULL, level TEXT NOT NULL,
        message TEXT NOT NULL, data TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX events_run ON events(run)",
    """CREATE TABLE artifacts (
        run INTEGER NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL,
        size INTEGER NOT NULL, sha256 TEXT NOT NULL, time REAL NOT NULL
    )""",
    "CREATE INDEX artifacts_run ON artifacts(run)",
]

# Version 2: lineage (a fork's step in its parent), a summary the user sets, and media (histograms,
# images, text, tables) in a table of their own so that the scalar path is untouched.
_V2 = [
    "ALTER TABLE runs ADD COLUMN fork_step INTEGER",
    "ALTER TABLE runs ADD COLUMN summary TEXT NOT NULL DEFAULT '{}'",
    "CREATE INDEX runs_parent ON runs(parent_id)",
    # payload: JSON (histogram edges and counts, text, table, image size/caption); path: a file
    # under the run's folder (images), relative to it
    """CREATE TABLE media (
        run INTEGER NOT NULL, step INTEGER NOT NULL, key TEXT NOT NULL, kind TEXT NOT NULL,
        time REAL NOT NULL, payload TEXT NOT NULL DEFAULT '{}', path TEXT
    )""",
    "CREATE INDEX media_run ON media(run, key, step)",
]

# MIGRATIONS[i] takes a store from schema version i to i + 1 (version 0 = empty file).
MIGRATIONS: list[list[str]] = [_V1, _V2]
SCHEMA_VERSION = len(MIGRATIONS)

_RUN_COLUMNS = ("id, name, project, status, start_time, end_time, config, tags, parent_id, "
                "git_commit, git_dirty, host, pid, lmdev_version, framework_versions, "
                "data_fingerprints, exit_code, command, heartbeat, fork_step, summary")


class StoreUnavailable(LmdevError):
    """The store cannot be opened or written (read-only folder, full disk): not corruption."""


class DamagedRun(LmdevError):
    """One run's rows cannot be read (bad JSON, wrong types, a truncated chunk): the rest can."""

    exit_code = 1  # the store was read and a problem found: not a usage error

    def __init__(self, run_id: object, problem: str) -> None:
        super().__init__(f"run {run_id!r} in the store is damaged ({problem})",
                         f"remove it with `lmdev runs rm {run_id}`, or repair the row with sqlite3")
        self.run_id = str(run_id)


MAX_LIMIT = (1 << 63) - 1


def home(path: str | os.PathLike[str] | None = None) -> Path:
    """The lmdev state folder: ``path``, else ``$LMDEV_HOME``, else ``./.lmdev``."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("LMDEV_HOME") or ".lmdev")


def run_dir(home_dir: Path, run_id: str) -> Path:
    """The run's folder, checked to stay inside the store (``lmdev.names.run_path``)."""
    return run_path(home_dir, run_id)


def read_only_requested(flag: bool = False) -> bool:
    """Whether a reading command should open the store read-only: ``--read-only`` or
    ``LMDEV_READ_ONLY=1``."""
    return bool(flag) or os.environ.get("LMDEV_READ_ONLY", "").strip().lower() in ("1", "true", "yes", "on")


def hostname() -> str:
    return socket.gethostname()


def _corrupt(path: Path, exc: BaseException) -> LmdevError:
    return LmdevError(
        f"the run store {path} is not a readable SQLite database ({exc})",
        f"move it aside to start a new store (mv {path} {path}.corrupt), or try to salvage it "
        f"with `sqlite3 {path} .recover | sqlite3 {path}.recovered`",
    )


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    # OperationalError is a lock, a full disk or a read-only file; the rest ("file is not a
    # database", "database disk image is malformed") means the file itself is damaged.
    return not isinstance(exc, sqlite3.OperationalError)


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Sequence[str]] = MIGRATIONS) -> int:
    """Bring the store to the newest schema; returns the version it was at before."""
    target = len(migrations)
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > target:
        raise LmdevError(
            f"the run store {path} was written by a newer lmdev (schema version {found}; "
            f"this lmdev reads up to {target})",
            "upgrade lmdev (pip install -U lmdev), or point LMDEV_HOME at another folder",
        )
    if found == target:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])  # another process may have won
        for version in range(found, target):
            for statement in migrations[version]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {int(target)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def connect(path: Path, migrations: Sequence[Sequence[str]] = MIGRATIONS) -> sqlite3.Connection:
    """Open (and create or migrate) the store at ``path``. Raises ``sqlite3.OperationalError``
    when the file cannot be opened or written, ``LmdevError`` when it is corrupt or too new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                           check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        for attempt in range(50):  # switching to WAL takes a lock that the busy handler may skip
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05)
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"cannot switch {path} to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL: durable at checkpoints, never corrupt
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: index pages of large batches stay cached
        migrate(conn, path, migrations)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if _is_corruption(exc):
            raise _corrupt(path, exc) from None
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open an existing store for reading only: nothing is created, migrated or written.

    While a writer is at work (its ``-wal`` file exists) ``mode=ro``, which sees what it adds;
    otherwise, and where ``mode=ro`` cannot work (read-only media), ``immutable=1``, which reads
    the file as it is and creates no ``-wal``/``-shm`` file. A store of an older schema is
    refused (it needs one writable open to be upgraded)."""
    if not path.is_file():
        raise StoreUnavailable(f"no run store at {path}", "set LMDEV_HOME or --home to the folder of lmdev.db")
    problem: BaseException | None = None
    live = path.with_name(path.name + "-wal").exists()
    for flags in ("mode=ro", "immutable=1") if live else ("immutable=1",):
        try:
            conn = sqlite3.connect(f"{path.absolute().as_uri()}?{flags}", uri=True, timeout=BUSY_TIMEOUT_S,
                                   isolation_level=None, check_same_thread=False)
        except sqlite3.OperationalError as exc:
            problem = exc
            continue
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            conn.close()
            problem = exc
            continue
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _corrupt(path, exc) from None
        if version != SCHEMA_VERSION:
            conn.close()
            raise LmdevError(
                f"the run store {path} has schema version {version}; this lmdev reads {SCHEMA_VERSION}",
                "upgrade lmdev" if version > SCHEMA_VERSION else
                "open it once without --read-only / LMDEV_READ_ONLY to upgrade it")
        return conn
    raise StoreUnavailable(f"cannot open the run store {path} read-only: {problem}",
                           "check that the file is readable")


def _json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def run_alive(host: str, pid: int | None, pid_start: float | None, last_seen: float, now: float,
              stale_after: float = STALE_AFTER_S) -> bool:
    """The one liveness rule: a run on this host lives while its process does (same pid, same
    start time when known); a run on another host while its heartbeat (``last_seen``) is newer
    than ``stale_after`` seconds."""
    if host == hostname():
        return _pid_alive(pid, pid_start)
    return now - last_seen < stale_after


def _pid_alive(pid: int | None, pid_start: float | None) -> bool:
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if pid_start is not None and abs(proc.create_time() - pid_start) > 1.0:
            return False  # the pid was reused by another process
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


class Store:
    """A connection to the store with its writes and queries. Not shared between threads."""

    def __init__(self, home_dir: str | os.PathLike[str] | None = None, *, read_only: bool = False) -> None:
        self.home = home(home_dir)
        self.path = self.home / DB_NAME
        self.read_only = read_only
        self.damaged: list[DamagedRun] = []  # the runs the last list_runs skipped
        try:
            self.conn = connect_read_only(self.path) if read_only else connect(self.path)
        except (sqlite3.OperationalError, OSError) as exc:
            raise StoreUnavailable(f"cannot open the run store {self.path}: {exc}",
                                   "check that LMDEV_HOME points to a writable folder with free "
                                   "space") from None
        self._key_ids: dict[str, int] = {}

    @classmethod
    def existing(cls, home_dir: str | os.PathLike[str] | None = None) -> Store:
        """Open the store for reading commands; a missing store is an empty one, and nothing is
        created on disk for it (an empty in-memory store, read-only)."""
        path = home(home_dir) / DB_NAME
        if path.exists():
            return cls(home_dir)
        store = cls.__new__(cls)
        store.home = home(home_dir)
        store.path = path
        store.read_only = True
        store.damaged = []
        store._key_ids = {}
        store.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        migrate(store.conn, path)
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with the write lock up front (no deadlock on upgrade)."""
        if self.read_only:
            raise LmdevError(f"the run store {self.path} is open read-only",
                             "run the command without --read-only / LMDEV_READ_ONLY")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise LmdevError(f"cannot read the run store {self.path}: {exc}") from None
            raise _corrupt(self.path, exc) from None

    @staticmethod
    @contextmanager
    def _damage(run: RunInfo) -> Iterator[None]:
        """Rows of ``run`` that cannot be decoded (a truncated chunk, bad JSON) -> DamagedRun."""
        try:
            yield
        except (ValueError, TypeError, StopIteration, OverflowError) as exc:
            raise DamagedRun(run.id, f"{type(exc).__name__}: {exc}") from None

    # -- writes -------------------------------------------------------------------------------

    def create_run(self, info: RunInfo, pid_start: float | None = None) -> int:
        """Insert a run (or find it, when another process of the same run created it first)."""
        with self.write() as c:
            c.execute(
                "INSERT OR IGNORE INTO runs (id, name, project, status, start_time, heartbeat, config, "
                "tags, parent_id, git_commit, git_dirty, host, pid, pid_start, lmdev_version, "
                "framework_versions, data_fingerprints, command, fork_step, summary) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (info.id, info.name, info.project, info.status, info.start_time, info.start_time,
                 _json(info.config), _json(info.tags), info.parent_id, info.git_commit,
                 None if info.git_dirty is None else int(info.git_dirty), info.host, info.pid,
                 pid_start, info.lmdev_version, _json(info.framework_versions),
                 _json(info.data_fingerprints), None if info.command is None else _json(info.command),
                 info.fork_step, _json(info.summary)),
            )
            return int(c.execute("SELECT rid FROM runs WHERE id = ?", (info.id,)).fetchone()[0])

    def update_run(self, rid: int, **fields: Any) -> None:
        """Set columns of a run; dicts and lists are stored as JSON."""
        if not fields:
            return
        cols, values = [], []
        for name, value in fields.items():
            if name not in _UPDATABLE:
                raise ValueError(f"not an updatable run column: {name}")
            if isinstance(value, (dict, list, tuple)):
                value = _json(value)
            elif isinstance(value, bool):
                value = int(value)
            cols.append(f"{name} = ?")
            values.append(value)
        with self.write() as c:
            c.execute(f"UPDATE runs SET {', '.join(cols)} WHERE rid = ?", (*values, rid))

    def merge_run_json(self, rid: int, column: str, items: dict[str, Any]) -> None:
        """Merge ``items`` into a JSON-object column (config, framework_versions, data_fingerprints)."""
        if column not in ("config", "framework_versions", "data_fingerprints", "summary"):
            raise ValueError(column)
        with self.write() as c:
            row = c.execute(f"SELECT {column} FROM runs WHERE rid = ?", (rid,)).fetchone()
            current = json.loads(row[0]) if row and row[0] else {}
            current.update(items)
            c.execute(f"UPDATE runs SET {column} = ? WHERE rid = ?", (_json(current), rid))

    def metric_key_ids(self, keys: Iterable[str]) -> dict[str, int]:
        """Ids of metric keys (all known ones), creating the new ones in one write transaction."""
        new = [k for k in keys if k not in self._key_ids]
        if new:
            with self.write() as c:
                self.key_ids(c, new)
        return self._key_ids

    def key_ids(self, c: sqlite3.Connection, keys: Iterable[str]) -> dict[str, int]:
        """Ids of metric keys, creating the new ones (inside the caller's transaction)."""
        ids = self._key_ids
        new = [k for k in keys if k not in ids]
        if new:
            c.executemany("INSERT OR IGNORE INTO metric_keys (key) VALUES (?)", [(k,) for k in new])
            for k in new:
                ids[k] = int(c.execute("SELECT id FROM metric_keys WHERE key = ?", (k,)).fetchone()[0])
        return ids

    def insert_batch(self, rid: int, metrics: Sequence[tuple[Any, ...]] = (),
                     system: Sequence[tuple[Any, ...]] = (), events: Sequence[tuple[Any, ...]] = (),
                     artifacts: Sequence[tuple[Any, ...]] = (), heartbeat: float | None = None,
                     media: Sequence[tuple[Any, ...]] = ()) -> None:
        """Write one batch in one transaction.

        metrics: chunks from ``pack_chunk``; system rows: (run, time, rank,
        device, key, value); events: (run, time, level, message, data_json); artifacts:
        (run, path, kind, size, sha256, time); media: (run, step, key, kind, time, payload_json,
        path).
        """
        with self.write() as c:
            if metrics:
                c.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                              metrics)
            if system:
                c.executemany("INSERT INTO system_metrics VALUES (?, ?, ?, ?, ?, ?)", system)
            if events:
                c.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", events)
            if artifacts:
                c.executemany("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?, ?)", artifacts)
            if media:
                c.executemany("INSERT INTO media VALUES (?, ?, ?, ?, ?, ?, ?)", media)
            if heartbeat is not None:
                c.execute("UPDATE runs SET heartbeat = ? WHERE rid = ?", (heartbeat, rid))

    def reopen_run(self, rid: int, pid: int | None, pid_start: float | None, host: str,
                   command: list[str] | None) -> None:
        """A run resumed by a new process: running again, with that process's pid and host."""
        now = time.time()
        with self.write() as c:
            c.execute("UPDATE runs SET status = 'running', end_time = NULL, exit_code = NULL, pid = ?, "
                      "pid_start = ?, host = ?, heartbeat = ?, command = coalesce(?, command) WHERE rid = ?",
                      (pid, pid_start, host, now, None if command is None else _json(command), rid))

    def rewind(self, rid: int, step: int) -> int:
        """Drop the run's metric points logged at a step greater than ``step``; returns how many.

        Used when a run resumes from a checkpoint at ``step``: what the earlier process logged
        past it is replaced by what the resumed one logs. Media rows past ``step`` go too (their
        image files stay in the run's folder until the resumed run writes the same names). Chunks wholly past ``step`` are
        deleted; a chunk that straddles it is rewritten in place (keeping its row order) with
        only its points at or before ``step``. One transaction: readers see before or after.
        """
        dropped = 0
        with self.write() as c:
            rows = c.execute("SELECT rowid, key, n, step_min, steps, times, vals FROM metrics "
                             "WHERE run = ? AND step_max > ?", (rid, step)).fetchall()
            for rowid, kid, n, step_min, steps, times, vals in rows:
                if step_min > step:
                    c.execute("DELETE FROM metrics WHERE rowid = ?", (rowid,))
                    dropped += int(n)
                    continue
                st, ts, vs = unpack("q", steps), unpack("d", times), unpack("d", vals)
                keep = [i for i in range(len(st)) if st[i] <= step]
                dropped += len(st) - len(keep)
                chunk = pack_chunk(rid, kid, [st[i] for i in keep], [ts[i] for i in keep],
                                   [vs[i] for i in keep])
                c.execute("UPDATE metrics SET n = ?, step_min = ?, step_max = ?, time_min = ?, "
                          "time_max = ?, value_min = ?, value_max = ?, nonfinite = ?, steps = ?, "
                          "times = ?, vals = ? WHERE rowid = ?", (*chunk[2:], rowid))
            dropped += c.execute("DELETE FROM media WHERE run = ? AND step > ?", (rid, step)).rowcount
        return dropped

    def reap(self, now: float | None = None, stale_after: float = STALE_AFTER_S) -> list[str]:
        """Mark ``killed`` the running runs whose process is gone; returns their ids.

        A run on this host is gone when its process no longer exists (or its pid was reused);
        a run on another host when its heartbeat is older than ``stale_after`` seconds.
        """
        if self.read_only:
            return []  # a read-only store: report the runs as they are
        now = time.time() if now is None else now
        with self._reading():
            rows = self.conn.execute(
                "SELECT rid, id, host, pid, pid_start, heartbeat, start_time FROM runs "
                "WHERE status = 'running'").fetchall()
        dead = []
        for rid, run_id, host, pid, pid_start, beat, start in rows:
            if not run_alive(host, pid, pid_start, beat or start, now, stale_after):
                dead.append((rid, run_id, beat or start))
        if dead:
            try:
                with self.write() as c:
                    for rid, _, end in dead:
                        c.execute("UPDATE runs SET status = 'killed', end_time = ? "
                                  "WHERE rid = ? AND status = 'running'", (end, rid))
                        c.execute("INSERT INTO events VALUES (?, ?, 'error', ?, '{}')",
                                  (rid, end, "run marked killed: its process is gone"))
            except sqlite3.OperationalError:
                return []  # a read-only store: report them as they are
        return [run_id for _, run_id, _ in dead]

    def delete_run(self, run: RunInfo) -> None:
        with self.write() as c:
            rid = self._rid(run.id)
            for table in ("metrics", "system_metrics", "events", "artifacts", "media"):
                c.execute(f"DELETE FROM {table} WHERE run = ?", (rid,))
            c.execute("DELETE FROM runs WHERE rid = ?", (rid,))

    # -- queries ------------------------------------------------------------------------------

    def _rid(self, run_id: str) -> int:
        row = self.conn.execute("SELECT rid FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise LmdevError(f"no run with id {run_id}", "see `lmdev runs list`")
        return int(row[0])

    @staticmethod
    def _info(row: Sequence[Any]) -> RunInfo:
        """A row as a RunInfo; DamagedRun (naming the run and the column) when it is not one."""
        (rid, name, project, status, start, end, config, tags, parent, commit, dirty, host, pid,
         version, fw, data, exit_code, command, beat, fork_step, summary) = row
        try:
            for column, value in (("id", rid), ("name", name), ("project", project), ("status", status)):
                if not isinstance(value, str):
                    raise ValueError(f"{column} is {type(value).__name__}, not text")
            for column, value in (("start_time", start), ("end_time", end), ("heartbeat", beat)):
                if not (value is None and column != "start_time" or _is_number(value)):
                    raise ValueError(f"{column} is {type(value).__name__}, not a number")
            for column, value in (("pid", pid), ("exit_code", exit_code), ("git_dirty", dirty),
                                  ("fork_step", fork_step)):
                if value is not None and not isinstance(value, int):
                    raise ValueError(f"{column} is {type(value).__name__}, not an integer")
            return RunInfo(
                id=rid, name=name, project=project, status=status, start_time=float(start),
                end_time=end, config=_json_column("config", config, dict, "{}"),
                tags=[str(t) for t in _json_column("tags", tags, list, "[]")], parent_id=_text(parent),
                git_commit=_text(commit), git_dirty=None if dirty is None else bool(dirty),
                host=_text(host) or "", pid=pid, lmdev_version=_text(version) or "",
                framework_versions=_json_column("framework_versions", fw, dict, "{}"),
                data_fingerprints=_json_column("data_fingerprints", data, dict, "{}"), exit_code=exit_code,
                command=None if command is None else [str(c) for c in _json_column("command", command, list, "[]")],
                heartbeat=beat, fork_step=fork_step, summary=_json_column("summary", summary, dict, "{}"),
            )
        except (ValueError, TypeError) as exc:
            raise DamagedRun(rid, str(exc)) from None

    def list_runs(self, project: str | None = None, status: str | None = None,
                  limit: int | None = None) -> list[RunInfo]:
        """Runs, newest first."""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs"
        where: list[str] = []
        args: list[str | int] = []
        if project is not None:
            _sql_text(project, "project")
            where.append("project = ?")
            args.append(project)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_time DESC, rid DESC"
        if limit is not None:
            if type(limit) is not int or not 0 <= limit <= MAX_LIMIT:
                raise LmdevError(f"limit must be a whole number from 0 to {MAX_LIMIT}, not {limit!r}")
            sql += " LIMIT ?"
            args.append(limit)
        self.damaged = []
        out = []
        with self._reading():
            rows = self.conn.execute(sql, args).fetchall()
        for r in rows:
            try:
                out.append(self._info(r))
            except DamagedRun as exc:
                self.damaged.append(exc)
        return out

    def get_run(self, ref: str) -> RunInfo:
        """A run by its id, a unique id prefix, or its name (the newest run with that name).

        An empty reference matches nothing; a prefix of several ids is an error naming them."""
        if not isinstance(ref, str) or not ref.strip():
            raise LmdevError("an empty run reference matches no run",
                             "give a run id, an id prefix or a run name (see `lmdev runs list`)")
        _sql_text(ref, "run reference")
        with self._reading():
            rows = self.conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", (ref,)).fetchall()
            if not rows:  # a prefix, compared exactly (LIKE would ignore case)
                rows = self.conn.execute(
                    f"SELECT {_RUN_COLUMNS} FROM runs WHERE substr(id, 1, ?) = ? "
                    "ORDER BY start_time DESC", (len(ref), ref)).fetchall()
            if not rows:  # a name: the newest run of that name
                rows = self.conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE name = ? "
                                         "ORDER BY start_time DESC, rid DESC LIMIT 1", (ref,)).fetchall()
        if not rows:
            raise LmdevError(f"no run matches {ref!r}", "give a run id, an id prefix or a run name "
                             "(see `lmdev runs list`)")
        if len(rows) > 1:
            ids = ", ".join(str(r[0]) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
            raise LmdevError(f"{ref!r} matches {len(rows)} runs ({ids})",
                             "give a longer id prefix")
        return self._info(rows[0])

    def metrics(self, run: RunInfo, keys: Sequence[str] | None = None) -> dict[str, list[tuple[int, float, float]]]:
        """{key: [(step, value, time), ...]} in step order (points of one step in logging order)."""
        out: dict[str, list[tuple[int, float, float]]] = {}
        with self._reading(), self._damage(run):
            rid = self._rid(run.id)
            for key, steps, times, vals in self.conn.execute(
                    "SELECT k.key, m.steps, m.times, m.vals FROM metrics m "
                    "JOIN metric_keys k ON k.id = m.key WHERE m.run = ? ORDER BY k.key, m.rowid", (rid,)):
                if keys is not None and key not in keys:
                    continue
                out.setdefault(key, []).extend(zip(unpack("q", steps), unpack("d", vals), unpack("d", times)))
        for points in out.values():
            if any(points[i][0] > points[i + 1][0] for i in range(len(points) - 1)):
                points.sort(key=lambda p: p[0])  # stable: one step's points keep their order
        return out

    def metric_count(self, run: RunInfo) -> int:
        """How many metric points the run has."""
        with self._reading():
            return int(self.conn.execute("SELECT coalesce(sum(n), 0) FROM metrics WHERE run = ?",
                                         (self._rid(run.id),)).fetchone()[0])

    def summaries(self, run: RunInfo) -> list[MetricSummary]:
        with self._reading(), self._damage(run):
            rid = self._rid(run.id)
            rows = self.conn.execute(
                "SELECT k.key, m.key, sum(m.n), min(m.step_min), max(m.step_max), min(m.value_min), "
                "max(m.value_max), sum(m.nonfinite) FROM metrics m JOIN metric_keys k ON k.id = m.key "
                "WHERE m.run = ? GROUP BY m.key ORDER BY k.key", (rid,)).fetchall()
            out = []
            for key, kid, n, first, last_step, lo, hi, bad in rows:
                # the last value: the last point logged at the highest step
                steps, vals = self.conn.execute(
                    "SELECT steps, vals FROM metrics WHERE run = ? AND key = ? AND step_max = ? "
                    "ORDER BY rowid DESC LIMIT 1", (rid, kid, last_step)).fetchone()
                st, vs = unpack("q", steps), unpack("d", vals)
                last = next(vs[i] for i in range(len(st) - 1, -1, -1) if st[i] == last_step)
                out.append(MetricSummary(key, int(n), first, last_step, last,
                                         None if lo is None else float(lo),
                                         None if hi is None else float(hi), int(bad or 0)))
        return out

    def system(self, run: RunInfo) -> list[SystemSample]:
        with self._reading():
            return [SystemSample(*r) for r in self.conn.execute(
                "SELECT time, rank, device, key, value FROM system_metrics WHERE run = ? "
                "ORDER BY time, rowid", (self._rid(run.id),))]

    def events(self, run: RunInfo) -> list[Event]:
        with self._reading(), self._damage(run):
            return [Event(t, str(level), str(msg), json.loads(data or "{}")) for t, level, msg, data in
                    self.conn.execute("SELECT time, level, message, data FROM events WHERE run = ? "
                                      "ORDER BY time, rowid", (self._rid(run.id),))]

    def last_step(self, run: RunInfo) -> int | None:
        """The highest step the run logged a metric or a media item at (None: nothing yet)."""
        with self._reading():
            rid = self._rid(run.id)
            row = self.conn.execute("SELECT max(s) FROM (SELECT max(step_max) AS s FROM metrics WHERE run = ? "
                                    "UNION ALL SELECT max(step) FROM media WHERE run = ?)", (rid, rid)).fetchone()
        return None if row[0] is None else int(row[0])

    def forks(self, run: RunInfo) -> list[RunInfo]:
        """The runs forked from ``run`` (their ``parent_id`` is its id), oldest first."""
        with self._reading():
            rows = self.conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE parent_id = ? "
                                     "ORDER BY start_time, rid", (run.id,)).fetchall()
        return [self._info(r) for r in rows]

    def summary(self, run: RunInfo) -> dict[str, Any]:
        """The run's summary: each metric's last value, replaced or added to by what the user
        set (``run.summary[...] = ...``, stored in the ``summary`` column)."""
        out: dict[str, Any] = {m.key: m.last for m in self.summaries(run)}
        out.update(run.summary)
        return out

    def resumes(self, run: RunInfo) -> list[Event]:
        """The run's resume events (``data["kind"] == "resume"``: ``step`` and ``dropped``)."""
        return [e for e in self.events(run) if e.data.get("kind") == "resume"]

    def media(self, run: RunInfo, key: str | None = None, kind: str | None = None) -> list[MediaItem]:
        """The run's logged media (histograms, images, text, tables), by key then step.

        ``key`` / ``kind`` filter (kinds: ``histogram``, ``image``, ``text``, ``table``). Each
        :class:`MediaItem` has ``payload`` (the decoded JSON: a histogram's ``edges`` and
        ``counts``, a text's ``text``, a table's ``columns`` and ``rows``, an image's ``width``,
        ``height`` and ``caption``) and, for images, ``path``: the PNG's absolute path."""
        sql = "SELECT step, key, kind, time, payload, path FROM media WHERE run = ?"
        args: list[Any] = []
        if key is not None:
            sql += " AND key = ?"
            args.append(key)
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        with self._reading(), self._damage(run):
            rid = self._rid(run.id)
            rows = self.conn.execute(sql + " ORDER BY key, step, rowid", (rid, *args)).fetchall()
            folder = run_dir(self.home, run.id)
            return [MediaItem(int(step), str(k), str(kd), float(t), json.loads(payload or "{}"),
                              None if path is None else folder / str(path))
                    for step, k, kd, t, payload, path in rows]

    def media_keys(self, run: RunInfo) -> dict[str, str]:
        """{key: kind} of the run's media, sorted by key."""
        with self._reading():
            return {str(k): str(kd) for k, kd in self.conn.execute(
                "SELECT DISTINCT key, kind FROM media WHERE run = ? ORDER BY key", (self._rid(run.id),))}

    def artifacts(self, run: RunInfo) -> list[Artifact]:
        with self._reading():
            return [Artifact(*r) for r in self.conn.execute(
                "SELECT path, kind, size, sha256, time FROM artifacts WHERE run = ? "
                "ORDER BY time, rowid", (self._rid(run.id),))]

    # -- read side (query.py) -----------------------------------------------------------------

    def rid(self, run_id: str) -> int:
        """The run's row id (what its metrics, events, ... rows point to)."""
        return self._rid(run_id)

    def reading(self) -> AbstractContextManager[None]:
        """A block of reads: SQLite errors become the store's LmdevError (corrupt, locked)."""
        return self._reading()

    @staticmethod
    def process_alive(pid: int | None, pid_start: float | None) -> bool:
        """Whether the process ``pid`` (started at ``pid_start``, when known) still runs here."""
        return _pid_alive(pid, pid_start)


def _sql_text(value: str, what: str) -> None:
    """Text from a user that SQLite must compare: it must be valid UTF-8 (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LmdevError(f"the {what} {value!r} is not valid UTF-8 text", "give it in UTF-8") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _json_column(column: str, text: Any, kind: type, default: str) -> Any:
    if text is not None and not isinstance(text, str):
        raise ValueError(f"{column} is {type(text).__name__}, not JSON text")
    try:
        value = json.loads(text or default)
    except ValueError:
        raise ValueError(f"{column} is not valid JSON") from None
    if not isinstance(value, kind):
        raise ValueError(f"{column} is a JSON {type(value).__name__}, not a {kind.__name__}")
    return value


_UPDATABLE = {"name", "project", "status", "end_time", "heartbeat", "config", "tags", "parent_id", "fork_step",
              "git_commit", "git_dirty", "framework_versions", "data_fingerprints", "exit_code",
              "command", "pid", "pid_start", "host"}


def pack_chunk(rid: int, kid: int, steps: Sequence[int], times: Sequence[float],
               values: Sequence[float]) -> tuple[Any, ...]:
    """One metrics row for the points of one key: packed arrays plus their ranges."""
    vals = array("d", values)
    st = array("q", steps)
    ts = array("d", times)
    finite = [v for v in vals if v - v == 0] if not _all_finite(vals) else vals
    nonfinite = len(vals) - len(finite)
    if _BIG_ENDIAN:
        for a in (vals, st, ts):
            a.byteswap()
    return (rid, kid, len(st), min(steps), max(steps), min(times), max(times),
            min(finite) if finite else None, max(finite) if finite else None, nonfinite,
            st.tobytes(), ts.tobytes(), vals.tobytes())


def _all_finite(vals: Sequence[float]) -> bool:
    total = sum(vals)
    return total - total == 0  # NaN or an infinity anywhere makes the sum non-finite


def unpack(code: str, blob: bytes) -> array[Any]:
    a = array(code)
    a.frombytes(blob)
    if _BIG_ENDIAN:
        a.byteswap()
    return a
