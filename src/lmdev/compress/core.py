"""``lmdev compress``: resolve the source, make the candidate variants, measure each beside the
baseline, judge, choose, write the chosen one and record it as a run linked to its source."""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmdev.compress import measure as ms
from lmdev.compress.report import Report, VariantReport, choose, judge, mark_pareto, summary_notes
from lmdev.compress.source import Source, resolve
from lmdev.compress.variant import TorchRunner, Variant, module_bytes
from lmdev.errors import LmdevError

METHODS = ["auto", "quantize", "prune", "distill"]
TARGETS = ["latency", "size", "memory"]


@dataclass
class Options:
    method: str = "auto"
    target: str = "latency"
    max_drop: float = 1.0  # accuracy points, or percent of perplexity / loss
    backend: str | None = None
    out: Path | None = None
    batch: int | None = None  # the large latency batch (default 256 examples, 8 sequences)
    budget_s: float = 1.0  # timing budget per variant and batch
    threads: int | None = None
    ratio: float = 0.5  # prune: the fraction of channels removed
    prune: str = "both"  # prune: "mlp" channels, attention "heads" (hf: GPT-2), "both", whole "layers", or "2:4"
    steps: int | None = None  # prune / distill: fine-tune or training steps
    layout: str | None = None  # prune: "uniform" share of every block, "global" (ranked across blocks); None: by model
    data: str | None = None  # evaluation data for hf: sources (a data type, e.g. text:PATH)
    home: str | None = None
    record: bool = True
    memory: bool = True  # measure each variant's peak memory in a fresh process (a few seconds each)


Progress = Callable[[str], None]


def compress(ref: str, opts: Options, progress: Progress | None = None) -> Report:
    say = progress or (lambda _m: None)
    if opts.method not in METHODS:
        raise LmdevError(f"unknown method {opts.method!r}", f"valid: {', '.join(METHODS)}")
    if opts.target not in TARGETS:
        raise LmdevError(f"unknown target {opts.target!r}", f"valid: {', '.join(TARGETS)}")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    say(f"loading {ref}")
    return compress_source(resolve(ref, home=opts.home, data=opts.data), opts, say)


def compress_source(source: Source, opts: Options, say: Progress) -> Report:
    ev = ms.make_eval_set(source, opts.batch)
    with tempfile.TemporaryDirectory(prefix="lmdev-compress-") as tmp:
        work = Path(tmp)
        makers = _makers(source, opts, ev, work)
        base_variant = baseline_variant(source)
        say("measuring the fp32 baseline")
        base_m, base_out = measure_variant(base_variant, ev, work, None, opts)
        reports, made = [], {}
        for backend, make in makers:
            say(f"making and measuring {backend}")
            rep, variant = _try_variant(backend, make, ev, work, base_out, opts, base_variant)
            reports.append(rep)
            if variant is not None:
                made[backend] = variant
        report = assemble(source, opts, base_variant, base_m, reports)
        if opts.method == "auto" and opts.backend is None and not _wants_2of4(opts):
            report.notes.append("2:4 sparsity is not among auto's candidates (it needs a fine-tune, and only a GPU's "
                                "sparse tensor cores make it faster): --method prune --prune 2:4 makes and measures it")
        chosen = choose(report.variants, opts.target, opts.backend)
        report.chosen = chosen.backend if chosen else None
        if chosen and opts.out is not None:
            _write_and_record(report, made[chosen.backend], source, opts)
    return report


