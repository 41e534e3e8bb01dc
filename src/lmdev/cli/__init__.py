"""The ``lmdev`` command. Thin: parse -> call a core function -> render.

Each command lives in its own module with ``add_parser(subparsers)`` and ``run(args) -> int``.
Only the chosen command's module is imported (its parser is built, the others are listed from
:data:`SUMMARY`), so ``lmdev --help`` imports no command module and ``lmdev setup`` no other one.
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

# command name -> its one-line help, for `lmdev --help` without importing the command modules
# (each equals the module's HELP; a command missing here is imported to read it)
SUMMARY = {
    "doctor": "check this machine: hardware, drivers, frameworks; findings with fixes",
    "train": "train a model from a config (YAML/TOML), tracked in the run store",
    "checkpoint": "verify a training checkpoint, or export its weights to one safetensors file",
    "run": "run a Python script as a tracked run (autolog, telemetry, output and exit status)",
    "runs": "list, show, compare, export and remove tracked runs",
    "ui": "the live dashboard: runs, curves, hardware, machine and plans in the browser",
    "plan": "memory, time and hardware for a model: will it fit, how long, what to buy",
    "bench": "measure this machine: matmul per dtype, memory and host-device bandwidth, disk, all-reduce",
    "setup": "plan, install, lock and verify the framework environment for this machine",
    "init": "create a project: pyproject, lock, starter training config and script, README",
    "demo": "walk through lmdev on this machine with bundled data",
    "remote": "work on an SSH host: add, check, doctor, setup, plan, train, attach, stop, pull, ui",
    "cluster": "several SSH hosts as one: create, check (all-reduce, versions, clocks), train",
    "compress": "quantise, prune or distil a model, and measure whether it pays on this machine",
    "secure": "scan model files for code, encrypt, sign, audit log, security posture",
    "data": "check training data: duplicates, leaks between splits, label errors, broken columns, text hygiene",
    "explain": "attribute a trained run's predictions to its input features, pixels or tokens",
}

_default_show_warning = None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"lmdev: error: {message} (see `{self.prog} --help`)\n")


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word that is not a top-level option), or None."""
    args = iter(argv)
    for arg in args:
        if arg == "--trust":
            next(args, None)
        elif arg in ("-h", "--help", "--version", "--"):
            return None
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def summary(name: str) -> str:
    """A command's one-line help: from :data:`SUMMARY`, else from its module."""
    if name in SUMMARY:
        return SUMMARY[name]
    return str(getattr(importlib.import_module(f"lmdev.cli.{COMMANDS[name]}"), "HELP", ""))


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser. With ``argv`` naming a command, only that command's parser is built (its module
    imported); naming none (``--help``, a typo), every command is listed by name and one-line help.
    Without ``argv``, every command's full parser is built."""
    only = chosen_command(argv) if argv is not None else None
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
        if argv is not None and name != only:
            if only is None:
                sub.add_parser(name, help=summary(name), add_help=False)
            continue
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
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
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
