import os
import sys

# `python -m lmdev` puts the current folder first on sys.path: a stray tiktoken.py (or sklearn.py)
# in the project would then replace the installed module. lmdev never imports from the current
# folder first; it stays importable, after the standard library and site-packages.
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.append(sys.path.pop(0))

from lmdev.cli import main

raise SystemExit(main())
