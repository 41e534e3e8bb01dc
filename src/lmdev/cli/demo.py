"""``lmdev demo``: the README's main job, a walk through what lmdev does on this machine."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "walk through lmdev on this machine with bundled data"

# Stages that later capabilities add to the demo, in the order they will run.
COMING = [
    ("lmdev train", "train the founding document's MLP on the bundled digits and a small GPT"),
    ("lmdev runs / lmdev ui", "every run tracked in an embedded store, with a live dashboard"),
    ("lmdev plan / lmdev bench", "will a model fit, how long will it take, what to buy"),
    ("lmdev compress", "prune, quantise and distil, with an honest before/after report"),
    ("lmdev secure / lmdev audit", "encryption, model scanning, signing, an audit log"),
]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    return sub.add_parser("demo", help=HELP, description="Run lmdev's stages on this machine, "
                          "on bundled data, in a few minutes.")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from lmdev.cli.doctor import render
    from lmdev.diagnose.report import doctor

    console = Console(highlight=False)
    console.rule("[bold]Stage 1 of 1 — lmdev doctor: is this machine set up right?")
    render(doctor())
    console.rule("[bold]Still to come")
    for command, what in COMING:
        console.print(f"  [cyan]{command}[/] — {what}")
    console.print("\nRun [cyan]lmdev doctor --deep[/] to also test each installed framework, "
                  "and [cyan]lmdev doctor --html report.html[/] for a page to share.")
    return 0
