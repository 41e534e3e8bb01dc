"""lmdev compress beside the backends it chooses from, and beside the tools as users call them.

Three models, each built from a config and trained briefly here:
- a GPT-2-shaped model (transformers GPT2LMHeadModel, Conv1D layers, tied head; 124M parameters,
  or a narrower one with --small) trained on the bundled arithmetic corpus so perplexity means
  something;
- the digits MLP (64-128-64-10) of examples/digits_mlp.yaml;
- a wide MLP (64-1024-1024-10) on the digits.
For each: every backend lmdev tries, lmdev's pick, and the anchors (torch.ao quantize_dynamic as
users call it on GPT-2, unstructured magnitude pruning), each timed in alternation with fp32 and
printed as ratios. Budgets (docs/figures/compress.md): GPT-2 shape best latency <= 0.35x fp32 at
batch 1 with perplexity within 2%; smallest <= 0.3x size; structured pruning at 50% <= 0.55x
latency with accuracy within 1 point.

    python benchmarks/compress.py --small          # a few minutes
    python benchmarks/compress.py                  # the full GPT-2 small shape (124M)
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmdev.compress import measure as ms
from lmdev.compress.core import Options, compress_source
from lmdev.compress.report import Report, render_json
from lmdev.compress.source import from_config, resolve
from lmdev.compress.variant import TorchRunner, module_bytes


def gpt2_source(small: bool, steps: int, folder: Path, warm_steps: int = 0) -> Any:
    """The GPT-2 shape, trained ``steps`` steps and saved to ``folder`` (reused when already there).

    ``warm_steps``: first train the same blocks with a head over the data's 256 byte values only
    (the 50,257-row head is most of a training step, so such a step is several times cheaper),
    then put those blocks, positions and the 256 used embedding rows into the full-vocabulary model
    (the other rows keep their initialisation) and train ``steps`` full steps, which push the
    unused rows down. A model this small sits at the corpus's unigram entropy (2.66 nats) for the
    first hundreds of steps; the warm start gets it past that in minutes."""
    import transformers

    transformers.logging.set_verbosity_error()
    if (folder / "config.json").is_file():
        print(f"  reusing the model saved in {folder}", file=sys.stderr)
        return resolve(f"hf:{folder}", data="synthetic")
    shape = dict(n_layer=4, n_embd=256, n_head=4) if small else dict(n_layer=12, n_embd=768, n_head=12)
    from lmdev.train.config import DataConfig
    from lmdev.train.data import load_data

    data = load_data(DataConfig(type="synthetic", seq_len=64, batch_size=8, n_examples=20000), 0)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50257, n_positions=1024, **shape))
    lr = 1e-3 if small else 6e-4
    if warm_steps:
        torch.manual_seed(0)
        warm = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=256, n_positions=1024, **shape))
        _train_lm(warm, data, warm_steps, lr, "warm start (256-row head)")
        state = {k: v for k, v in warm.state_dict().items() if "wte" not in k and "lm_head" not in k}
        model.load_state_dict(state, strict=False)
        with torch.no_grad():
            model.transformer.wte.weight[:256] = warm.transformer.wte.weight
    _train_lm(model, data, steps, lr, "full vocabulary")
    model.eval().save_pretrained(folder, safe_serialization=True)
    return resolve(f"hf:{folder}", data="synthetic")


def _train_lm(model: nn.Module, data: Any, steps: int, lr: float, what: str) -> None:
    from lmdev.train.data import Batches

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    order = Batches(len(data.train), 8, 0)
    model.train()
    t0 = time.perf_counter()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        x, y = data.train.batch(order.indices(step))
        logits = model(input_ids=x, use_cache=False).logits
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            print(f"  {what} step {step}: loss {loss.item():.3f}", file=sys.stderr, flush=True)
    print(f"  {what}: {steps} steps in {time.perf_counter() - t0:.0f} s, last loss {loss.item():.3f}",
          file=sys.stderr)


def anchor_torch_ao_as_called(source: Any, ev: ms.EvalSet, budget: float) -> dict[str, Any]:
    """torch.ao.quantization.quantize_dynamic on the model as it is (GPT-2's Conv1D left alone)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(source.model), {nn.Linear}, dtype=torch.qint8)
    return _anchor("torch.ao quantize_dynamic as called (Conv1D untouched)", source, q, ev, budget)


def anchor_unstructured(source: Any, ev: ms.EvalSet, budget: float, amount: float) -> dict[str, Any]:
    """torch.nn.utils.prune magnitude pruning: zeros in dense weights, masks saved beside them."""
    from torch.nn.utils import prune

    m = copy.deepcopy(source.model)
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            prune.l1_unstructured(mod, "weight", amount=amount)
    return _anchor(f"unstructured {amount:.0%} (torch.nn.utils.prune, masks kept)", source, m, ev, budget)


def _anchor(name: str, source: Any, model: nn.Module, ev: ms.EvalSet, budget: float) -> dict[str, Any]:
    base, run = TorchRunner(source.model), TorchRunner(model)
    ratios = []
    for x in ev.latency_inputs:
        b, v = ms.paired_latency(base, run, x, budget)
        ratios.append(v.p50_ms / b.p50_ms)
    q, _ = ms.evaluate(run, ev, ms.evaluate(base, ev)[1])
    return {"name": name, "weights_ratio": module_bytes(model) / module_bytes(source.model), "latency_ratio": ratios,
            "metric": q.value, "rel_logit_error": q.rel_logit_error}


def show(title: str, report: Report, anchors: list[dict[str, Any]]) -> None:
    base = report.baseline.measurement
    q = base.quality if base else None
    print(f"\n## {title} — {report.source['parameters']:,} parameters, {report.machine['threads']} thread(s), "
          f"batches {' and '.join(str(lt.batch) for lt in base.latency)}")
    print(f"fp32: file {base.file_bytes / 1e6:.2f} MB, batch-1 p50 {base.latency[0].p50_ms:.3g} ms, "
          f"batch-N p50 {base.latency[-1].p50_ms:.3g} ms, {q.metric if q else ''} {q.value if q else ''}")
    if base.peak_memory_bytes is not None:
        print(f"fp32 peak memory (fresh process, load + one batch-N call): {base.peak_memory_bytes / 1e6:.0f} MB")
    print("| variant | size | latency b=1 | latency b=N | peak memory | metric | change | top-1 agree | logit err "
          "| verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for v in report.variants:
        m = v.measurement
        if m is None:
            print(f"| {v.backend} | - | - | - | - | - | - | - | - | failed: {v.error} |")
            continue
        pick = " **(lmdev's pick)**" if v.backend == report.chosen else ""
        lat = [f"{1 / s:.2f}x" for s in v.speedup]
        qq = m.quality
        peak = "-" if v.peak_memory_ratio is None else f"{v.peak_memory_ratio:.2f}x"
        print(f"| {v.backend}{pick} | {v.size_ratio:.2f}x | {lat[0]} | {lat[-1]} | {peak} | "
              f"{qq.value if qq and qq.value is not None else '-':.4g} | "
              f"{'-' if v.quality_drop is None else f'{-v.quality_drop:+.2f}'} | "
              f"{'-' if not qq or qq.top1_agreement is None else f'{qq.top1_agreement:.1%}'} | "
              f"{'-' if not qq or qq.rel_logit_error is None else f'{qq.rel_logit_error:.2%}'} | {v.verdict} |")
    for a in anchors:
        lat = " / ".join(f"{r:.2f}x" for r in a["latency_ratio"])
        print(f"| anchor: {a['name']} | {a['weights_ratio']:.2f}x (weights) | {lat} | | - | {a['metric'] or 0:.4g} | | "
              f"| {a['rel_logit_error'] or 0:.2%} | |")
    for n in report.notes:
        print(f"note: {n}")


def budget(line: str, ok: bool, detail: str) -> bool:
    print(f"{'PASS' if ok else 'MISS'}  {line}: {detail}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="a narrower GPT-2-shaped model (4 layers, width 256)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=1.0, help="timing seconds per variant and batch")
    ap.add_argument("--gpt-steps", type=int, default=None, help="training steps of the GPT-2 shape")
    ap.add_argument("--gpt-warm-steps", type=int, default=0,
                    help="warm-start training steps with a 256-row head before the full-vocabulary steps")
    ap.add_argument("--gpt-batch", type=int, default=8, help="the GPT-2 shape's large latency batch (sequences)")
    ap.add_argument("--skip-gpt", action="store_true", help="only the MLPs")
    ap.add_argument("--skip-mlp", action="store_true", help="only the GPT-2 shape")
    ap.add_argument("--json", metavar="PATH", help="write every report here")
    ap.add_argument("--gpt-dir", metavar="DIR", help="save the trained GPT-2 shape here, or reuse the one saved there")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes (a process per variant)")
    ap.add_argument("--prune-gpt", action="store_true",
                    help="the GPT-2 shape's structured-pruning table (25%% and 50%% of heads and MLP channels, "
                         "+ int8) beside fp32, torch.ao-int8 and onnxruntime-int8, instead of its quantisation table")
    ap.add_argument("--finetune-steps", type=int, default=60, help="--prune-gpt: fine-tune steps after pruning")
    ap.add_argument("--skip-backend", action="append", default=[], metavar="NAME",
                    help="leave a quantisation backend out (e.g. torchao-int8, many times slower on CPUs)")
    args = ap.parse_args()
    cores = torch.get_num_threads()  # training uses every core, as a user's would; timing is pinned
    torch.set_num_threads(args.threads)
    if args.skip_backend:
        _skip_backends(set(args.skip_backend))
    reports: dict[str, Any] = {}
    results: list[bool] = []
    opts = dict(budget_s=args.budget, record=False, threads=args.threads, memory=not args.no_memory)

    if not args.skip_gpt:
        with tempfile.TemporaryDirectory() as tmp:
            print("GPT-2 shape: training", file=sys.stderr)
            torch.set_num_threads(cores)
            src = gpt2_source(args.small, 60 if args.gpt_steps is None and args.small else
                              12 if args.gpt_steps is None else args.gpt_steps, Path(args.gpt_dir or tmp),
                              args.gpt_warm_steps)
            torch.set_num_threads(args.threads)
            if args.prune_gpt:
                results += gpt_pruning(src, args, opts, reports)
                return _finish(args, reports, results)
            rep = compress_source(src, Options(method="quantize", max_drop=2.0, batch=args.gpt_batch, **opts), _say)
            ev = ms.make_eval_set(src, args.gpt_batch)
            show("GPT-2 shape" + (" (small)" if args.small else " (124M)"), rep,
                 [anchor_torch_ao_as_called(src, ev, args.budget)])
            reports["gpt2"] = json.loads(render_json(rep))
            results += _gpt_budgets(rep)

    if args.skip_mlp:
        return _finish(args, reports, results)
    digits = from_config({"name": "digits-mlp", "model": {"type": "mlp", "hidden": [128, 64]},
                          "data": {"type": "digits", "batch_size": 64},
                          "optimizer": {"type": "sgd", "lr": 0.1}}, train_steps=500)
    rep = compress_source(digits, Options(method="auto", **opts), _say)
    ev = ms.make_eval_set(digits)
    show("digits MLP 64-128-64-10", rep, [anchor_unstructured(digits, ev, args.budget, 0.5)])
    reports["digits"] = json.loads(render_json(rep))

    wide_cfg = {"name": "wide-mlp", "model": {"type": "mlp", "hidden": [1024, 1024]},
                "data": {"type": "digits", "batch_size": 64}, "optimizer": {"type": "adamw", "lr": 0.001}}
    wide = from_config(wide_cfg, train_steps=300)
    ev = ms.make_eval_set(wide)
    for ratio in (0.5, 0.75):
        rep = compress_source(wide, Options(method="prune", ratio=ratio, steps=300, **opts), _say)
        show(f"wide MLP 64-1024-1024-10, structured pruning {ratio:.0%}", rep,
             [anchor_unstructured(wide, ev, args.budget, ratio)] if ratio == 0.5 else [])
        reports[f"wide-prune-{ratio}"] = json.loads(render_json(rep))
        if ratio == 0.5:
            results.append(_prune_budget(rep))
    rep = compress_source(wide, Options(method="quantize", **opts), _say)
    show("wide MLP 64-1024-1024-10, quantisation", rep, [])
    reports["wide-quantize"] = json.loads(render_json(rep))
    return _finish(args, reports, results)


PRUNE_ANCHORS = ("torch.ao-int8", "onnxruntime-int8")  # the quantisation rows the pruning table is set beside


def gpt_pruning(src: Any, args: argparse.Namespace, opts: dict[str, Any], reports: dict[str, Any]) -> list[bool]:
    """Structured pruning of the GPT-2 shape (heads + MLP channels) at 25% and 50%, each fine-tuned
    and each also int8-quantised, in one table with fp32, torch.ao-int8 and onnxruntime-int8. Each
    row's ratios are to fp32 timed in alternation with that row."""
    from lmdev.compress import prune, quantize
    from lmdev.compress.report import choose

    _skip_backends(set(quantize.BACKENDS) - set(PRUNE_ANCHORS))
    common = dict(max_drop=2.0, batch=args.gpt_batch, steps=args.finetune_steps, prune="both", **opts)
    rep = compress_source(src, Options(method="auto", ratio=0.25, **common), _say)
    half = compress_source(src, Options(method="prune", ratio=0.5, backend=prune.PRUNED_INT8, **common), _say)
    for v in rep.variants:
        if v.method == "prune":
            v.backend = f"{v.backend} 25%"
    for v in half.variants:
        v.backend = f"{v.backend} 50%"
    rep.variants += half.variants
    chosen = choose(rep.variants, "latency", None)
    rep.chosen = chosen.backend if chosen else None
    show(f"GPT-2 shape{' (small)' if args.small else ' (124M)'}: structured pruning, {args.finetune_steps} "
         "fine-tune steps", rep, [anchor_finetuned_only(src, args.finetune_steps, args.gpt_batch)])
    reports["gpt2-prune"] = json.loads(render_json(rep))
    return _gpt_budgets(rep)


def anchor_finetuned_only(src: Any, steps: int, batch: int) -> dict[str, Any]:
    """fp32 given the same fine-tune as the pruned variants, without pruning: how much of a pruned
    variant's perplexity change is the extra training rather than the pruning."""
    from lmdev.compress.finetune import finetune_lm

    m = copy.deepcopy(src.model)
    finetune_lm(m, src.data.train, steps)
    ev = ms.make_eval_set(src, batch)
    base, base_outs = ms.evaluate(TorchRunner(src.model), ev)
    q, _ = ms.evaluate(TorchRunner(m), ev, base_outs)
    change = (q.value / base.value - 1) * 100 if q.value and base.value else float("nan")
    return {"name": f"fp32 + the same {steps} fine-tune steps, not pruned (perplexity {change:+.2f}%)",
            "weights_ratio": 1.0, "latency_ratio": [], "metric": q.value, "rel_logit_error": q.rel_logit_error}


def _finish(args: argparse.Namespace, reports: dict[str, Any], results: list[bool]) -> int:
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=1))
    print(f"\n{sum(results)} of {len(results)} budgets met")
    return 0


