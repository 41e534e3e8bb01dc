"""The data check's results as plain data: findings (what is wrong, which rows, the fix) and the
report around them. Rendered as rich text, JSON (docs/schemas/data.md) or stored with a run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warn", "severe"]
SEVERITIES: tuple[str, ...] = ("severe", "warn", "info")
SHOWN_ROWS = 10  # rows named in a finding; all of them go to its rows file


@dataclass
class Finding:
    id: str  # stable, dotted: "rows.duplicate", "split.overlap", "label.errors", ...
    severity: Severity
    message: str  # one line: what is wrong, with numbers
    fix: str  # what to do about it
    split: str = "train"  # the split whose rows are named
    count: int = 0  # how many rows (or columns, for column findings) are affected
    rows: list[int] = field(default_factory=list)  # the first few, 0-based data rows (header excluded)
    rows_file: str | None = None  # a file with every affected row index, one per line
    columns: list[str] = field(default_factory=list)  # the columns concerned, if any
    data: dict[str, Any] = field(default_factory=dict)  # extra numbers (histogram, class counts, ...)

    def to_dict(self) -> dict[str, Any]:
        return finite_json(asdict(self))


@dataclass
class SplitInfo:
    name: str  # train | val | test
    source: str  # the file, or the bundled set's name
    kind: str  # table | text
    rows: int = 0
    columns: int = 0  # features (label excluded); 0 for text
    label: str | None = None  # the label column's name
    classes: int = 0  # distinct labels; 0 for regression and text


@dataclass
class Report:
    source: str  # what was checked: a config file, a file, a bundled set
    splits: list[SplitInfo] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    sample_size: int = 0  # rows the sampled checks (label errors, leakage) looked at
    checks: list[str] = field(default_factory=list)  # the checks that ran
    seconds: float = 0.0
    out_dir: str | None = None  # where rows files were written

    @property
    def counts(self) -> dict[str, int]:
        return {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES}

    @property
    def exit_code(self) -> int:
        return 1 if self.counts["severe"] else 0

    def sorted_findings(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (SEVERITIES.index(f.severity), f.id))

    def to_dict(self) -> dict[str, Any]:
        return finite_json({
            "schema": "lmdev.data.check/1",
            "source": self.source,
            "status": "severe" if self.counts["severe"] else "warn" if self.counts["warn"] else "ok",
            "counts": self.counts,
            "splits": [asdict(s) for s in self.splits],
            "sample_size": self.sample_size,
            "checks": self.checks,
            "seconds": round(self.seconds, 3),
            "out_dir": self.out_dir,
            "findings": [f.to_dict() for f in self.sorted_findings()],
        })


def finite_json(value: Any) -> Any:
    """JSON never holds NaN or Infinity: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return finite_json(value.item())
    return value
