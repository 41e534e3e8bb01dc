"""The run store: SQLite under LMDEV_HOME, the Run API, the background writer, system telemetry.

Public API (also at the top level: ``lmdev.init``, ``lmdev.log``, ``lmdev.finish``):
``init``, ``log``, ``finish``, ``active_run``, ``Run``, ``Store``; media values ``Histogram``,
``Image``, ``Text``, ``Table`` (read back with ``Store.media`` as ``MediaItem``s). See
docs/api/tracking.md.
"""

from __future__ import annotations

from lmdev.errors import LmdevWarning
from lmdev.track.api import finish, init, log
from lmdev.track.run import Run, active_run
from lmdev.track.store import Store
from lmdev.track.types import MediaItem

__all__ = ["init", "log", "finish", "active_run", "Run", "Store", "LmdevWarning", "Histogram", "Image",
           "Text", "Table", "MediaItem"]


def __getattr__(name: str) -> object:  # PEP 562: the media types (and numpy) load on first use
    if name in ("Histogram", "Image", "Text", "Table"):
        from lmdev.track import media

        return getattr(media, name)
    raise AttributeError(f"module 'lmdev.track' has no attribute {name!r}")
