"""``lmdev run SCRIPT.py [ARGS]``: run a Python training script as a recorded run."""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = "run a Python script as a tracked run (autolog, telemetry, output and exit status)"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "run", help=HELP,
        description="Run SCRIPT.py with ARGS in a new run: Keras, Lightning and transformers "
        "training is recorded automatically (lmdev.autolog), lmdev.log() works without "
        "lmdev.init(), system telemetry is sampled, stdout and stderr are saved to the run, and "
        "the exit status is recorded. Exits with the script's exit code. Docs: docs/commands/run.md.")
    p.add_argument("--name", help="the run's name (default: the script's name)")
    p.add_argument("--project", default="default", help="the run's project (default: default)")
    p.add_argument("--home", metavar="DIR", help="the store folder (default: $LMDEV_HOME or ./.lmdev)")
    p.add_argument("--telemetry-interval", type=float, default=2.0, metavar="SECONDS",
                   help="seconds between system samples (default: 2)")
    p.add_argument("--no-telemetry", action="store_true", help="do not sample the system")
    p.add_argument("--no-autolog", action="store_true", help="do not attach to Keras/Lightning/transformers")
    p.add_argument("--guard", action="store_true", help="scan files before torch.load / pickle.load / "
                   "joblib.load / numpy.load(allow_pickle=True) load them in the script (lmdev secure)")
    p.add_argument("--trust", action="append", default=[], metavar="PATH",
                   help="with --guard: a file to load even if the scanner flags it (audited)")
    p.add_argument("script", metavar="SCRIPT.py")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="arguments for the script")
    return p


def run(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError
    from lmdev.integrations.script import run_script

    if args.telemetry_interval <= 0:
        raise LmdevError("--telemetry-interval must be greater than 0")
    if args.guard:  # the child (lmdev.integrations._child) installs lmdev.secure.guard
        import os

        os.environ.update(LMDEV_GUARD="1", LMDEV_TRUST=os.pathsep.join(os.path.abspath(t) for t in args.trust))
    result = run_script(args.script, args.args, name=args.name, project=args.project, home=args.home,
                        telemetry=not args.no_telemetry, telemetry_interval=args.telemetry_interval,
                        autolog=not args.no_autolog)
    print(f"lmdev: run {result.run_id} {result.status} (exit code {result.exit_code}); "
          f"see `lmdev runs show {result.run_id}`", file=sys.stderr)
    return result.exit_code if result.exit_code >= 0 else 128 - result.exit_code