def _skip_backends(names: set[str]) -> None:
    from lmdev.compress import quantize

    every = quantize.candidates

    def fewer(*a: Any, **kw: Any) -> list[tuple[str, Any]]:
        return [(b, make) for b, make in every(*a, **kw) if b not in names]

    quantize.candidates = fewer  # type: ignore[assignment]
    print(f"  leaving out: {', '.join(sorted(names))}", file=sys.stderr)


def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def _gpt_budgets(rep: Report) -> list[bool]:
    ok = [v for v in rep.variants if v.measurement is not None]
    chosen = next((v for v in ok if v.backend == rep.chosen), None)
    out = []
    if chosen is None:
        out.append(budget("GPT-2 best latency <= 0.35x fp32 at batch 1, perplexity within 2%", False, "nothing chosen"))
    else:
        r = 1 / chosen.speedup[0]
        out.append(budget("GPT-2 best latency <= 0.35x fp32 at batch 1, perplexity within 2%",
                          r <= 0.35 and (chosen.quality_drop or 0) <= 2.0,
                          f"{chosen.backend}: {r:.2f}x, perplexity {-(chosen.quality_drop or 0):+.2f}%"))
    smallest = min(ok, key=lambda v: v.size_ratio or 9.0, default=None)
    if smallest is not None:
        out.append(budget("GPT-2 smallest variant <= 0.3x size", (smallest.size_ratio or 9) <= 0.3,
                          f"{smallest.backend}: {smallest.size_ratio:.2f}x"))
    return out


def _prune_budget(rep: Report) -> bool:
    v = next((v for v in rep.variants if v.backend == "pruned" and v.measurement is not None), None)
    if v is None:
        return budget("pruning 50% <= 0.55x latency, accuracy within 1 point", False, "pruning failed")
    r = 1 / v.speedup[0]
    return budget("pruning 50% <= 0.55x latency at batch 1, accuracy within 1 point",
                  r <= 0.55 and (v.quality_drop or 0) <= 1.0,
                  f"{r:.2f}x at batch 1, {1 / v.speedup[-1]:.2f}x at batch {v.measurement.latency[-1].batch}, "
                  f"accuracy {-(v.quality_drop or 0):+.2f} points")


if __name__ == "__main__":
    raise SystemExit(main())
