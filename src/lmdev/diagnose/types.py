"""Findings: what doctor concludes from the facts, each with its evidence and its fix."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from lmdev.probe.types import Facts

Severity = Literal["error", "warning", "info"]
SEVERITY_ORDER: dict[str, int] = {"error": 0, "warning": 1, "info": 2}


@dataclass
class Finding:
    id: str  # stable, dotted: "torch.cpu_build_on_gpu"
    severity: Severity
    title: str  # one line: what is wrong
    evidence: str  # the facts that show it
    fix: str  # a concrete command or step


@dataclass
class Hit:
    """What a rule yields; the registry turns it into a Finding with the rule's id."""

    title: str
    evidence: str
    fix: str
    severity: Severity | None = None  # None: the rule's default


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    summary: str
    check: Callable[[Facts], Iterable[Hit]]

    def run(self, facts: Facts) -> list[Finding]:
        return [Finding(self.id, h.severity or self.severity, h.title, h.evidence, h.fix)
                for h in self.check(facts)]
