"""The ``lmdev`` command. Thin: parse -> call a core function -> render.

Each command lives in its own module with ``add_parser(subparsers)`` and ``run(args) -> int``.
Modules are imported lazily, so ``lmdev --help`` and ``lmdev doctor`` never import a framework.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lmdev import __version__
from lmdev.errors import LmdevError

# command name -> module under lmdev.cli, in the order --help shows them
COMMANDS = {
    "doctor": "doctor",
    "train": "train",
    "checkpoint": "checkpoint",
    "run": "run",
    "runs": "runs",
    "ui": "ui",
    "plan": "plan",
    "bench": "bench",
    "setup": "setup",
    "init": "init",
    "demo": "demo",
    "remote": "remote",
    "cluster": "cluster",
    "compress": "compress",
    "secure": "secure",
    "data": "data",
    "explain": "explain",
}


_default_show_warning = None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"lmdev: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lmdev",
        description="The local development environment for large AI models.",
        epilog="Run `lmdev COMMAND --help` for a command's options. Docs: docs/commands/.",
    )
    parser.add_argument("--version", action="version", version=f"lmdev {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--trust", action="append", default=[], metavar="PATH",
                        help="load this model file even if the scanner flags it (audited; lmdev secure)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"lmdev.cli.{module}")
        cmd = mod.add_parser(sub)
        cmd.set_defaults(_run=mod.run)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
    from lmdev.errors import LmdevWarning

    if issubclass(category, LmdevWarning):
        print(f"lmdev: warning: {message}", file=sys.stderr)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    global _default_show_warning
    if warnings.showwarning is not _show_warning:
        _default_show_warning = warnings.showwarning
        warnings.showwarning = _show_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if args.trust:  # read by lmdev.secure.require_safe, here and in child processes
        import os

        os.environ["LMDEV_TRUST"] = os.pathsep.join(os.path.abspath(t) for t in args.trust)
    try:
        return int(args._run(args) or 0)
    except LmdevError as exc:
        if args.debug:
            raise
        print(f"lmdev: error: {exc.message}" + (f" — {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lmdev: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
