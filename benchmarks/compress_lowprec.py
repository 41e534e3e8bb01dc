"""torch-fp8 and 2:4 sparsity measured on this machine beside fp32 and torch.ao-int8.

The models of benchmarks/compress.py: the digits MLP (64-128-64-10), the wide MLP
(64-1024-1024-10) on the digits, and with --gpt the narrow GPT-2 shape (4 layers, width 256,
50,257-token head, trained --gpt-steps steps on the bundled corpus). For each: the fp8 variant
(``--method quantize --backend torch-fp8``), torch.ao-int8 beside it (the int8 lmdev picks most
often here), and the 2:4 variant after a masked fine-tune (``--prune 2:4``). Every ratio is to
fp32 timed in alternation with the variant (lmdev.compress's own measurement); the verdicts are
lmdev's. Figures: docs/figures/compress.md, section "fp8 and 2:4 sparsity".

    python benchmarks/compress_lowprec.py --budget 0.3                # the two MLPs, ~1 min
    python benchmarks/compress_lowprec.py --skip-mlp --gpt --gpt-steps 30 --gpt-dir /tmp/gpt --budget 0.5
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compress import gpt2_source, show  # noqa: E402  (benchmarks/compress.py)

from lmdev.compress.core import Options, compress_source  # noqa: E402
from lmdev.compress.source import from_config  # noqa: E402


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def measure(title: str, src: Any, opts: dict[str, Any], steps: int, max_drop: float = 1.0) -> None:
    """fp8 and torch.ao-int8 (one report), then 2:4 fine-tuned ``steps`` steps, in one table."""
    rep = compress_source(src, Options(method="quantize", max_drop=max_drop, **opts), _say)
    sparse = compress_source(src, Options(method="prune", prune="2:4", backend="sparse-2:4", steps=steps,
                                          max_drop=max_drop, **opts), _say)
    rep.variants += sparse.variants
    rep.chosen = None
    show(title, rep, [])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=0.3, help="timing seconds per variant and batch")
    ap.add_argument("--skip-mlp", action="store_true")
    ap.add_argument("--gpt", action="store_true", help="also the narrow GPT-2 shape")
    ap.add_argument("--gpt-steps", type=int, default=30, help="training steps of the GPT-2 shape")
    ap.add_argument("--gpt-batch", type=int, default=4)
    ap.add_argument("--gpt-dir", metavar="DIR", help="save the trained GPT-2 shape here, or reuse the one saved there")
    ap.add_argument("--sparse-steps", type=int, default=300, help="fine-tune steps of the MLPs' 2:4 variants")
    ap.add_argument("--no-memory", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lmdev.compress import quantize

    every = quantize.candidates
    quantize.candidates = lambda *a, **kw: [(b, m) for b, m in every(*a, **kw)  # type: ignore[assignment]
                                            if b in ("torch-fp8", "torch.ao-int8")]
    opts = dict(budget_s=args.budget, record=False, threads=args.threads, memory=not args.no_memory)
    if not args.skip_mlp:
        digits = from_config({"name": "digits-mlp", "model": {"type": "mlp", "hidden": [128, 64]},
                              "data": {"type": "digits", "batch_size": 64},
                              "optimizer": {"type": "sgd", "lr": 0.1}}, train_steps=500)
        measure("digits MLP 64-128-64-10", digits, opts, args.sparse_steps)
        wide = from_config({"name": "wide-mlp", "model": {"type": "mlp", "hidden": [1024, 1024]},
                            "data": {"type": "digits", "batch_size": 64},
                            "optimizer": {"type": "adamw", "lr": 0.001}}, train_steps=300)
        measure("wide MLP 64-1024-1024-10", wide, opts, args.sparse_steps)
    if args.gpt:
        with tempfile.TemporaryDirectory() as tmp:
            src = gpt2_source(True, args.gpt_steps, Path(args.gpt_dir or tmp))
            measure("GPT-2 shape (small)", src, {**opts, "batch": args.gpt_batch}, 40, max_drop=2.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
