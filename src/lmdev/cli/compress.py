"""``lmdev compress``: quantise, prune or distil a model and measure, on this machine, whether it pays."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "quantise, prune or distil a model, and measure whether it pays on this machine"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compress", help=HELP,
        description=HELP + ". SOURCE: RUN[@STEP] (a run of the store), a checkpoint folder, an OUT folder of "
        "lmdev compress, or hf:PATH (a local transformers folder with safetensors). `lmdev compress eval OUT` "
        "re-measures a written variant. Docs: docs/commands/compress.md.")
    p.add_argument("source", metavar="SOURCE", help="RUN[@STEP], a checkpoint folder, hf:PATH, or `eval`")
    p.add_argument("variant", metavar="OUT", nargs="?", help="with `eval`: the variant folder to re-measure")
    p.add_argument("--method", choices=["auto", "quantize", "prune", "distill"], default="auto",
                   help="auto (default): every quantisation backend and structured pruning that apply")
    p.add_argument("--target", choices=["latency", "size", "memory"], default="latency",
                   help="what the chosen variant minimises (default latency)")
    p.add_argument("--max-drop", type=float, default=1.0, metavar="PCT",
                   help="allowed quality loss: accuracy points, or percent of perplexity/loss (default 1)")
    p.add_argument("--backend", metavar="NAME", help="force one backend: torch-bf16, torch-fp16, torch.ao-int8, "
                   "torchao-int8, onnxruntime-fp32, onnxruntime-int8, int4-weights, torch-fp8, pruned, pruned+torch.ao-int8, "
                   "sparse-2:4, distilled")
    p.add_argument("-o", "--out", metavar="OUT", help="write the chosen variant here (safetensors/ONNX + manifest)")
    p.add_argument("--ratio", type=float, default=0.5, help="prune: fraction of hidden channels removed (default 0.5)")
    p.add_argument("--prune", choices=["both", "mlp", "heads", "layers", "2:4"], default="both",
                   help="prune: MLP channels, attention heads (an lmdev gpt: whole key/value groups), both "
                   "(default), or whole layers (--ratio: the fraction of transformer blocks removed); 2:4: "
                   "semi-structured sparsity (2 of "
                   "every 4 weights zero, --ratio not used)")
    p.add_argument("--prune-layout", choices=["uniform", "global"],
                   help="prune heads / channels: the same share of every block, or ranked across blocks so that "
                   "less important blocks lose more (transformers GPT-2 only; its default; uniform elsewhere)")
    p.add_argument("--steps", type=int, metavar="N", help="prune: fine-tune steps; distill: training steps")
    p.add_argument("--batch", type=int, metavar="N", help="the large latency batch (default 256 rows, 8 sequences)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for every variant (default torch's)")
    p.add_argument("--budget", type=float, default=1.0, metavar="S", help="timing seconds per variant and batch")
    p.add_argument("--data", metavar="TYPE", help="evaluation data, e.g. text:PATH (needed for a metric on hf:)")
    p.add_argument("--home", metavar="DIR", help="the run store folder (default: $LMDEV_HOME or ./.lmdev)")
    p.add_argument("--no-record", action="store_true", help="do not record the variant as a run")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory measurement (a fresh process per variant)")
    p.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/compress.md)")
    p.add_argument("--html", metavar="PATH", help="also write the report as an HTML page")
    return p


def run(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError

    if args.source == "eval":
        if not args.variant:
            raise LmdevError("lmdev compress eval needs the variant folder", "lmdev compress eval OUT")
        return _eval(args)
    if args.variant:
        raise LmdevError(f"unexpected argument {args.variant!r}", "write the output folder with -o OUT")
    if not 0 < args.ratio < 1:
        raise LmdevError(f"--ratio {args.ratio:g} must be between 0 and 1 (the fraction of channels removed)")
    from lmdev.compress.core import Options, compress

    opts = Options(method=args.method, target=args.target, max_drop=args.max_drop, backend=args.backend,
                   out=Path(args.out) if args.out else None, batch=args.batch, budget_s=args.budget,
                   threads=args.threads, ratio=args.ratio, prune=args.prune, steps=args.steps, data=args.data, home=args.home,
                   layout=args.prune_layout,
                   record=not args.no_record, memory=not args.no_memory)
    report = compress(args.source, opts, progress=None if args.json else _progress)
    return _render(report, args, wanted_out=opts.out is not None)


def _progress(message: str) -> None:
    print(f"lmdev compress: {message}", file=sys.stderr, flush=True)


def _render(report: Any, args: argparse.Namespace, wanted_out: bool) -> int:
    from lmdev.compress.report import render_html, render_json, render_text

    if args.html:
        from lmdev.fsutil import atomic_write_text

        atomic_write_text(Path(args.html), render_html(report))
    if args.json:
        print(render_json(report))
    else:
        from rich.console import Console

        render_text(report, Console())
    return 1 if wanted_out and report.out is None else 0


def _eval(args: argparse.Namespace) -> int:
    from lmdev.compress.evaluate import evaluate_output

    report = evaluate_output(Path(args.variant), threads=args.threads, budget_s=args.budget,
                             batch=args.batch, home=args.home, data=args.data,
                             memory=not args.no_memory)
    return _render(report, args, wanted_out=False)
