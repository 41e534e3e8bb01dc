"""Redaction of secrets: kept importable here; the functions live in :mod:`lmdev.redact`, a leaf
module that the run store (the bottom layer) imports without pulling in ``lmdev.secure``."""

from __future__ import annotations

from lmdev.redact import MASK, RedactingWriter, is_secret_name, redact, redact_argv, redact_value

__all__ = ["MASK", "RedactingWriter", "is_secret_name", "redact", "redact_argv", "redact_value"]
