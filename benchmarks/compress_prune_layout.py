"""Structured pruning, two questions side by side in one run (lmdev compress --method prune):

1. ``--prune-layout uniform`` (the same share of heads and MLP channels in every block) beside
   ``global`` (units ranked across blocks, a floor per block) on a small GPT-2 (transformers, 4
   blocks x 128 wide, byte vocabulary) trained briefly on the bundled arithmetic corpus, at 25% and
   50%: perplexity right after pruning and after the fine-tune, and the ratio global / uniform.
2. Head pruning of a grouped-query lmdev gpt: examples/arithmetic_gpt.yaml (4 query heads sharing
   2 key/value heads), trained briefly, loses one of its two key/value groups (``--prune heads``)
   or the group and half the MLP channels (``--prune both``): perplexity before / after the
   fine-tune and batch-1 latency beside fp32 (timed in alternation).

    python benchmarks/compress_prune_layout.py                       # a few minutes on one thread
    python benchmarks/compress_prune_layout.py --gpt2-steps 100 --gqa-steps 60 --finetune 20  # quick
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from lmdev.compress import measure as ms
from lmdev.compress import prune
from lmdev.compress.finetune import finetune_lm
from lmdev.compress.source import from_config, resolve

REPO = Path(__file__).resolve().parents[1]


def small_gpt2(folder: Path, steps: int, seed: int) -> Any:
    """A 4 x 128 GPT-2 with a byte vocabulary, trained ``steps`` steps on the arithmetic corpus."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=64, n_embd=128, n_layer=4, n_head=4)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder, safe_serialization=True)
    src = resolve(f"hf:{folder}", data="synthetic")
    t0 = time.perf_counter()
    finetune_lm(src.model, src.data.train, steps, lr=1e-3, seed=seed)
    print(f"  GPT-2 4x128 trained {steps} steps in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return src


def perplexity(fn: Any, ev: ms.EvalSet, base: list[torch.Tensor] | None = None) -> ms.Quality:
    with torch.inference_mode():
        return ms.evaluate(fn, ev, base)[0]


def layouts(src: Any, finetune: int, budget: float) -> list[dict[str, Any]]:
    ev = ms.make_eval_set(src)
    with torch.inference_mode():
        q_fp32, base = ms.evaluate(src.model, ev)
    fp32 = q_fp32.perplexity
    rows = [{"what": "fp32", "ppl0": fp32, "ppl": fp32}]
    twin = copy.deepcopy(src.model)
    finetune_lm(twin, src.data.train, finetune)  # fp32 given the same fine-tune: what it alone is worth
    tuned = perplexity(twin, ev).perplexity
    print(f"\nGPT-2 4x128: fp32 perplexity {fp32:.3f} ({tuned:.3f} after the same {finetune}-step fine-tune); "
          f"heads + MLP channels pruned, fine-tune {finetune} steps")
    print(f"{'ratio':>6} {'layout':>8} {'ppl pruned':>11} {'ppl tuned':>10} {'vs fp32':>8} {'b=1 lat':>8} "
          f"{'heads':>14} {'channels':>22}")
    for ratio in (0.25, 0.5):
        got, made = {}, {}
        for layout in ("uniform", "global"):
            raw = prune.prune_variant(src, ratio, 0, "both", layout)
            tuned = prune.prune_variant(src, ratio, finetune, "both", layout)
            q0, q = perplexity(raw.runner, ev), perplexity(tuned.runner, ev, base)
            with torch.inference_mode():
                tb, tv = ms.paired_latency(src.model, tuned.runner, ev.latency_inputs[0], budget)
            got[layout] = (q0.perplexity, q.perplexity, tv.p50_ms / tb.p50_ms)
            made[layout] = tuned
            s = tuned.settings
            print(f"{ratio:>6.0%} {layout:>8} {q0.perplexity:>11.3f} {q.perplexity:>10.3f} "
                  f"{q.perplexity / fp32:>7.3f}x {tv.p50_ms / tb.p50_ms:>7.2f}x {str(s['heads_per_layer']):>14} "
                  f"{str(s['mlp_channels']):>22}")
            rows.append({"ratio": ratio, "layout": layout, "ppl0": q0.perplexity, "ppl": q.perplexity,
                         "heads": s["heads_per_layer"], "channels": s["mlp_channels"]})
        (u0, u, _), (g0, g, _) = got["uniform"], got["global"]
        with torch.inference_mode():  # the two layouts timed against each other, call by call
            lat = [ms.paired_latency(made["uniform"].runner, made["global"].runner, x, budget)
                   for x in ev.latency_inputs]
        ratios = ", ".join(f"batch {len(x)} {tg.p50_ms / tu.p50_ms:.3f}x" for x, (tu, tg) in zip(ev.latency_inputs, lat))
        print(f"{ratio:>6.0%} global/uniform: perplexity {g0 / u0:.3f}x after pruning, {g / u:.3f}x after the "
              f"fine-tune; latency {ratios}")
    return rows


def gqa(steps: int, finetune: int, budget: float) -> None:
    cfg = yaml.safe_load((REPO / "examples/arithmetic_gpt.yaml").read_text())
    cfg["train"]["max_steps"] = steps
    cfg["data"]["n_examples"] = 8000
    t0 = time.perf_counter()
    src = from_config(cfg, train_steps=steps)
    print(f"\narithmetic_gpt.yaml (4 heads, 2 key/value groups, 4 x 128) trained {steps} steps in "
          f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    ev = ms.make_eval_set(src)
    with torch.inference_mode():
        q_fp32, base = ms.evaluate(src.model, ev)
    fp32 = q_fp32.perplexity
    params = sum(p.numel() for p in src.model.parameters())
    from lmdev.compress.finetune import RECOVERY
    from lmdev.compress.finetune import finetune as tune

    twin = copy.deepcopy(src.model)
    tune(twin, src, finetune, plan=RECOVERY)  # fp32 given the pruned models' fine-tune: what it alone is worth
    print(f"\narithmetic_gpt (GQA 4:2), trained {steps} steps: fp32 perplexity {fp32:.3f} "
          f"({perplexity(twin, ev).perplexity:.3f} after the same {finetune}-step fine-tune), {params:,} parameters")
    print(f"{'--prune':>8} {'n_head:kv':>9} {'params':>8} {'ppl pruned':>11} {'ppl tuned':>10} {'vs fp32':>8} "
          f"{'top-1 agree':>11} {'b=1 latency':>12}")
    for parts in ("heads", "both"):
        raw = prune.prune_variant(src, 0.5, 0, parts)
        v = prune.prune_variant(src, 0.5, finetune, parts)
        q0, q = perplexity(raw.runner, ev), perplexity(v.runner, ev, base)
        x = ev.latency_inputs[0]
        with torch.inference_mode():
            tb, tv = ms.paired_latency(src.model, v.runner, x, budget)
        c = v.spec.config
        n = sum(p.numel() for p in v.module.parameters()) if v.module is not None else 0
        print(f"{parts:>8} {c['n_head']:>6}:{c['n_kv_head']:<2} {n / params:>7.2f}x {q0.perplexity:>11.3f} "
              f"{q.perplexity:>10.3f} {q.perplexity / fp32:>7.3f}x {q.top1_agreement:>10.1%} "
              f"{tv.p50_ms / tb.p50_ms:>11.2f}x")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpt2-steps", type=int, default=600, help="training steps of the small GPT-2")
    p.add_argument("--gqa-steps", type=int, default=300, help="training steps of the arithmetic gpt")
    p.add_argument("--finetune", type=int, default=100, help="fine-tune steps after pruning")
    p.add_argument("--budget", type=float, default=1.0, help="timing seconds per latency pair")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the small GPT-2's initialisation and training order")
    p.add_argument("--skip-layout", action="store_true")
    p.add_argument("--skip-gqa", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    if not args.skip_layout:
        with tempfile.TemporaryDirectory() as tmp:
            layouts(small_gpt2(Path(tmp) / "gpt2", args.gpt2_steps, args.seed), args.finetune, args.budget)
    if not args.skip_gqa:
        gqa(args.gqa_steps, args.finetune, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
