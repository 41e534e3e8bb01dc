"""Errors the user can cause. Everything else is a bug and shows a traceback."""

from __future__ import annotations


class LmdevError(Exception):
    """A problem the user can fix: a message naming what is wrong and a hint saying how to fix it.

    The CLI prints it as one line (no traceback unless ``--debug``) and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class LmdevWarning(UserWarning):
    """Something the user should know that does not stop the command (a corrupt checkpoint
    skipped, a run that cannot be recorded). The CLI prints it as ``lmdev: warning: ...``."""
