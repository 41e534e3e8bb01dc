"""``lmdev init [DIR] [STACK ...]``: a new project around a verified, locked environment."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "create a project: pyproject, lock, starter training config and script, README"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "init", help=HELP,
        description="Create DIR (default: the current folder) with a pyproject.toml listing the "
        "stack, a starter training config and a script that logs to the run store, a .gitignore "
        "and a README, then run `lmdev setup` there (a .venv, pylock.toml, verification).")
    p.add_argument("dir", nargs="?", default=".", type=Path, metavar="DIR")
    p.add_argument("stacks", nargs="*", metavar="STACK", help="torch (default), lightning, keras, tensorflow, jax, hf")
    p.add_argument("--python", help="Python version of the environment (e.g. 3.12)")
    p.add_argument("--installer", choices=("uv", "pip"), default="uv")
    p.add_argument("--torch-index", metavar="URL", help="the PyTorch index ({backend} is replaced)")
    p.add_argument("--no-setup", action="store_true", help="write the files only (no .venv, no lock)")
    p.add_argument("--no-verify", action="store_true", help="skip the verification after installing")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    return p


def run(args: argparse.Namespace) -> int:
    from lmdev.setup.engine import SetupOptions, run_setup
    from lmdev.setup.project import write_project

    folder = args.dir.resolve()
    written = write_project(folder, args.stacks, force=args.force, torch_index=args.torch_index)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    if args.no_setup:
        return 0
    from lmdev.cli.setup import render_plan, render_result

    opts = SetupOptions(stacks=list(args.stacks), project=folder, venv=folder / ".venv", python=args.python,
                        installer=args.installer, verify=not args.no_verify)
    result = run_setup(opts, lambda text: print(text, file=sys.stderr))
    render_plan(result.plan)
    render_result(result)
    print(f"Next: cd {folder} && . .venv/bin/activate && python train.py")
    return 0 if result.ok else 1
