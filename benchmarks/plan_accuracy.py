"""How close is `lmdev plan` to a real run? Generated models, default allocator, fresh processes.

Configs are drawn from a seeded RNG, so the planner's code cannot contain them: Llama-style
decoders (Hugging Face transformers' ``LlamaConfig`` / ``LlamaForCausalLM``, random weights) with
random widths, depths, head counts, grouped-query ratios, vocabularies from 8k to 128k, tied or
untied embeddings, sequence lengths, precisions and optimizers (AdamW / SGD), each in one of three
modes: a training step, a prefill (the whole prompt, every position's logits, as a plain forward
call computes them), or generation (prefill keeping the last position, then new tokens one at a
time from the KV cache).

Each config runs in a fresh subprocess (lmdev's measurement worker) with glibc's malloc and
PyTorch's allocator at their defaults (no ``MALLOC_*`` variables, no ``malloc_trim``). The
measured peak is the kernel's resident-set high-water mark (``VmHWM``, reset once the model is
built) minus the resident set before the model was built: exact, where sampling RSS would miss a
millisecond-long logits peak. The planner predicts the same config without any calibration.

Time: the worker also times an n x n matmul and a large copy in the same process right after the
steps (the anchor: what this busy CPU delivers at that moment); the planner's step-time model
turns them into a predicted step time, compared with the measured one.

Side by side: `accelerate estimate-memory`'s logic on the same model (the usual anchor), ratio of
median errors printed.

    python benchmarks/plan_accuracy.py --seed 2026          # 14 configs, a few minutes on 2 cores
    python benchmarks/plan_accuracy.py --seed 7 --quick     # 8 configs
    python benchmarks/plan_accuracy.py --seed 2026 --save runs.json   # keep the measurements
    python benchmarks/plan_accuracy.py --rescore runs.json  # re-predict saved measurements (no runs)

Budget (docs/figures/plan-accuracy.md): median |memory error| <= 10%, worst <= 20%, no
under-estimate beyond 10%. Exit code 0 when the budget is met, 1 when not.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lmdev.catalog.models import ModelSpec, param_count
from lmdev.plan.compute import flops_per_token, step_time
from lmdev.plan.measure import run_worker
from lmdev.plan.memory import Workload, estimate_memory

MODES = ("train", "train", "prefill", "generate")  # training half the time
FLOP_BUDGET = {"fp32": 12e9, "bf16": 1.2e9}  # per measured step


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def draw_config(rng: random.Random, i: int) -> tuple[str, ModelSpec, Workload]:
    """One random model and workload."""
    head_dim = rng.choice([32, 48, 64])
    heads = rng.choice([2, 4, 6, 8])
    kv = rng.choice(_divisors(heads))
    hidden = heads * head_dim
    layers = rng.randint(2, 8)
    ffn = max(64, int(hidden * rng.uniform(2.0, 4.0)) // 32 * 32)
    vocab = int(math.exp(rng.uniform(math.log(8000), math.log(128000))))
    tied = rng.random() < 0.4
    spec = ModelSpec(name=f"gen{i}", family="llama", n_layers=layers, hidden=hidden, n_heads=heads, n_kv_heads=kv,
                     ffn=ffn, vocab=vocab, max_positions=4096, mlp="swiglu", activation="silu", tied_embeddings=tied)
    mode = MODES[i % len(MODES)] if i < len(MODES) else rng.choice(MODES)
    precision = "bf16" if rng.random() < 0.3 else "fp32"
    max_tokens = max(64, min(2048, 48_000_000 // vocab))  # keeps one fp32 logits tensor under ~190 MB
    if mode == "train":
        batch = rng.choice([1, 2, 4])
        seq = rng.choice([128, 256, 384, 512, 768, 1024])
        w = Workload(task="train", precision=precision, optimizer=rng.choice(["adamw", "sgd"]), batch=batch, seq=seq)
    elif mode == "prefill":
        w = Workload(task="infer", precision=precision, batch=rng.choice([1, 2, 4, 8]),
                     seq=rng.choice([128, 256, 512, 1024]), logits="all")
    else:
        w = Workload(task="infer", precision=precision, batch=rng.choice([1, 2, 4]), seq=rng.choice([64, 128, 256, 512]),
                     new_tokens=rng.choice([8, 16, 24]))
    # a few seconds per step on 2 busy cores: CPUs without AVX512-BF16/AMX emulate bf16 matmuls, ~10x slower
    budget = FLOP_BUDGET[precision]
    while w.seq > 64 and (w.tokens > max_tokens or flops_per_token(spec, w) * w.tokens > budget):
        w.seq //= 2
    while w.batch > 1 and flops_per_token(spec, w) * w.tokens > budget:
        w.batch //= 2
    return f"{i:02d}-{mode}", spec, w


def _mode(w: Workload) -> str:
    return "train" if w.training else ("generate" if w.new_tokens else "prefill")


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
    return int(total if w.precision == "fp32" else total // 2)


def predict(spec: ModelSpec, w: Workload, measured: dict[str, Any]) -> dict[str, Any]:
    """The planner's memory (no calibration) and its time for the anchor measured with the run."""
    kind = "gpu" if str(measured.get("device", "cpu")).startswith("cuda") else "cpu"
    mem = estimate_memory(spec, w, device=kind)
    t = step_time(spec, w, matmul_flops=measured.get("anchor_matmul_flops"),
                  bandwidth_bytes_s=measured.get("anchor_bandwidth_bytes_s"), device=kind)
    if w.training or not w.new_tokens:
        pred_t, meas_t = t.step_seconds, measured["step_seconds"]
    else:  # generation: the time per generated token is what a user waits for
        pred_t, meas_t = t.decode_seconds_per_token, measured.get("decode_seconds_per_token")
    return {"predicted_bytes": mem.total_bytes, "breakdown": mem.to_dict(),
            "predicted_seconds": pred_t, "measured_seconds": meas_t}


