"""Plain data of ``lmdev secure``: what a scan found in a file, and its verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SAFE, UNSAFE, SKIPPED = "safe", "unsafe", "skipped"


@dataclass(frozen=True)
class Finding:
    """One reason a file is unsafe.

    ``kind``: ``callable`` (a pickle reaches a callable outside the allowlist), ``broken`` (a
    stream or header that does not parse), ``object-array``, ``lambda``, ``custom-object``,
    ``header`` (a safetensors / GGUF header that is not sane), ``external-data`` (an ONNX path
    that escapes the folder), ``extension`` (a pickle EXT opcode), ``build-on-global``.
    """

    kind: str
    message: str
    position: int | None = None      # byte offset in the file (or in the archive member)
    member: str | None = None        # the archive member it is in (zip files)
    callable: str | None = None      # module.name of the callable, when there is one


@dataclass
class ScanResult:
    """The verdict on one file: ``safe``, ``unsafe`` (with findings) or ``skipped`` (not a model file)."""

    path: str
    format: str
    verdict: str
    findings: list[Finding] = field(default_factory=list)
    callables: list[str] = field(default_factory=list)   # allowlisted callables the file uses
    note: str = ""

    @property
    def safe(self) -> bool:
        return self.verdict != UNSAFE

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "verdict": self.verdict,
                "findings": [asdict(f) for f in self.findings], "callables": self.callables,
                "note": self.note}


def verdict_of(findings: list[Finding]) -> str:
    return UNSAFE if findings else SAFE
