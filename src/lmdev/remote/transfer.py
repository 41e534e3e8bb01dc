"""Moving runs between stores: export on the remote, merge here, idempotently.

The cursor of a pulled run is read from the local store itself (points per metric key, system
samples, events), so a pull that dies half way leaves a consistent store and the next pull
continues where the last committed batch ended: pulling twice adds nothing. Metric values travel
as packed little-endian float64 arrays (base64), so a pulled curve is bit for bit the remote one.
"""

from __future__ import annotations

import base64
import json
import sys
from array import array
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lmdev.track.store import Store, pack_chunk, run_dir
from lmdev.track.types import RunInfo

_LITTLE = sys.byteorder == "little"
# the event the store's reaper adds locally when a pulled run's heartbeat is old; not the remote's
_REAPER_MESSAGE = "run marked killed: its process is gone"
_RUN_FIELDS = {f.name for f in fields(RunInfo)}


@dataclass
class MergeResult:
    run_id: str
    new_run: bool
    points: int
    system: int
    events: int
    status: str
    files: list[tuple[str, int]]  # (relative path, size) of files the caller may fetch
    remote_dir: str
    fetched: int = 0  # files copied here (with --checkpoints)


def _pack(code: str, values: list[Any]) -> str:
    a = array(code, values)
    if not _LITTLE:
        a.byteswap()
    return base64.b64encode(a.tobytes()).decode()


def _unpack(code: str, text: str) -> list[Any]:
    a = array(code)
    a.frombytes(base64.b64decode(text))
    if not _LITTLE:
        a.byteswap()
    return a.tolist()


def export_run(store: Store, run: RunInfo, cursor: dict[str, Any], checkpoints: bool) -> dict[str, Any]:
    """One run's info and everything past ``cursor`` (run on the remote)."""
    done = cursor.get("metrics", {})
    metrics = {}
    for key, points in store.metrics(run).items():
        new = points[int(done.get(key, 0)):]
        if new:
            metrics[key] = {"steps": _pack("q", [p[0] for p in new]), "values": _pack("d", [p[1] for p in new]),
                            "times": _pack("d", [p[2] for p in new])}
    system = [[s.time, s.rank, s.device, s.key, s.value] for s in store.system(run)[int(cursor.get("system", 0)):]]
    events = [[e.time, e.level, e.message, e.data] for e in store.events(run)[int(cursor.get("events", 0)):]]
    d = run_dir(store.home, run.id)
    files = []
    if checkpoints and d.is_dir():
        files = [[str(p.relative_to(d)), p.stat().st_size] for p in sorted(d.rglob("*"))
                 if p.is_file() and not p.name.startswith(".")]
    info = run.to_dict()
    info.pop("duration", None)
    return {"info": info, "metrics": metrics, "system": system, "events": events, "files": files,
            "dir": str(d)}


def export_runs(home: Path, cursors: dict[str, Any], run_ids: list[str], checkpoints: bool) -> dict[str, Any]:
    if not (home / "lmdev.db").exists():
        return {"runs": []}
    with Store(home) as store:
        store.reap()
        runs = [store.get_run(r) for r in run_ids] if run_ids else store.list_runs()
        return {"runs": [export_run(store, r, cursors.get(r.id, {}), checkpoints) for r in runs]}


def remote_tag(remote: str) -> str:
    return f"remote:{remote}"


def pulled_runs(store: Store, remote: str) -> list[RunInfo]:
    tag = remote_tag(remote)
    return [r for r in store.list_runs() if tag in r.tags]


def cursor(store: Store, run: RunInfo) -> dict[str, Any]:
    """How much of a pulled run the local store already holds."""
    return {"metrics": {s.key: s.count for s in store.summaries(run)},
            "system": len(store.system(run)),
            "events": sum(1 for e in store.events(run) if e.message != _REAPER_MESSAGE)}


def merge_run(store: Store, remote: str, data: dict[str, Any]) -> MergeResult:
    """Add one exported run's new data to the local store, in one transaction."""
    raw = {k: v for k, v in data["info"].items() if k in _RUN_FIELDS}
    info = RunInfo(**raw)
    tag = remote_tag(remote)
    info.tags = [*info.tags, tag] if tag not in info.tags else info.tags
    new_run = all(r.id != info.id for r in store.list_runs())
    rid = store.create_run(info)
    store.update_run(rid, status=info.status, end_time=info.end_time, exit_code=info.exit_code,
                     heartbeat=info.heartbeat, tags=info.tags, host=info.host)
    chunks = []
    points = 0
    if data["metrics"]:
        with store.write() as c:
            ids = store.key_ids(c, list(data["metrics"]))
        for key, m in data["metrics"].items():
            steps, vals, times = _unpack("q", m["steps"]), _unpack("d", m["values"]), _unpack("d", m["times"])
            chunks.append(pack_chunk(rid, ids[key], steps, times, vals))
            points += len(steps)
    system = [(rid, *row) for row in data["system"]]
    events = [(rid, t, level, msg, json.dumps(d, sort_keys=True, default=str)) for t, level, msg, d in data["events"]]
    if chunks or system or events:
        store.insert_batch(rid, metrics=chunks, system=system, events=events)
    return MergeResult(info.id, new_run, points, len(system), len(events), info.status,
                       [(p, int(n)) for p, n in data.get("files", [])], data.get("dir", ""))


def missing_files(store: Store, result: MergeResult) -> list[tuple[str, Path]]:
    """(remote path, local path) of the run's files that are not here yet (or differ in size)."""
    local = run_dir(store.home, result.run_id)
    out = []
    for rel, size in result.files:
        if ".." in Path(rel).parts or Path(rel).is_absolute():
            continue
        target = local / rel
        if not target.is_file() or target.stat().st_size != size:
            out.append((f"{result.remote_dir}/{rel}", target))
    return out