def _makers(source: Source, opts: Options, ev: ms.EvalSet, work: Path) -> list[tuple[str, Callable[[], Any]]]:
    from lmdev.compress import quantize

    example = ev.latency_inputs[0]
    out: list[tuple[str, Callable[[], Any]]] = []
    if opts.method in ("quantize", "auto"):
        quantize.check_quantizable(source.model, source.method)
        forced = opts.backend if opts.backend in quantize.BACKENDS or opts.method == "quantize" else None
        out += quantize.candidates(source.spec, source.model, example, work, forced)
    if opts.method in ("prune", "auto") and _wants_2of4(opts):  # semi-structured: lmdev.compress.sparse24
        from lmdev.compress import sparse24

        if opts.layout == "global":
            raise LmdevError("--prune-layout global ranks heads and channels across blocks; 2:4 sparsity zeroes "
                             "weights inside them", "leave out --prune-layout")
        sparse24.check(source)
        out.append((sparse24.BACKEND, lambda: sparse24.sparse24_variant(source, opts.steps)))
    elif opts.method in ("prune", "auto"):
        from lmdev.compress import prune

        if opts.method == "prune" or prune.applies(source):
            prune.check(source, opts.ratio, opts.prune, opts.layout)
            out += prune.candidates(source, opts.ratio, opts.steps, opts.prune,
                                    opts.method == "auto" or opts.backend == prune.PRUNED_INT8, opts.layout)
    if opts.method == "distill":
        from lmdev.compress import distill

        distill.check(source)
        out.append(("distilled", lambda: distill.distill_variant(source, opts.steps)))
    if opts.backend and opts.backend not in [b for b, _ in out]:
        raise LmdevError(f"backend {opts.backend!r} does not apply to method {opts.method}",
                         f"valid here: {', '.join(b for b, _ in out)}")
    if opts.backend and opts.method == "auto":
        out = [(b, m) for b, m in out if b == opts.backend]
    return out


def _wants_2of4(opts: Options) -> bool:
    """--prune 2:4 or --backend sparse-2:4: 2:4 sparsity instead of structured pruning."""
    return opts.prune == "2:4" or opts.backend == "sparse-2:4"


def baseline_variant(source: Source) -> Variant:
    from lmdev.compress import formats

    m = source.model
    return Variant("fp32 (baseline)", "baseline", "torch-fp32", TorchRunner(m), lambda f: formats.write_torch(m, f),
                   source.spec, {"dtype": "fp32"}, m, module_bytes(m))


def measure_variant(v: Variant, ev: ms.EvalSet, work: Path, base_out: list[torch.Tensor] | None,
             opts: Options, base: Variant | None = None) -> tuple[ms.Measurement, list[torch.Tensor]]:
    folder = work / f"size-{v.backend}"
    n = 1
    while folder.exists():
        n += 1
        folder = work / f"size-{v.backend}-{n}"
    folder.mkdir()
    load = v.write(folder)
    size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
    m, outs = ms.measure(v.runner, ev, size, v.memory_bytes, base_out, opts.budget_s,
                         base.runner if base is not None else None)
    if opts.memory:
        _measure_peak(m, v, folder, load, ev, work)
    return m, outs


def _measure_peak(m: ms.Measurement, v: Variant, folder: Path, load: dict[str, Any], ev: ms.EvalSet,
                  work: Path) -> None:
    """The variant's peak memory, loaded from what it wrote, in a fresh process."""
    from safetensors.torch import save_file

    from lmdev.compress.memprobe import peak_memory

    inputs = work / "memprobe-inputs.safetensors"
    if not inputs.exists():
        save_file({"x": ev.latency_inputs[-1].contiguous()}, str(inputs))
    peak, why = peak_memory(folder, v.spec.to_dict(), load, inputs, torch.get_num_threads())
    if peak is None:
        v.notes.append(str(why))
        return
    m.peak_memory_bytes, m.load_peak_bytes, m.run_peak_bytes = peak.peak_bytes, peak.load_peak_bytes, \
        peak.run_peak_bytes


def _try_variant(backend: str, make: Callable[[], Any], ev: ms.EvalSet, work: Path, base_out: list[torch.Tensor],
                 opts: Options, base: Variant) -> tuple[VariantReport, Variant | None]:
    from lmdev.compress.quantize import BackendFailed

    try:
        variant: Variant = make()
        m, _ = measure_variant(variant, ev, work, base_out, opts, base)
    except BackendFailed as exc:
        return VariantReport(backend, "quantize", backend, error=str(exc)), None
    except LmdevError:
        raise
    except Exception as exc:  # a backend failing is reported, and the others go on
        return VariantReport(backend, "quantize", backend, error=f"{type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"), None
    return VariantReport(variant.name, variant.method, variant.backend, variant.settings, m,
                         notes=list(variant.notes)), variant


