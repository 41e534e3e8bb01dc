"""What a name may be: run ids, run names, project names, tags and metric keys.

Names come from users (``lmdev.init(run_id=...)``, ``$LMDEV_RUN_ID``, ``--name``, a logged
key) and end up in paths, SQL rows and rendered text. They are checked here, once, where they
enter lmdev; everything that turns a run id into a path goes through ``run_path``, which also
checks that the result stays inside the store.

* a run id: 1-64 characters from ``A-Z a-z 0-9 . _ -``, starting with a letter or digit (so
  never ``.``, ``..``, a path separator or an option-looking ``-x``);
* a run name, a project name, a tag: 1-200 characters (tags 1-100), no control characters
  (NUL, newline, escape...) or bytes that are not UTF-8, no surrounding spaces;
* a metric key: 1-250 characters, no control characters, only UTF-8.

Display names may hold any other character (``[bold]`` included): renderers escape them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from lmdev.errors import LmdevError

RUN_ID_MAX = 64
NAME_MAX = 200
TAG_MAX = 100
MAX_TAGS = 64
KEY_MAX = 250

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
# control characters, line separators, and lone surrogates (bytes that were not UTF-8)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


class InvalidName(LmdevError, ValueError):
    """A name that lmdev does not accept (also a ValueError, for library callers)."""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_run_id(value: object, what: str = "run id") -> str:
    """``value`` if it is a valid run id, else InvalidName naming ``what`` (e.g. "LMDEV_RUN_ID")."""
    if not isinstance(value, str) or not value:
        raise InvalidName(f"{what} must be a non-empty string, not {_shown(value)}",
                          "leave it out to get a generated id")
    if len(value) > RUN_ID_MAX or not _RUN_ID.match(value) or value in (".", ".."):
        raise InvalidName(f"{what} {_shown(value)} is not a valid run id",
                          f"use 1-{RUN_ID_MAX} letters, digits, '.', '_' or '-', starting with a letter "
                          "or digit (no '/' or '..')")
    return value


def is_run_id(value: object) -> bool:
    try:
        check_run_id(value)
        return True
    except InvalidName:
        return False


def _check_text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidName(f"{what} must be a non-empty string, not {_shown(value)}")
    if len(value) > limit:
        raise InvalidName(f"{what} is {len(value)} characters long (at most {limit})",
                          f"give a shorter {what}")
    if _CONTROL.search(value):
        raise InvalidName(f"{what} {_shown(value)} contains a control character (NUL, newline, "
                          "escape...)", f"give a {what} of printable characters")
    if value != value.strip():
        raise InvalidName(f"{what} {_shown(value)} starts or ends with a space",
                          "remove the surrounding spaces")
    return value


def check_run_name(value: object) -> str:
    return _check_text(value, "run name", NAME_MAX)


def check_project(value: object) -> str:
    return _check_text(value, "project name", NAME_MAX)


def check_tags(values: Iterable[object]) -> list[str]:
    if isinstance(values, (str, bytes)):
        raise InvalidName("tags must be a list of strings, not one string", "pass tags=[...]")
    tags = [_check_text(str(v) if not isinstance(v, str) else v, "tag", TAG_MAX) for v in values]
    if len(tags) > MAX_TAGS:
        raise InvalidName(f"{len(tags)} tags given (at most {MAX_TAGS})", "keep fewer tags")
    return tags


def check_metric_key(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidName(f"a metric key must be a non-empty string, not {_shown(value)}")
    if len(value) > KEY_MAX:
        raise InvalidName(f"metric key {_shown(value)} is {len(value)} characters long (at most {KEY_MAX})",
                          "log it under a shorter key")
    if _CONTROL.search(value):
        raise InvalidName(f"metric key {_shown(value)} contains a control character",
                          "log it under a key of printable characters")
    return value


def runs_root(home: str | os.PathLike[str]) -> Path:
    """The folder that holds the runs' folders: ``<home>/runs``."""
    return Path(home) / "runs"


def run_path(home: str | os.PathLike[str], run_id: str) -> Path:
    """The folder of run ``run_id`` in the store at ``home``: ``<home>/runs/<run_id>``.

    Raises InvalidName for an id that is not a valid run id (a store written by an older
    lmdev may hold one) and when the folder, symlinks resolved, is not directly inside
    ``<home>/runs``: nothing built from a run id ever points outside the store.
    """
    check_run_id(run_id, "run id")
    root = runs_root(home)
    path = root / run_id
    try:
        inside = path.resolve().parent == root.resolve()
    except (OSError, RuntimeError):
        inside = False
    if not inside:
        raise InvalidName(f"the folder of run {run_id!r} ({path}) leads outside the store",
                          f"a symlink in {root} points elsewhere; remove it")
    return path
