"""How close is `lmdev plan` to the memory a real run takes? Side by side with accelerate's estimator.

Each shape is run for real (random weights from a config, a few steps) in a fresh subprocess by
lmdev's measurement worker; the CPU peak is the process's peak resident memory minus its baseline.
The planner predicts the same shape without any learned calibration. accelerate's estimate is
`accelerate estimate-memory`'s logic (calculate_maximum_sizes + estimate_training_usage) applied to
the same model built on the meta device.

    python benchmarks/plan_accuracy.py            # all shapes (a few minutes on 2 cores)
    python benchmarks/plan_accuracy.py --json     # machine-readable
    python benchmarks/plan_accuracy.py --only llama-20m-fp32
    python benchmarks/plan_accuracy.py --default-malloc   # glibc defaults: fragmentation included

Budget (docs/figures/plan-accuracy.md): median |error| <= 10%, worst <= 20% on a CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lmdev.catalog.models import ModelSpec, param_count, presets
from lmdev.plan.measure import run_worker
from lmdev.plan.memory import Workload, estimate_memory


def gpt(name: str, layers: int, hidden: int, heads: int, vocab: int, dropout: float = 0.0) -> ModelSpec:
    return ModelSpec(name=name, family="gpt2", n_layers=layers, hidden=hidden, n_heads=heads, ffn=4 * hidden,
                     vocab=vocab, max_positions=1024, mlp="gelu", activation="gelu_new", tied_embeddings=True,
                     norm="layernorm", qkv_bias=True, out_bias=True, mlp_bias=True, learned_positions=True,
                     attn_dropout=dropout, hidden_dropout=dropout)


def llama(name: str, layers: int, hidden: int, heads: int, kv: int, ffn: int, vocab: int) -> ModelSpec:
    return ModelSpec(name=name, family="llama", n_layers=layers, hidden=hidden, n_heads=heads, n_kv_heads=kv,
                     ffn=ffn, vocab=vocab, max_positions=4096, mlp="swiglu", activation="silu")


GPT_30M = gpt("gpt-30m", 6, 384, 6, 50257)
GPT_124M = gpt("gpt-124m", 12, 768, 12, 50257)
GPT2 = presets()["gpt2"].spec  # the real GPT-2 config: dropout 0.1 (the CPU runs sdpa's math kernel)
GPT_DROP = gpt("gpt-25m-dropout", 6, 512, 8, 16000, dropout=0.1)
LLAMA_20M = llama("llama-20m", 4, 512, 8, 4, 1408, 8000)
LLAMA_60M = llama("llama-60m", 8, 640, 10, 5, 1728, 32000)
LLAMA_110M = llama("llama-110m", 12, 768, 12, 4, 2048, 32000)
LLAMA_250M = llama("llama-250m", 16, 1024, 16, 8, 2816, 32000)

T = Workload
SHAPES: list[tuple[str, ModelSpec, Workload]] = [
    ("gpt-30m-fp32-adamw", GPT_30M, T(task="train", precision="fp32", optimizer="adamw", batch=4, seq=256)),
    ("gpt-30m-bf16-adamw", GPT_30M, T(task="train", precision="bf16", optimizer="adamw", batch=8, seq=128)),
    ("gpt-124m-fp32-sgd", GPT_124M, T(task="train", precision="fp32", optimizer="sgd", batch=2, seq=256)),
    ("gpt-124m-bf16-ckpt", GPT_124M, T(task="train", precision="bf16", optimizer="adamw", batch=2, seq=512,
                                       activation_checkpointing=True)),
    ("gpt2-preset-sdpa-dropout", GPT2, T(task="train", precision="fp32", optimizer="adamw", batch=2, seq=256)),
    ("gpt-25m-eager-dropout", GPT_DROP, T(task="train", precision="fp32", optimizer="adamw", batch=4, seq=256,
                                          attention="eager")),
    ("llama-20m-fp32-adamw", LLAMA_20M, T(task="train", precision="fp32", optimizer="adamw", batch=4, seq=256)),
    ("llama-60m-bf16-adamw", LLAMA_60M, T(task="train", precision="bf16", optimizer="adamw", batch=2, seq=512)),
    ("llama-110m-fp32-adam-ckpt", LLAMA_110M, T(task="train", precision="fp32", optimizer="adam", batch=1,
                                                seq=1024, activation_checkpointing=True)),
    ("llama-250m-bf16-sgd", LLAMA_250M, T(task="train", precision="bf16", optimizer="sgd", batch=2, seq=256)),
    ("llama-250m-bf16-infer", LLAMA_250M, T(task="infer", precision="bf16", batch=4, seq=1024, new_tokens=8)),
    ("gpt-124m-fp32-infer", GPT_124M, T(task="infer", precision="fp32", batch=8, seq=512, new_tokens=8)),
    ("llama-110m-fp32-infer", LLAMA_110M, T(task="infer", precision="fp32", batch=16, seq=256, new_tokens=8)),
]


def accelerate_estimate(spec: ModelSpec, w: Workload) -> int | None:
    """`accelerate estimate-memory`'s answer for this model (it ignores batch and sequence)."""
    try:
        import torch
        from accelerate.commands.estimate import estimate_training_usage
        from accelerate.utils import calculate_maximum_sizes
        from transformers import AutoModelForCausalLM

        from lmdev.plan.worker import hf_config
    except ImportError:
        return None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config(spec.to_dict(), "sdpa"))
    total, _largest = calculate_maximum_sizes(model)
    if w.training:
        usage = estimate_training_usage(total, "float32" if w.precision == "fp32" else "bfloat16")
        return int(max(usage.values()))
    # the command divides by 2 for float16 only; bf16 weights take as little, so we do the same for it
    return int(total if w.precision == "fp32" else total // 2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", help="run the shapes whose name contains this")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's allocator at its defaults (the peak then includes heap fragmentation)")
    args = ap.parse_args()
    rows = []
    started = time.time()
    for name, spec, w in SHAPES:
        if args.only and args.only not in name:
            continue
        r = run_worker(spec, w, device="cpu", steps=2, threads=args.threads, pin_malloc=not args.default_malloc)
        assert r["params"] == param_count(spec), (name, r["params"], param_count(spec))
        pred = estimate_memory(spec, replace(w), device="cpu")
        acc = accelerate_estimate(spec, w)
        measured = r["peak_bytes"]
        rows.append({"shape": name, "params": r["params"], "task": w.task, "precision": w.precision,
                     "batch": w.batch, "seq": w.seq, "measured_bytes": measured,
                     "lmdev_bytes": pred.total_bytes, "lmdev_error": (pred.total_bytes - measured) / measured,
                     "accelerate_bytes": acc, "accelerate_error": (acc - measured) / measured if acc else None,
                     "step_seconds": r["step_seconds"], "breakdown": pred.to_dict()})
        if not args.json:
            row = rows[-1]
            acc_txt = f"{row['accelerate_error']:+7.1%}" if acc else "    n/a"
            print(f"{name:28s} {r['params'] / 1e6:6.1f}M  measured {measured / 2**20:8.1f} MiB  "
                  f"lmdev {pred.total_bytes / 2**20:8.1f} MiB ({row['lmdev_error']:+6.1%})  "
                  f"accelerate {acc / 2**20 if acc else 0:8.1f} MiB ({acc_txt})", flush=True)
    errs = [abs(r["lmdev_error"]) for r in rows]
    accs = [abs(r["accelerate_error"]) for r in rows if r["accelerate_error"] is not None]
    summary = {"shapes": len(rows), "lmdev_median_abs_error": statistics.median(errs) if errs else None,
               "lmdev_worst_abs_error": max(errs) if errs else None,
               "accelerate_median_abs_error": statistics.median(accs) if accs else None,
               "accelerate_worst_abs_error": max(accs) if accs else None, "seconds": time.time() - started}
    if args.json:
        json.dump({"rows": rows, "summary": summary}, sys.stdout, indent=2)
        print()
    elif errs:
        print(f"\nlmdev:      median |error| {summary['lmdev_median_abs_error']:.1%}, "
              f"worst {summary['lmdev_worst_abs_error']:.1%}   (budget: 10% / 20%)")
        if accs:
            print(f"accelerate: median |error| {summary['accelerate_median_abs_error']:.1%}, "
                  f"worst {summary['accelerate_worst_abs_error']:.1%}")
        print(f"ratio of median errors (accelerate / lmdev): "
              f"{(summary['accelerate_median_abs_error'] or 0) / max(summary['lmdev_median_abs_error'], 1e-9):.1f}x"
              f"   [{summary['seconds']:.0f} s]")
    ok = errs and summary["lmdev_median_abs_error"] <= 0.10 and summary["lmdev_worst_abs_error"] <= 0.20
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
