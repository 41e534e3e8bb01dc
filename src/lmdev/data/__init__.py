"""Data checks before training: duplicates, leaks between splits, label balance and label
errors, broken columns, a feature that gives the label away, and text hygiene.

Public API: :func:`check` (files or a training config -> :class:`Report`),
:func:`check_for_training` (the fast checks ``lmdev train`` runs), :class:`Finding`,
:class:`Report`. The JSON form is described in docs/schemas/data.md."""

from __future__ import annotations

from lmdev.data.check import CheckOptions, check, check_for_training
from lmdev.data.types import Finding, Report, SplitInfo

__all__ = ["CheckOptions", "Finding", "Report", "SplitInfo", "check", "check_for_training"]
