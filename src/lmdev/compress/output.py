"""Writing a variant to OUT (safetensors or ONNX plus ``manifest.json``) and loading it back.

The folder is written beside OUT under a temporary name and renamed into place only when every
file is written and hashed: OUT is either the whole variant or untouched."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdev.compress.source import ModelSpec
from lmdev.errors import LmdevError
from lmdev.fsutil import fsync_path, sha256_file

FORMAT = "lmdev-compress/1"
HOW_TO_LOAD = {
    "torch": "lmdev.compress.load(OUT) -> torch.nn.Module",
    "torch.ao-int8": "lmdev.compress.load(OUT) -> torch.nn.Module (torch.ao dynamic int8)",
    "torchao-int8": "lmdev.compress.load(OUT) -> torch.nn.Module (needs torchao)",
    "torch-fp8": "lmdev.compress.load(OUT) -> torch.nn.Module (float8_e4m3fn weights, torch._scaled_mm)",
    "sparse-2:4": "lmdev.compress.load(OUT) -> torch.nn.Module (dense on CPU; "
                  "lmdev.compress.sparse24.use_sparse_kernels(model) after .cuda().half())",
    "onnx": "onnxruntime.InferenceSession('OUT/model.onnx'), or lmdev.compress.load(OUT)",
}


@dataclass
class Loaded:
    """A variant read back: ``model`` is a torch module, or an OnnxModel for ONNX variants (both
    take a torch tensor and return the outputs)."""

    model: Any
    manifest: dict[str, Any]


def write_variant(variant: Any, out: Path, source: Any, extra: dict[str, Any] | None = None) -> Path:
    """Write ``variant`` (lmdev.compress.variant.Variant) to ``out`` atomically; returns out."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / "manifest.json").exists())):
        raise LmdevError(f"{out} exists and is not an lmdev compress output", "choose another -o folder")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        load = variant.write(tmp)
        manifest = build_manifest(variant, load, source, tmp, extra or {})
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        for f in tmp.iterdir():
            fsync_path(f)
        old = None
        if out.exists():  # an earlier variant: moved aside, removed once the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, old / "variant")
        os.replace(tmp, out)
        fsync_path(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def build_manifest(variant: Any, load: dict[str, Any], source: Any, folder: Path,
                   extra: dict[str, Any]) -> dict[str, Any]:
    files = {f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
             for f in sorted(folder.iterdir()) if f.is_file()}
    cfg = source.train_config
    if cfg is not None and variant.spec.kind == "lmdev":
        cfg = cfg.model_copy(update={"model": type(cfg.model).model_validate(variant.spec.config)})
    return {
        "format": FORMAT,
        "name": variant.name,
        "method": {"method": variant.method, "backend": variant.backend, **variant.settings,
                   "dtype": load.get("dtype")},
        "load": load,
        "how_to_load": HOW_TO_LOAD.get(load["format"], ""),
        "model": variant.spec.to_dict(),
        "train_config": cfg.model_dump(mode="json") if cfg is not None else None,
        "source": {"ref": source.ref, "kind": source.kind, "run_id": source.run_id,
                   "path": str(source.path) if source.path else None},
        "files": files,
        **extra,
    }




def read_manifest(out: Path) -> dict[str, Any]:
    out = Path(out)
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmdevError(f"{out} is not an lmdev compress output (no manifest.json)",
                         "give the folder written by lmdev compress -o OUT") from None
    except (OSError, ValueError) as exc:
        raise LmdevError(f"{out}/manifest.json is unreadable: {exc}") from None
    if not str(manifest.get("format", "")).startswith("lmdev-compress"):
        raise LmdevError(f"{out} is not an lmdev compress output", "give the folder written by lmdev compress -o OUT")
    for name, entry in manifest.get("files", {}).items():
        f = out / name
        if not f.is_file() or f.stat().st_size != entry["bytes"] or sha256_file(f) != entry["sha256"]:
            raise LmdevError(f"{out}/{name} does not match the manifest (missing or changed)",
                             "write the variant again with lmdev compress")
    return manifest


def load_variant(out: str | Path) -> Loaded:
    from lmdev.compress import formats

    out = Path(out)
    manifest = read_manifest(out)
    model = formats.read_any(out, ModelSpec.from_dict(manifest["model"]), manifest["load"])
    return Loaded(model, manifest)


def load(out: str | Path) -> Any:
    """The variant in ``out`` as a runnable model: a torch.nn.Module, or for ONNX variants an
    object calling ONNX Runtime (``model(x)`` takes and returns torch tensors)."""
    return load_variant(out).model
