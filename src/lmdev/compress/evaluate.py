"""``lmdev compress eval OUT``: re-measure a written variant on this machine, beside its source
when the source can still be found."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from lmdev.compress import measure as ms
from lmdev.compress.core import Options, assemble, baseline_variant, measure_variant
from lmdev.compress.output import load_variant
from lmdev.compress.report import Report, VariantReport
from lmdev.compress.source import ModelSpec, Source, resolve
from lmdev.compress.variant import TorchRunner, Variant, module_bytes
from lmdev.errors import LmdevError


def evaluate_output(out: Path, *, threads: int | None = None, budget_s: float = 1.0, batch: int | None = None,
                    home: str | None = None, data: str | None = None, memory: bool = True) -> Report:
    if threads:
        torch.set_num_threads(threads)
    loaded = load_variant(out)
    manifest = loaded.manifest
    source = _source_of(manifest, out, home, data)
    variant = _as_variant(loaded.model, manifest, out)
    opts = Options(method="eval", budget_s=budget_s, batch=batch, home=home, data=data, record=False,
                   memory=memory)
    ev = ms.make_eval_set(source, batch)
    with tempfile.TemporaryDirectory(prefix="lmdev-compress-eval-") as tmp:
        work = Path(tmp)
        base = baseline_variant(source)
        base_m, base_out = measure_variant(base, ev, work, None, opts)
        m, _ = measure_variant(variant, ev, work, base_out, opts, base)
    rep = VariantReport(variant.name, variant.method, variant.backend, variant.settings, m)
    report = assemble(source, opts, base, base_m, [rep])
    report.chosen, report.out = variant.backend, str(out)
    if source.kind == "variant":
        report.notes.append(f"the source {manifest['source']['ref']} was not found: the baseline is the variant "
                            "itself, so the ratios say nothing")
    return report


def _source_of(manifest: dict[str, Any], out: Path, home: str | None, data: str | None) -> Source:
    """The variant's source (the baseline); when it is gone, the variant itself stands in."""
    ref = manifest["source"]["ref"]
    try:
        return resolve(ref, home=home, data=data)
    except LmdevError:
        pass
    if manifest["load"]["format"] == "onnx" or not manifest.get("train_config"):
        raise LmdevError(f"the variant's source {ref!r} is not found here, so there is no baseline to compare with",
                         "run lmdev compress eval from the folder the source was compressed in (or set LMDEV_HOME)")
    return resolve(str(out), home=home, data=data)


def _as_variant(model: Any, manifest: dict[str, Any], out: Path) -> Variant:
    method = manifest.get("method", {})
    runner = TorchRunner(model) if isinstance(model, torch.nn.Module) else model
    memory = module_bytes(model) if isinstance(model, torch.nn.Module) else sum(
        f["bytes"] for f in manifest["files"].values())

    def copy(folder: Path) -> dict[str, Any]:
        for name in manifest["files"]:
            shutil.copyfile(out / name, folder / name)
        return manifest["load"]

    settings = {k: v for k, v in method.items() if k not in ("method", "backend")}
    return Variant(manifest.get("name", out.name), method.get("method", "quantize"), method.get("backend", "?"),
                   runner, copy, ModelSpec.from_dict(manifest["model"]), settings, None, memory)
