"""What the integrations share: finding or starting the run they record into."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from lmdev.track import api
from lmdev.track.run import Run


def ensure_run(run: Run | None = None, **init_kwargs: Any) -> tuple[Run, bool]:
    """The run to record into and whether we started it (then we also finish it).

    ``run`` if given, else the active run of this process, else a new one (which attaches to
    ``$LMDEV_RUN_ID`` under ``lmdev run``).
    """
    if run is not None and not run.finished:
        return run, False
    active = api.active_run()
    if active is not None:
        return active, False
    return api.init(**init_kwargs), True


def numeric(logs: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """The numeric entries of a framework's logs (frameworks also log strings, lists...)."""
    out: dict[str, Any] = {}
    for key, value in (logs or {}).items():
        if isinstance(value, numbers.Real) or (hasattr(value, "numel") and value.numel() == 1):
            out[prefix + str(key)] = value
        elif hasattr(value, "shape") and getattr(value, "shape", None) in ((), [], (1,)):
            out[prefix + str(key)] = value
    return out
