"""The run store: SQLite under LMDEV_HOME, the Run API, the background writer, system telemetry.

Public API (also at the top level: ``lmdev.init``, ``lmdev.log``, ``lmdev.finish``):
``init``, ``log``, ``finish``, ``active_run``, ``Run``, ``Store``. See docs/api/tracking.md.
"""

from __future__ import annotations

from lmdev.track.api import finish, init, log
from lmdev.track.run import active_run
from lmdev.track.run import LmdevWarning, Run
from lmdev.track.store import Store

__all__ = ["init", "log", "finish", "active_run", "Run", "Store", "LmdevWarning"]
