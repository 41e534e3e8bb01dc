"""``lmdev explain RUN[@STEP]``: why did the run's model predict that?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "attribute a trained run's predictions to its input features, pixels or tokens"
METHODS = ("integrated-gradients", "saliency", "occlusion", "attention")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "explain", help=HELP,
        description="Rebuild RUN's model from its config and latest checkpoint (or the one at STEP) and "
        "attribute its predictions: feature importance for tables, a heat map for images (8x8 digits), "
        "token attributions for language models. Integrated gradients, saliency and occlusion use Captum; "
        "attention reads the gpt model's own attention weights.")
    p.add_argument("run", metavar="RUN[@STEP]", help="a run id (prefix) or name, optionally @STEP for a checkpoint")
    p.add_argument("--input", dest="inputs", action="append", default=[], metavar="INPUT",
                   help="tables/images: a validation row number; language models: a text (repeatable; "
                   "default: sampled from the validation split)")
    p.add_argument("--method", choices=METHODS, default="integrated-gradients", help="default: integrated-gradients")
    p.add_argument("--count", type=int, default=3, metavar="N", help="inputs to sample when none are given (default 3)")
    p.add_argument("--data-dir", metavar="DIR", help="where the config's relative data paths start "
                   "(default: the folder of the config the run was started with)")
    p.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/explain.md)")
    p.add_argument("--html", metavar="PATH", help="also write a self-contained HTML report to PATH")
    p.add_argument("--no-record", dest="record", action="store_false",
                   help="do not keep the result with the run (default: its folder's explain/STEP-METHOD.json, "
                   "shown in the dashboard's Explanations tab)")
    return p


def run(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError
    from lmdev.explain import ExplainOptions, explain_run, record_explanation
    from lmdev.explain.report import to_html
    from lmdev.fsutil import atomic_write_text

    if args.count < 1:
        raise LmdevError("--count must be at least 1")
    opts = ExplainOptions(method=args.method, inputs=args.inputs, count=args.count,
                          data_dir=Path(args.data_dir) if args.data_dir else None)
    exp = explain_run(args.run, opts)
    recorded = None
    if args.record:
        try:
            recorded = record_explanation(exp)
        except LmdevError as exc:  # the explanation is still printed; only keeping it failed
            print(f"lmdev explain: not kept with the run: {exc}", file=sys.stderr)
    if args.html:
        atomic_write_text(args.html, to_html(exp))
    if args.json:
        json.dump(exp.to_dict(), sys.stdout, indent=2, allow_nan=False)
        sys.stdout.write("\n")
    else:
        render(exp)
        if args.html:
            print(f"HTML report written to {args.html}")
        if recorded is not None:
            print(f"kept with the run: {recorded}")
    return 0


def render(exp: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.text import Text

    from lmdev.explain.report import colour

    console = Console(highlight=False)
    console.print(f"[bold]lmdev explain[/] — run [cyan]{escape(exp.run_id)}[/] ({escape(exp.run_name)}) at step "
                  f"{exp.step} · {escape(exp.model)} · {exp.kind} · {exp.method}")
    if exp.importance:
        console.rule(f"[bold]Feature importance[/] (mean |attribution| over {exp.sample} validation rows)", align="left")
        top = exp.importance[:10]
        scale = max(s for _, s in top) or 1.0
        for name, score in top:
            console.print(f"  {escape(name):>14} {'█' * max(1, round(24 * score / scale)):<24} {score:.4g}")
    for a in exp.items:
        console.rule(f"[bold]{escape(a.input)}[/]", align="left")
        line = f"predicted [bold]{escape(repr(a.target) if exp.kind == 'tokens' else a.target)}[/]"
        line += f", label [bold]{escape(a.label)}[/]" if a.label is not None else ""
        line += f"  [dim](completeness gap {a.delta:.2g})[/]" if a.delta is not None else ""
        console.print(line)
        scale = max((abs(s) for s in a.scores), default=0.0)
        if exp.kind == "tokens":
            text = Text()
            for tok, s in zip(a.tokens, a.scores):
                text.append(tok.replace("\n", "⏎"), style=f"on {colour(s, scale)} black")
            console.print(text)
            top = sorted(range(len(a.scores)), key=lambda j: -abs(a.scores[j]))[:5]
            console.print("  top: " + ", ".join(f"{escape(repr(a.tokens[j]))}@{j} {a.scores[j]:+.3g}" for j in top))
        elif exp.kind == "image":
            h, w = exp.image_shape
            for r in range(h):
                row = Text("  ")
                for c in range(w):
                    row.append("  ", style=f"on {colour(a.scores[r * w + c], scale)}")
                row.append("   " + " ".join(_shade(a.scores[r * w + c], scale) for c in range(w)))
                console.print(row)
        else:
            top = sorted(range(len(a.scores)), key=lambda j: -abs(a.scores[j]))[:5]
            for j in top:
                console.print(f"  {escape(exp.features[j]):>14} = {a.values[j]:<10.4g} {a.scores[j]:+.4g}")


def _shade(score: float, scale: float) -> str:
    """A character for a pixel's attribution that survives without colour: + / - by strength."""
    v = 0.0 if scale <= 0 else score / scale
    return "+" if v > 0.5 else "-" if v < -0.5 else "." if abs(v) > 0.1 else " "
