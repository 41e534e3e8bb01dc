"""Which learning rate should the fine-tune after pruning use? Each plan fine-tunes the same
pruned (and the same unpruned) copy of a trained run for the same steps; the table prints the
validation perplexity change against the run itself.

    python benchmarks/finetune_lr.py RUN [--steps 100] [--ratio 0.5] [--threads 2]

RUN: a run of lmdev train with an lmdev `gpt` (e.g. examples/arithmetic_gpt.yaml without n_kv_head).
The pruned copy loses ``--ratio`` of its blocks (``lmdev.compress.prune_layers``, as
``lmdev compress RUN --method prune --prune layers`` does); ``lmdev.compress.finetune.RECOVERY``
is the plan lmdev uses."""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

from lmdev.compress import measure as ms
from lmdev.compress import prune, prune_layers
from lmdev.compress.finetune import RECOVERY, LrPlan, finetune
from lmdev.compress.source import ModelSpec, Source, resolve
from lmdev.compress.variant import TorchRunner


class PeakConstant(LrPlan):
    """The old fine-tune: the run's peak learning rate throughout."""

    def factor(self, step: int, steps: int, cfg: object = None) -> float:
        return 1.0

    def describe(self, cfg: object = None) -> str:
        return "constant at the run's peak lr (before)"


PLANS: dict[str, LrPlan] = {"peak": PeakConstant(), "end (lmdev)": RECOVERY,
                            "cosine 1.0": LrPlan("cosine", peak=1.0), "cosine 0.3": LrPlan("cosine", peak=0.3),
                            "cosine 0.1": LrPlan("cosine", peak=0.1)}


def layer_pruned(src: Source, ratio: float) -> nn.Module:
    model = copy.deepcopy(src.model)
    batches = prune.score_batches(src, src.train_config.data.batch_size)
    removed, _ = prune_layers.prune(model, src.spec, ratio, batches)
    n_before = len(prune_layers.block_list(src.model, src.spec))
    spec = ModelSpec(src.spec.kind, prune_layers.pruned_config(src.spec.config, n_before - len(removed)),
                     src.spec.shape)
    rebuilt = spec.build()
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--ratio", type=float, default=0.5, help="the fraction of blocks removed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--plans", default=",".join(PLANS), help=f"some of: {', '.join(PLANS)}")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    src = resolve(args.run)
    ev = ms.make_eval_set(src)

    def perplexity(m: nn.Module) -> float:
        q, _ = ms.evaluate(TorchRunner(m), ev)
        return float(q.value or float("nan"))

    base = perplexity(src.model)
    print(f"{args.run}: perplexity {base:.4f} on {sum(len(x) for x, _ in ev.batches)} validation sequences; "
          f"{args.steps} fine-tune steps each")
    starts = {"not pruned": copy.deepcopy(src.model), f"{args.ratio:.0%} of blocks removed": layer_pruned(src, args.ratio)}
    for what, start in starts.items():
        print(f"\n{what}: {perplexity(start) / base - 1:+.2%} before the fine-tune")
        for name in args.plans.split(","):
            plan = PLANS[name]
            m = copy.deepcopy(start)
            t0 = time.perf_counter()
            finetune(m, src, args.steps, plan=plan)
            print(f"  {name:12s} {plan.describe(src.train_config):62s} {perplexity(m) / base - 1:+7.2%}"
                  f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