def score(row: dict[str, Any]) -> dict[str, Any]:
    spec = ModelSpec(**row["spec"])
    w = Workload(**row["workload"])
    p = predict(spec, w, row["measured"])
    meas = row["measured"]["peak_bytes"]
    row.update(p, memory_error=(p["predicted_bytes"] - meas) / meas)
    row["time_error"] = ((p["predicted_seconds"] - p["measured_seconds"]) / p["measured_seconds"]
                         if p["predicted_seconds"] and p["measured_seconds"] else None)
    acc = row.get("accelerate_bytes")
    row["accelerate_error"] = (acc - meas) / meas if acc else None
    return row


def stats(errors: list[float]) -> dict[str, float | None]:
    if not errors:
        return {"median_abs": None, "worst_abs": None, "worst_under": None}
    return {"median_abs": statistics.median(abs(e) for e in errors), "worst_abs": max(abs(e) for e in errors),
            "worst_under": min(0.0, min(errors))}


def describe(spec: ModelSpec, w: Workload) -> str:
    shape = (f"L{spec.n_layers} h{spec.hidden} {spec.n_heads}/{spec.kv_heads}h f{spec.ffn} "
             f"V{spec.vocab // 1000}k{' tied' if spec.tied_embeddings else ''}")
    work = f"{w.precision} b{w.batch}x{w.seq}"
    if w.training:
        work += f" {w.optimizer}"
    elif w.new_tokens:
        work += f" +{w.new_tokens}"
    return f"{shape:34s} {work:22s}"


HEADER = (f"{'config':12s} {'model':34s} {'workload':22s} {'params':>7s} {'measured':>10s} {'lmdev':>10s} "
          f"{'error':>7s} {'accel.':>7s} {'t meas':>8s} {'t pred':>8s} {'t err':>7s}")


def print_row(row: dict[str, Any]) -> None:
    spec, w = ModelSpec(**row["spec"]), Workload(**row["workload"])
    te = f"{row['time_error']:+7.1%}" if row["time_error"] is not None else "    n/a"
    acc = f"{row['accelerate_error']:+7.1%}" if row.get("accelerate_error") is not None else "    n/a"
    print(f"{row['name']:12s} {describe(spec, w)} {param_count(spec) / 1e6:6.1f}M "
          f"{row['measured']['peak_bytes'] / 2**20:8.1f}Mi {row['predicted_bytes'] / 2**20:8.1f}Mi "
          f"{row['memory_error']:+7.1%} {acc} {(row['measured_seconds'] or 0):8.3f} "
          f"{(row['predicted_seconds'] or 0):8.3f} {te}", flush=True)


