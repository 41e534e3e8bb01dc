"""A run as a document (``lmdev runs show --json``) and as files: CSV, JSON, TensorBoard events.

JSON has no NaN or Infinity: non-finite metric values appear as the strings "NaN", "Infinity"
and "-Infinity" (docs/schemas/runs.md).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError
from lmdev.fsutil import atomic_write_text
from lmdev.track.store import DamagedRun, Store
from lmdev.track.types import RunInfo

SCHEMA = "lmdev.run/1"
LIST_SCHEMA = "lmdev.runs/1"


def json_number(value: float) -> float | str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def flatten_config(d: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys (``{"optimizer": {"lr": 0.1}}`` -> ``{"optimizer.lr": 0.1}``);
    an empty section stays one key. Shared by ``runs compare`` and the dashboard's config diff."""
    if not isinstance(d, dict):
        return {prefix or "value": d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten_config(v, name))
        else:
            out[name] = v
    return out


def run_summary(store: Store, run: RunInfo) -> dict[str, Any]:
    """One entry of ``runs list --json``: the run's fields and the last value of each metric."""
    d = run.to_dict()
    d["last"] = {s.key: json_number(s.last) for s in store.summaries(run)}
    return d


def list_document(store: Store, runs: list[RunInfo]) -> dict[str, Any]:
    """``runs list --json``; a run whose metrics cannot be read is left out and its DamagedRun
    error put under "damaged" (the caller reports it)."""
    out, damaged = [], []
    for r in runs:
        try:
            out.append(run_summary(store, r))
        except DamagedRun as exc:
            damaged.append(exc)
    return {"schema": LIST_SCHEMA, "runs": out, "damaged": damaged}


def run_document(store: Store, run: RunInfo, system: bool = False) -> dict[str, Any]:
    """``runs show --json``: fields, config, metrics {key: [[step, value], ...]}, events, artifacts,
    summary (last values with the user's on top), lineage (parent, fork step, resumes, forks),
    media (an index by key)."""
    d: dict[str, Any] = {"schema": SCHEMA, **run.to_dict()}
    d["metrics"] = {key: [[step, json_number(value)] for step, value, _ in points]
                    for key, points in store.metrics(run).items()}
    d["events"] = [vars(e) for e in store.events(run)]
    d["artifacts"] = [vars(a) for a in store.artifacts(run)]
    d["summary"] = {k: json_number(v) if isinstance(v, float) else v for k, v in store.summary(run).items()}
    d["lineage"] = lineage(store, run)
    d["media"] = media_index(store, run)
    if system:
        series: dict[str, list[list[Any]]] = {}
        for s in store.system(run):
            series.setdefault(f"{s.device}/{s.key}", []).append([s.time, s.rank, json_number(s.value)])
        d["system"] = series
    return d


def lineage(store: Store, run: RunInfo) -> dict[str, Any]:
    """Where a run comes from and what came of it: ``parent_id`` and ``fork_step`` (a fork),
    ``resumes`` ([{time, step, dropped}] of each resume) and ``forks`` ([{id, name, status,
    fork_step}] of the runs forked from it)."""
    return {"parent_id": run.parent_id, "fork_step": run.fork_step,
            "resumes": [{"time": e.time, "step": e.data.get("step"), "dropped": e.data.get("dropped")}
                        for e in store.resumes(run)],
            "forks": [{"id": f.id, "name": f.name, "status": f.status, "fork_step": f.fork_step}
                      for f in store.forks(run)]}


def media_index(store: Store, run: RunInfo) -> dict[str, dict[str, Any]]:
    """{key: {kind, count, first_step, last_step}} of the run's media (``Store.media`` has them)."""
    out: dict[str, dict[str, Any]] = {}
    for item in store.media(run):
        entry = out.setdefault(item.key, {"kind": item.kind, "count": 0, "first_step": item.step,
                                          "last_step": item.step})
        entry["count"] += 1
        entry["first_step"] = min(entry["first_step"], item.step)
        entry["last_step"] = max(entry["last_step"], item.step)
    return out


def export(store: Store, run: RunInfo, fmt: str, out: Path) -> list[Path]:
    """Write the run as ``fmt`` (csv | json | tensorboard) to ``out``; returns the files written."""
    try:
        if out.resolve() == Path(out.resolve().anchor):
            raise LmdevError(f"--out {out} is the root of the file system", "give a file or a folder of your own")
        if fmt in ("csv", "json") and (out.is_symlink() or out.exists() and not out.is_dir() and not out.is_file()):
            raise LmdevError(f"--out {out} is not a regular file (a device, a pipe or a symlink)",
                             "give the path of a new or a regular file")
        if fmt in ("csv", "json") and out.is_dir():
            raise LmdevError(f"--out {out} is a folder", f"give a file name, e.g. {out / ('run.' + fmt)}")
        if fmt == "tensorboard" and out.exists() and not out.is_dir():
            raise LmdevError(f"--out {out} exists and is not a folder", "give a folder for TensorBoard files")
        return _export(store, run, fmt, out)
    except OSError as exc:
        raise LmdevError(f"cannot write {out}: {exc.strerror or exc}",
                         "give an --out path in a writable folder") from None


def _export(store: Store, run: RunInfo, fmt: str, out: Path) -> list[Path]:
    if fmt == "json":
        return [atomic_write_text(out, json.dumps(run_document(store, run, system=True), indent=1) + "\n")]
    if fmt == "csv":
        return _csv(store, run, out)
    if fmt == "tensorboard":
        return _tensorboard(store, run, out)
    raise LmdevError(f"unknown export format {fmt!r}", "use csv, json or tensorboard")


def _csv(store: Store, run: RunInfo, out: Path) -> list[Path]:
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["key", "step", "time", "value"])
    for key, points in store.metrics(run).items():
        for step, value, t in points:
            w.writerow([key, step, f"{t:.6f}", repr(value) if math.isfinite(value) else str(value)])
    files = [atomic_write_text(out, buf.getvalue())]
    system = store.system(run)
    if system:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["time", "rank", "device", "key", "value"])
        for s in system:
            w.writerow([f"{s.time:.6f}", s.rank, s.device, s.key, repr(s.value)])
        sys_path = out.with_name(out.stem + ".system" + (out.suffix or ".csv"))
        files.append(atomic_write_text(sys_path, buf.getvalue()))
    return files


def _tensorboard(store: Store, run: RunInfo, out: Path) -> list[Path]:
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise LmdevError("exporting TensorBoard event files needs the tensorboard package",
                         "pip install 'lmdev[tensorboard]'") from None
    out.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(out), filename_suffix=f".{run.id}")
    for key, points in store.metrics(run).items():
        for step, value, t in points:
            writer.add_event(Event(wall_time=t, step=step,
                                   summary=Summary(value=[Summary.Value(tag=key, simple_value=value)])))
    for s in store.system(run):
        tag = f"system/{s.device}/{s.key}" + (f"/rank{s.rank}" if s.rank else "")
        writer.add_event(Event(wall_time=s.time, step=int((s.time - run.start_time) * 1000),
                               summary=Summary(value=[Summary.Value(tag=tag, simple_value=s.value)])))
    writer.close()
    return sorted(out.glob(f"events.out.tfevents.*.{run.id}"))