def assemble(source: Source, opts: Options, base_variant: Variant, base_m: ms.Measurement,
              reports: list[VariantReport]) -> Report:
    from lmdev.train.models import count_parameters

    base = VariantReport(base_variant.name, "baseline", "torch-fp32", {"dtype": "fp32"}, base_m,
                         speedup=[1.0] * len(base_m.latency), size_ratio=1.0, memory_ratio=1.0,
                         peak_memory_ratio=1.0 if base_m.peak_memory_bytes else None, quality_drop=0.0,
                         verdict="baseline")
    for r in reports:
        judge(r, base_m, opts.max_drop)
        if r.method == "distill" and r.settings.get("gain") is False:
            r.notes.append("the distilled student does not beat its plainly trained twin")
    mark_pareto([base, *reports], opts.target)
    n_params = count_parameters(source.model)
    report = Report(
        source={"ref": source.ref, "kind": source.kind, "run_id": source.run_id,
                "path": str(source.path) if source.path else None, "parameters": n_params,
                "task": source.task, "eval_examples": base_m.quality.examples if base_m.quality else 0},
        machine=machine_info(), method=opts.method, target=opts.target, max_drop=opts.max_drop,
        baseline=base, variants=reports)
    distilled = next((r for r in reports if r.method == "distill"), None)
    if distilled is not None:
        report.distill = distilled.settings.get("search_report")
    summary_notes(report, n_params)
    return report


def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    info: dict[str, Any] = {"cpu": _cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                            "python": platform.python_version()}
    for pkg in ("onnxruntime", "torchao"):
        try:
            info[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            info[pkg] = None
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_and_record(report: Report, variant: Variant, source: Source, opts: Options) -> None:
    """Write the chosen variant to OUT; with ``record``, as a run that is a child of the source's
    run, holding the settings, the measurements and the written files as artifacts."""
    from lmdev.compress.output import write_variant

    index = next(i for i, v in enumerate(report.variants) if v.backend == variant.backend)
    data = report.to_dict()
    extra: dict[str, Any] = {"measured": {"variant": data["variants"][index], "baseline": data["baseline"],
                                          "machine": report.machine}}
    run = start_run(report, variant, source, opts) if opts.record else None
    if run is not None:
        extra["run_id"] = run.id
    try:
        out = write_variant(variant, opts.out, source, extra)  # type: ignore[arg-type]
    except BaseException:
        if run is not None:
            run.finish("failed")
        raise
    report.out = str(out)
    if run is not None:
        for f in sorted(out.iterdir()):
            if f.is_file():
                run.log_artifact(f, kind="compressed-model")
        report.run_id = run.id
        run.finish("finished")


def start_run(report: Report, variant: Variant, source: Source, opts: Options) -> Any:
    import lmdev.track as track

    chosen = next(v for v in report.variants if v.backend == variant.backend)
    run = track.init(name=f"compress-{variant.backend}", config={
        "compress": {"method": variant.method, "backend": variant.backend, **variant.settings},
        "source": report.source, "target": opts.target, "max_drop": opts.max_drop},
        parent=source.run_id, tags=["lmdev-compress", variant.method], home=opts.home, telemetry=False)
    m = chosen.measurement
    metrics: dict[str, float] = {}
    if m is not None:
        metrics["compress/file_bytes"] = float(m.file_bytes)
        metrics["compress/size_ratio"] = float(chosen.size_ratio or 0)
        for lt, s in zip(m.latency, chosen.speedup):
            metrics[f"compress/latency_b{lt.batch}_p50_ms"] = lt.p50_ms
            metrics[f"compress/speedup_b{lt.batch}"] = s
        if m.quality and m.quality.value is not None:
            metrics[f"compress/{m.quality.metric}"] = m.quality.value
    run.log(metrics, step=0)
    return run