def summarise(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    mem = stats([r["memory_error"] for r in rows])
    tim = stats([r["time_error"] for r in rows if r["time_error"] is not None])
    acc = stats([r["accelerate_error"] for r in rows if r.get("accelerate_error") is not None])
    by_mode = {m: stats([r["memory_error"] for r in rows if r["mode"] == m]) for m in ("train", "prefill", "generate")}
    ok = (mem["median_abs"] is not None and mem["median_abs"] <= 0.10 and mem["worst_abs"] <= 0.20
          and mem["worst_under"] >= -0.10)
    return {"configs": len(rows), "memory": mem, "time": tim, "accelerate": acc, "memory_by_mode": by_mode,
            "budget_met": ok, "seconds": seconds}


def under(worst: float) -> str:
    """The worst under-estimate as printed: "none" when no prediction was below its measurement."""
    return f"{worst:+.1%}" if worst < 0 else "none"


def print_summary(s: dict[str, Any]) -> None:
    m, t, a = s["memory"], s["time"], s["accelerate"]
    print(f"\nmemory  lmdev: median |error| {m['median_abs']:.1%}, worst {m['worst_abs']:.1%}, "
          f"worst under-estimate {under(m['worst_under'])}   (budget 10% / 20% / -10%: "
          f"{'met' if s['budget_met'] else 'MISSED'})")
    for mode, st in s["memory_by_mode"].items():
        if st["median_abs"] is not None:
            print(f"        {mode:9s} median {st['median_abs']:.1%}, worst {st['worst_abs']:.1%}, "
                  f"worst under {under(st['worst_under'])}")
    if a["median_abs"] is not None:
        print(f"memory  accelerate: median |error| {a['median_abs']:.1%}, worst {a['worst_abs']:.1%}; "
              f"ratio of medians (accelerate / lmdev) {a['median_abs'] / max(m['median_abs'], 1e-9):.1f}x")
    if t["median_abs"] is not None:
        print(f"time    lmdev: median |error| {t['median_abs']:.1%}, worst {t['worst_abs']:.1%}, "
              f"worst under-estimate {t['worst_under']:+.1%}")
    print(f"[{s['configs']} configs, {s['seconds']:.0f} s]")


def _pct(v: float | None) -> str:
    return f"{v:+.1%}" if v is not None else "n/a"


def print_markdown(rows: list[dict[str, Any]], s: dict[str, Any]) -> None:
    print("| config | model | workload | params | measured | lmdev | error | accelerate | step measured | "
          "step predicted | error |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        spec, w = ModelSpec(**r["spec"]), Workload(**r["workload"])
        model, work = describe(spec, w)[:34].strip(), describe(spec, w)[35:].strip()
        unit = " /token" if r["mode"] == "generate" else ""
        print(f"| {r['name']} | {model} | {work} | {param_count(spec) / 1e6:.1f}M | "
              f"{r['measured']['peak_bytes'] / 2**20:.1f} MiB | {r['predicted_bytes'] / 2**20:.1f} MiB | "
              f"{_pct(r['memory_error'])} | {_pct(r.get('accelerate_error'))} | "
              f"{(r['measured_seconds'] or 0):.3f} s{unit} | {(r['predicted_seconds'] or 0):.3f} s{unit} | "
              f"{_pct(r['time_error'])} |")
    m, t, a = s["memory"], s["time"], s["accelerate"]
    print(f"\n**Memory: median |error| {m['median_abs']:.1%}, worst {m['worst_abs']:.1%}, worst under-estimate "
          f"{m['worst_under']:+.1%}** (budget 10% / 20% / -10%: {'met' if s['budget_met'] else 'missed'}); "
          f"{s['configs']} configs.")
    for mode, st in s["memory_by_mode"].items():
        if st["median_abs"] is not None:
            print(f"- {mode}: median {st['median_abs']:.1%}, worst {st['worst_abs']:.1%}, "
                  f"worst under {under(st['worst_under'])}")
    if a["median_abs"] is not None:
        print(f"\naccelerate's estimator: median |error| {a['median_abs']:.1%}, worst {a['worst_abs']:.1%} "
              f"(ratio of medians, accelerate / lmdev: {a['median_abs'] / max(m['median_abs'], 1e-9):.1f}x).")
    if t["median_abs"] is not None:
        print(f"\n**Step time: median |error| {t['median_abs']:.1%}, worst {t['worst_abs']:.1%}, worst "
              f"under-estimate {t['worst_under']:+.1%}.**")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=2026, help="RNG seed of the generated configs")
    ap.add_argument("--configs", type=int, default=14)
    ap.add_argument("--quick", action="store_true", help="8 configs")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads in the worker (default 1: on a shared machine, OpenMP threads spinning "
                    "against other jobs make step times meaningless)")
    ap.add_argument("--steps", type=int, default=3,
                    help="steps per config (default 3: glibc's heap reaches its steady state on the third "
                    "training step, once the mmap threshold has risen past the logits)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the configs are measured")
    ap.add_argument("--save", help="write the measurements and predictions to this JSON file")
    ap.add_argument("--rescore", help="re-predict the measurements saved in this file (runs nothing)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--markdown", action="store_true", help="print the table and summary as Markdown")
    args = ap.parse_args()
    started = time.time()
    if args.rescore:
        saved = json.loads(Path(args.rescore).read_text("utf-8"))
        rows = [score(r) for r in saved["rows"]]
    else:
        rng = random.Random(args.seed)
        n = 8 if args.quick else args.configs
        rows = []
        for i in range(n):
            name, spec, w = draw_config(rng, i)
            measured = run_worker(spec, w, device=args.device, steps=args.steps, threads=args.threads, anchor=True)
            if measured["params"] != param_count(spec):
                raise SystemExit(f"{name}: planner counts {param_count(spec)} parameters, the model has "
                                 f"{measured['params']}")
            row = score({"name": name, "mode": _mode(w), "spec": spec.to_dict(), "workload": w.__dict__.copy(),
                         "measured": measured, "accelerate_bytes": accelerate_estimate(spec, w)})
            rows.append(row)
            if args.save:  # after every config: an interrupted run keeps what it measured
                Path(args.save).write_text(json.dumps({"seed": args.seed, "rows": rows}, indent=1))
            if not args.json:
                if i == 0:
                    print(HEADER)
                print_row(row)
    s = summarise(rows, time.time() - started)
    if args.save:
        Path(args.save).write_text(json.dumps({"seed": args.seed, "rows": rows, "summary": s}, indent=1))
    if args.json:
        json.dump({"seed": args.seed, "rows": rows, "summary": s}, sys.stdout, indent=2)
        print()
    elif args.markdown:
        print_markdown(rows, s)
    else:
        if args.rescore:
            print(HEADER)
            for row in rows:
                print_row(row)
        print_summary(s)
    return 0 if s["budget_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
