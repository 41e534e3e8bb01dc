"""``lmdev plan MODEL``: will it fit, how long will it take, what should I buy."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

HELP = "memory, time and hardware for a model: will it fit, how long, what to buy"


def _int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _count(text: str) -> float:
    """1000000, 1e9, 20B, 500M, 2T."""
    t = text.strip().upper().replace("_", "").replace(",", "")
    mult = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}.get(t[-1:], 1.0)
    if t[-1:] in "KMBGT":
        t = t[:-1]
    try:
        value = float(t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a token count: {text!r} (e.g. 1e9, 20B)") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < v <= 1:  # NaN fails the comparison too
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return v


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "plan", help=HELP,
        description="Memory per device (weights, gradients, optimizer states, activations, logits, KV cache, "
        "framework overhead), whether it fits, the largest batch and sequence that fit, tokens/s and time, "
        "ranked recommendations, and with several --hardware names what to buy. MODEL: a preset "
        "(`lmdev plan --list-models`), a Hugging Face id of one, a config.json, a folder holding one, or an "
        "lmdev training config. Exit code 0: planned (fits or not); 2: bad input. Docs: docs/commands/plan.md.")
    p.add_argument("model", nargs="?", metavar="MODEL", help="preset, HF id, config.json, folder or lmdev config")
    p.add_argument("--task", choices=["infer", "serve", "train", "lora", "qlora"], default="train",
                   help="infer: a prefill (and generation with --new-tokens); serve: KV-cache capacity for "
                   "--concurrency sequences of --context tokens")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16", "fp8", "int8", "int4"], default=None,
                   help="train: fp32 or bf16/fp16 mixed precision; infer/serve: weight precision (default bf16, "
                   "fp16 where the hardware has no bf16, fp32 on a CPU without native bf16)")
    p.add_argument("--optimizer", choices=["adamw", "adam", "sgd", "adamw8bit"], default="adamw")
    p.add_argument("--batch", type=_int_arg, default=1, metavar="B", help="micro-batch per device (default 1)")
    p.add_argument("--seq", type=_int_arg, default=None, metavar="T",
                   help="sequence length; infer/serve: the prompt (default: min(model maximum, 2048))")
    p.add_argument("--new-tokens", type=_int_arg, default=0, metavar="N",
                   help="infer: tokens generated after the prompt, one at a time from the KV cache (default 0: "
                   "prefill only)")
    p.add_argument("--logits", choices=["all", "last"], default="all",
                   help="infer prefill: logits of every position (a plain forward call) or only the last "
                   "(logits_to_keep=1, what generate() asks for); default all")
    p.add_argument("--concurrency", type=_int_arg, default=1, metavar="C", help="serve: sequences decoded together")
    p.add_argument("--context", type=_int_arg, default=None, metavar="L",
                   help="serve: tokens per sequence, prompt + generated (default: --seq + 512)")
    p.add_argument("--grad-accum", type=_int_arg, default=1, metavar="K")
    p.add_argument("--activation-checkpointing", action="store_true")
    p.add_argument("--attention", choices=["eager", "sdpa", "flash"], default="sdpa")
    p.add_argument("--devices", type=_int_arg, default=1, metavar="N")
    p.add_argument("--strategy", choices=["ddp", "fsdp", "zero2", "zero3"], default="ddp")
    p.add_argument("--offload", choices=["optimizer", "params"], default=None)
    p.add_argument("--lora-rank", type=_int_arg, default=16, metavar="R")
    p.add_argument("--hardware", default="this", metavar="NAME[,NAME...]|this|all",
                   help="catalog GPUs (`--list-hardware`), `this` (default) or `all`")
    p.add_argument("--tokens", type=_count, default=None, metavar="N",
                   help="token budget to time (e.g. 20B); default 1B for training")
    p.add_argument("--mfu", type=_fraction, default=None,
                   help="model FLOPs utilisation to assume (default 0.4 of the peak, 0.6 of a bench-measured matmul)")
    p.add_argument("--measure", action="store_true",
                   help="also run a few real steps on this machine and compare (needs torch and transformers)")
    p.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/plan.md)")
    p.add_argument("--list-models", action="store_true", help="list the model presets and exit")
    p.add_argument("--list-hardware", action="store_true", help="list the hardware catalog and exit")
    return p


def run(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError

    if args.list_models:
        return _list_models(args.json)
    if args.list_hardware:
        return _list_hardware(args.json)
    if not args.model:
        raise LmdevError("no MODEL given", "e.g. `lmdev plan llama-3-8b`; `lmdev plan --list-models` lists presets")

    from lmdev.plan.advisor import default_precision, make_plan
    from lmdev.plan.hardware import resolve_hardware
    from lmdev.plan.measure import load_calibration, machine_key
    from lmdev.plan.memory import Workload
    from lmdev.plan.model_input import resolve_model

    spec, source = resolve_model(args.model)
    hws = resolve_hardware(args.hardware)
    precision = args.precision or default_precision(hws[0])
    seq = args.seq if args.seq is not None else min(spec.max_positions or 2048, 2048)
    context = args.context if args.context is not None else (seq + 512 if args.task == "serve" else None)
    w = Workload(task=args.task, precision=precision, optimizer=args.optimizer, batch=args.batch, seq=seq,
                 grad_accum=args.grad_accum, activation_checkpointing=args.activation_checkpointing,
                 attention=args.attention, devices=args.devices, strategy=args.strategy, offload=args.offload,
                 lora_rank=args.lora_rank, new_tokens=args.new_tokens, logits=args.logits,
                 concurrency=args.concurrency, context=context)
    w.validate()
    calibration_key = machine_key(hws[0]) if hws[0].this_machine else None
    calibration = load_calibration(calibration_key) if calibration_key else {}
    budget = args.tokens if args.tokens is not None else (1e9 if w.training else None)
    plan = make_plan(spec, w, hws, source=source, mfu=args.mfu, token_budget=budget, calibration=calibration)
    if calibration:
        plan.calibration = {"key": calibration_key, "samples": int(calibration.get("samples", 0)),
                            "terms": {k: v for k, v in calibration.items() if k != "samples"}}
    for msg in plan.warnings:
        print(f"lmdev: warning: {msg}", file=sys.stderr)
    if args.measure:
        plan.measurement = _measure(spec, w, hws[0], calibration_key, calibration, quiet=args.json)
    launch = _launch(args.model, source, w)
    if args.json:
        doc = plan.to_dict()
        if launch:
            doc["launch"] = launch
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(plan)
        if launch:
            _render_launch(launch)
    return 0


def _launch(model: str, source: str, w: Any) -> dict[str, Any] | None:
    """For an lmdev training config on several devices: the per-rank batch and the exact
    commands (``lmdev train --nproc`` and the torchrun line a scheduler can run)."""
    if w.devices <= 1 or not w.training or not source.startswith("lmdev training config"):
        return None
    from lmdev.train.config import read_config_file
    from lmdev.train.launch import launch_plan

    raw = read_config_file(model)
    data: dict[str, Any] = raw["data"] if isinstance(raw.get("data"), dict) else {}
    train: dict[str, Any] = raw["train"] if isinstance(raw.get("train"), dict) else {}
    return launch_plan(model, int(data.get("batch_size", 64)), int(train.get("grad_accum", 1)), w.devices)


def _render_launch(launch: dict[str, Any]) -> None:
    import shlex

    per_rank = launch["per_rank_batch"]
    print(f"\nrun it on {launch['workers']} workers: global batch split into "
          + (f"{per_rank} per rank" if per_rank else "uneven shares (choose a batch divisible by the workers)"))
    print("  " + shlex.join(launch["lmdev"]))
    print("  " + shlex.join(launch["torchrun"]))


def _measure(spec: Any, w: Any, hw: Any, key: str | None, calibration: dict[str, float],
             quiet: bool) -> dict[str, Any]:
    from lmdev.errors import LmdevError
    from lmdev.plan.advisor import plan_step_time
    from lmdev.plan.measure import learn, measure

    if not hw.this_machine:
        raise LmdevError("--measure runs on this machine", "drop --hardware, or use --hardware this")
    if w.task not in ("train", "infer") or w.precision in ("int8", "int4", "fp8") or w.devices > 1:
        raise LmdevError(f"--measure supports full training and inference on one device, not "
                         f"{w.task}/{w.precision}/{w.devices} devices", "measure the train or infer task")
    if spec.family == "lmdev-gpt" and w.task == "infer":
        raise LmdevError("--measure of lmdev's gpt supports --task train (the model has no KV cache yet)",
                         "measure the train task")
    device = "cuda:0" if hw.kind == "gpu" else "cpu"
    if not quiet:
        print("Measuring: building the model from its config and running real steps in a clean process...",
              file=sys.stderr)
    m = measure(spec, w, device=device, overhead=calibration or None, budget_bytes=int(hw.available_bytes * 0.8))
    from lmdev.plan.memory import estimate_memory

    uncalibrated = estimate_memory(spec, w, device=hw.kind)
    t = plan_step_time(spec, w, hw, None, None)
    m.predicted_seconds = t.decode_seconds_per_token if w.generating else t.step_seconds
    calibrated_t = plan_step_time(spec, w, hw, None, calibration or None)
    learned = learn(key or "cpu", m, uncalibrated, m.predicted_seconds)
    out = m.to_dict()
    out["what"] = "seconds per generated token" if w.generating else ("seconds per training step" if w.training
                                                                       else "seconds per prefill")
    out["calibrated_predicted_seconds"] = calibrated_t.decode_seconds_per_token if w.generating \
        else calibrated_t.step_seconds
    out["learned"] = learned
    out["learned_overhead"] = learned  # the key of lmdev.plan/1 before time was learned too
    out["calibration_key"] = key
    return out


def _list_models(as_json: bool) -> int:
    from lmdev.catalog.models import param_count, presets

    rows = [{"name": p.name, "hf_repo": p.hf_repo, "params": param_count(p.spec), "source": p.source}
            for p in presets().values()]
    if as_json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Model presets")
    for col in ("name", "Hugging Face id", "parameters"):
        t.add_column(col, justify="right" if col == "parameters" else "left")
    for r in rows:
        t.add_row(str(r["name"]), str(r["hf_repo"]), f"{r['params']:,}")
    Console().print(t)
    return 0


def _list_hardware(as_json: bool) -> int:
    from lmdev.catalog.gpus import gpus

    if as_json:
        json.dump([{"name": g.name, "label": g.label, "memory_bytes": g.memory_bytes,
                    "bandwidth_bytes_s": g.bandwidth_bytes_s, "peak_flops": g.peak_flops,
                    "interconnect": g.interconnect, "power_w": g.power_w, "price_usd": g.price_usd,
                    "source": g.source} for g in gpus().values()], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Hardware catalog (dense peaks)")
    for col in ("name", "memory", "bandwidth", "bf16", "fp32", "fp8", "interconnect", "power", "price"):
        t.add_column(col, justify="left" if col in ("name", "interconnect") else "right")

    def tf(v: float | None) -> str:
        return f"{v / 1e12:.0f} TF" if v else "-"

    for g in gpus().values():
        t.add_row(g.name, f"{g.memory_bytes / 1e9:.0f} GB", f"{g.bandwidth_bytes_s / 1e9:.0f} GB/s",
                  tf(g.peak("bf16")), tf(g.peak("fp32")), tf(g.peak("fp8")), g.interconnect, f"{g.power_w:.0f} W",
                  f"${g.price_usd:,.0f}")
    Console().print(t)
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def render(plan: Any) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lmdev.catalog.models import param_count
    from lmdev.plan.memory import human

    c = Console(highlight=False)
    w, m, hw = plan.workload, plan.memory, plan.hardware
    c.print(f"[bold]{escape(plan.model.name)}[/bold]  {param_count(plan.model):,} parameters  ({escape(plan.model_source)})")
    shape = f"{w.task}, {w.precision}, batch {w.batch} x seq {w.seq}"
    if w.task == "infer":
        shape += (f", then {w.new_tokens} generated tokens (prefill keeps the last position's logits)"
                  if w.new_tokens
                  else f", prefill only, logits of {'every position' if w.logits == 'all' else 'the last position'}")
    if w.task == "serve":
        shape = f"serve, {w.precision}, {w.concurrency} concurrent sequences of {w.cache_tokens} tokens (prompt {w.seq})"
    if w.training:
        shape += f", {w.optimizer}" + (", activation checkpointing" if w.activation_checkpointing else "")
        shape += f", grad-accum {w.grad_accum}" if w.grad_accum > 1 else ""
    if w.devices > 1:
        shape += f", {w.devices} devices ({w.strategy})"
    if w.offload:
        shape += f", offload {w.offload}"
    c.print(f"{shape}, attention {w.attention}")
    c.print(f"on {escape(hw.label)}: {human(hw.memory_bytes)} per device"
            + (f", {human(hw.used_bytes)} in use" if hw.used_bytes else ""))
    t = Table(title="Memory per device", show_header=True)
    t.add_column("part")
    t.add_column("bytes", justify="right")
    t.add_column("share", justify="right")
    total = m.total_bytes or 1
    labels = {"allocator": "allocator (glibc heap kept)" if hw.kind == "cpu" else "allocator (caching reserve)",
              "overhead": "runtime" if hw.kind == "cpu" else "CUDA context + workspaces",
              "optimizer_step": "optimizer step temporaries", "grad_buckets": "DDP gradient buckets",
              "attention_scores": "attention scores (not fused)",
              "tied_grad_sum": "tied embedding: 2nd gradient + sum"}
    for part in m.PARTS:
        v = getattr(m, f"{part}_bytes")
        if v:
            t.add_row(labels.get(part, part.replace("_", " ")), human(v), f"{v / total:.0%}")
    if m.overlap_bytes:
        t.add_row("not held at once", "-" + human(m.overlap_bytes), "",
                  style="dim")
    t.add_row("[bold]total[/bold]", f"[bold]{human(m.total_bytes)}[/bold]", "")
    c.print(t)
    for note in m.notes:
        c.print(f"  [dim]{escape(note)}[/dim]")
    if m.cpu_offload_bytes:
        c.print(f"  host RAM for offloaded state: {human(m.cpu_offload_bytes)}")
    verdict = "[green]fits[/green]" if plan.fits else "[red]does not fit[/red]"
    c.print(f"\n{verdict}: {human(m.total_bytes)} of {human(hw.available_bytes)} available "
            f"(headroom {human(plan.headroom_bytes)})")
    if plan.calibration:
        cal = plan.calibration
        c.print(f"  [dim]uses the calibration measured on this machine ({escape(str(cal['key']))}, "
                f"{cal['samples']} measurement(s)): {escape(_terms(cal['terms']))}[/dim]")
    c.print(f"largest batch that fits: {plan.max_batch or 'none'};  longest sequence at batch {w.batch}: "
            f"{plan.max_seq or 'none'}")
    comp = plan.compute
    line = f"\ncompute: {comp.flops_per_token / 1e9:.2f} GFLOP per token ({comp.dtype})"
    if comp.tokens_per_s:
        src = {"bench": "measured matmul (lmdev bench)", "catalog": "datasheet peak",
               "cpu-estimate": "CPU peak from cores x clock x ISA"}[comp.throughput_source]
        line += f";  {comp.tokens_per_s:,.0f} tokens/s at {comp.mfu:.0%} MFU of the {src}"
    c.print(line)
    if comp.seconds:
        c.print(f"time for {comp.token_budget:,.0f} tokens: {_duration(comp.seconds)}")
    st = plan.step_time or {}
    if w.training and st.get("step_seconds"):
        c.print(f"step time: ~{st['step_seconds']:.3g} s per optimizer step of {w.batch} x {w.seq} tokens")
    elif st.get("prefill_seconds"):
        c.print(f"prefill: ~{st['prefill_seconds']:.3g} s for {w.batch if w.task == 'infer' else 1} x {w.seq} tokens")
    if st.get("decode_seconds_per_token"):
        seqs = w.concurrency if w.task == "serve" else w.batch
        c.print(f"generation: ~{st['decode_seconds_per_token'] * 1e3:.3g} ms per token step "
                f"(~{seqs / st['decode_seconds_per_token']:,.0f} tokens/s for {seqs} sequence(s); weights and "
                f"KV cache read once per token at the memory bandwidth)")
    if plan.serving:
        sv = plan.serving
        ok = "[green]fits[/green]" if sv["fits"] else "[red]does not fit[/red]"
        c.print(f"serving: KV cache {human(sv['kv_bytes_per_sequence'])} per sequence of {sv['context']} tokens; "
                f"room for {sv['max_sequences']} sequences; {sv['concurrency']} requested: {ok}")
    if plan.recommendations:
        r = Table(title="Recommendations (best first)")
        for col in ("#", "change", "new total", "fits", "trade-off"):
            r.add_column(col, justify="right" if col in ("#", "new total") else "left")
        for i, rec in enumerate(plan.recommendations[:8], 1):
            r.add_row(str(i), escape(rec.description), human(rec.total_bytes),
                      "yes" if rec.fits else "no", escape(rec.tradeoff))
        c.print(r)
    if plan.comparison:
        o = Table(title="What to buy: the fewest GPUs of each kind that fit; fitting, then cheapest, then fastest")
        for col in ("hardware", "GPUs", "precision", "per device", "fits", "tokens/s", "time", "price", "note"):
            o.add_column(col, justify="left" if col in ("hardware", "note", "precision") else "right")
        for opt in plan.comparison:
            o.add_row(opt.hardware, str(opt.count), opt.precision,
                      f"{human(opt.total_bytes_per_device)} / {human(opt.memory_bytes_per_device)}",
                      "yes" if opt.fits else "no",
                      f"{opt.tokens_per_s:,.0f}" if opt.tokens_per_s else "-", _duration(opt.seconds),
                      f"${opt.price_usd:,.0f}" if opt.price_usd else "-", escape(opt.note))
        c.print(o)
        best = plan.recommended_hardware
        if best:
            c.print(f"recommended hardware: {best.count} x {escape(best.hardware)} ({best.precision})")
        else:
            c.print("[red]none of these fits on 8 devices[/red]")
    if plan.excluded:
        c.print("not offered:")
        for e in plan.excluded:
            c.print(f"  [dim]{escape(e.option)}: {escape(e.reason)}[/dim]")
    if plan.measurement:
        mm = plan.measurement
        how = f"extrapolated from {mm['layers_measured']}-layer copies" if mm["extrapolated"] else "full model"
        c.print(f"\n[bold]measured[/bold] on {mm['device']} ({how}), default allocator:")
        c.print(f"  memory: {human(mm['measured_bytes'])} peak, predicted {human(mm['predicted_bytes'])}, "
                f"error {mm['memory_error']:+.1%}")
        te = f", error {mm['time_error']:+.1%}" if mm.get("time_error") is not None else ""
        pred = f"{mm['predicted_seconds']:.3g} s" if mm.get("predicted_seconds") else "-"
        c.print(f"  time: {mm['step_seconds']:.3g} {mm['what']}, predicted {pred}{te}")
        c.print(f"  stored for later plans on this machine ({escape(str(mm.get('calibration_key')))}): "
                f"{escape(_terms(mm['learned']))}")


def _terms(terms: dict[str, Any]) -> str:
    from lmdev.plan.memory import human

    out = []
    for k, v in sorted(terms.items()):
        if not isinstance(v, (int, float)):
            continue
        out.append(f"{k} {human(v)}" if k.endswith("_bytes") else f"{k} {v:.3g}")
    return ", ".join(out)
