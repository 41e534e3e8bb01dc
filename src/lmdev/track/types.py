"""The run store's data, as plain dataclasses: what a run is and what it records.

The store (``store.py``) reads and writes these; the CLI renders them as text or JSON
(``docs/schemas/runs.md``). Nothing here touches SQLite or a framework.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["running", "finished", "failed", "killed"]
STATUSES: tuple[str, ...] = ("running", "finished", "failed", "killed")

@dataclass
class RunInfo:
    """One row of the ``runs`` table."""

    id: str
    name: str
    project: str
    status: Status
    start_time: float
    end_time: float | None = None
    config: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    parent_id: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    host: str = ""
    pid: int | None = None
    lmdev_version: str = ""
    framework_versions: dict[str, str] = field(default_factory=dict)
    data_fingerprints: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    command: list[str] | None = None
    heartbeat: float | None = None
    fork_step: int | None = None  # a fork: the step of ``parent_id`` it started from
    summary: dict[str, Any] = field(default_factory=dict)  # values the user set (run.summary)

    @property
    def duration(self) -> float | None:
        end = self.end_time if self.end_time is not None else self.heartbeat
        return None if end is None else max(0.0, end - self.start_time)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["duration"] = self.duration
        return d


@dataclass
class SystemSample:
    time: float
    rank: int
    device: str  # "host" for the machine, "process" for the training process, "gpu:N" for GPU N
    key: str
    value: float


@dataclass
class Event:
    time: float
    level: str  # "debug" | "info" | "warning" | "error"
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Artifact:
    path: str
    kind: str
    size: int
    sha256: str
    time: float


@dataclass
class MetricSummary:
    key: str
    count: int
    first_step: int
    last_step: int
    last: float
    min: float | None
    max: float | None
    nonfinite: int  # how many NaN / Inf values were stored


class Media:
    """A logged value that is not a scalar (``lmdev.track.media``: Histogram, Image, Text,
    Table): its ``kind`` and a JSON-able ``payload()``; an image also has ``png()``."""

    kind = "media"

    def payload(self) -> dict[str, Any]:
        raise NotImplementedError

    def png(self) -> bytes:
        raise TypeError(f"a {self.kind} is not an image")


@dataclass
class MediaItem:
    """One logged histogram, image, text or table (``Store.media``).

    ``kind`` is ``histogram`` (payload ``{"edges": [b+1 floats], "counts": [b ints], "min",
    "max", "count"}``), ``image`` (payload ``{"width", "height", "channels", "caption"}``,
    ``path`` the PNG file), ``text`` (payload ``{"text"}``) or ``table`` (payload
    ``{"columns": [...], "rows": [[...], ...]}``)."""

    step: int
    key: str
    kind: str
    time: float
    payload: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = None if self.path is None else str(self.path)
        return d
