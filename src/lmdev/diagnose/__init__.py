"""Rules over probe facts -> findings (id, severity, evidence, fix)."""

from __future__ import annotations

from lmdev.diagnose.types import SEVERITY_ORDER, Finding
from lmdev.probe.types import Facts


def diagnose(facts: Facts) -> list[Finding]:
    """Every rule's findings, errors first. A rule that crashes is a bug: it propagates."""
    from lmdev.diagnose.rules import RULES

    findings = [finding for r in RULES for finding in r.run(facts)]
    return sorted(findings, key=lambda x: SEVERITY_ORDER[x.severity])


__all__ = ["Finding", "diagnose"]
