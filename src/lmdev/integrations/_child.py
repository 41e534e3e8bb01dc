"""The child side of ``lmdev run``: ``python -m lmdev.integrations._child SCRIPT [ARGS]``.

Runs SCRIPT as ``__main__`` (as ``python SCRIPT ARGS`` would) with autolog on and the run of
``$LMDEV_RUN_ID`` active, so ``lmdev.log`` works in the script without ``lmdev.init``.
"""

from __future__ import annotations

import os
import runpy
import sys


def main(argv: list[str]) -> None:
    script = argv[0]
    sys.argv = list(argv)
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    if os.environ.get("LMDEV_GUARD") == "1":  # lmdev run --guard
        from lmdev.secure.guard import install

        install()
    if os.environ.get("LMDEV_AUTOLOG", "1") != "0":
        from lmdev.integrations.autolog import autolog

        autolog()
    if os.environ.get("LMDEV_RUN_ID"):
        from lmdev.track.api import init

        init()  # attaches to the parent's run
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
