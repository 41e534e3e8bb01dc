"""What ``lmdev plan MODEL`` accepts: a preset name (or its Hugging Face id), a ``config.json``,
a folder holding one, or an lmdev training config (YAML/TOML/JSON with a ``model:`` section whose
keys are :class:`~lmdev.catalog.models.ModelSpec` fields)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lmdev.catalog.models import (
    ModelSpec,
    get_preset,
    spec_from_hf_config,
    spec_from_lmdev_gpt,
)
from lmdev.errors import LmdevError

_SPEC_FIELDS = {f.name for f in dataclasses.fields(ModelSpec)}


def _read_structured(path: Path) -> Any:
    from lmdev.config_files import parse

    suffix = path.suffix.lower()
    fmt = "yaml" if suffix in (".yaml", ".yml") else "toml" if suffix == ".toml" else "json"
    return parse(path.read_text("utf-8", errors="replace"), fmt, path)


def spec_from_lmdev_config(model: dict[str, Any], where: str) -> ModelSpec:
    unknown = sorted(set(model) - _SPEC_FIELDS)
    if unknown:
        raise LmdevError(f"{where}: unknown model field {unknown[0]!r}",
                         f"model fields: {', '.join(sorted(_SPEC_FIELDS))}")
    missing = [f for f in ("n_layers", "hidden", "n_heads", "ffn", "vocab") if f not in model]
    if missing:
        raise LmdevError(f"{where}: missing model field {missing[0]!r}", "add it to the model section")
    for key in ("n_layers", "hidden", "n_heads", "ffn", "vocab", "n_kv_heads", "head_dim", "max_positions",
                "n_experts", "experts_per_token"):
        v = model.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise LmdevError(f"{where}: field 'model.{key}' must be a positive integer, got {v!r}", "fix the value")
    return ModelSpec(**{"name": model.get("name") or where, **model})


def _data_vocab(data: Any) -> int | None:
    """The vocabulary the trainer would take from token data: bytes (256; the generated
    ``synthetic`` corpus is byte-level too) or tiktoken's GPT-2 (50257)."""
    if not isinstance(data, dict):
        return None
    kind = str(data.get("type", ""))
    if kind == "synthetic":
        return 256
    if not kind.startswith("text"):
        return None
    return 50257 if data.get("tokenizer") == "tiktoken" else 256


def _is(path: Path, kind: str) -> bool:
    """``Path.is_dir``/``is_file`` that answer False for names the OS refuses (too long, NUL)."""
    try:
        return path.is_dir() if kind == "dir" else path.is_file()
    except (OSError, ValueError):
        return False


def resolve_model(text: str) -> tuple[ModelSpec, str]:
    """The model to plan for and a description of where it came from."""
    path = Path(text).expanduser()
    if _is(path, "dir"):
        cfg = path / "config.json"
        if not cfg.is_file():
            raise LmdevError(f"{path} holds no config.json", "point at a Hugging Face model folder or a config.json")
        from lmdev.secure import require_safe

        require_safe(path, what="plan from the model folder")
        path = cfg
    if _is(path, "file"):
        data = _read_structured(path)
        if isinstance(data, dict) and isinstance(data.get("model"), dict) and "model_type" not in data:
            model = data["model"]
            if model.get("type") == "gpt":
                return spec_from_lmdev_gpt(model, vocab=_data_vocab(data.get("data")), where=str(path)), \
                    f"lmdev training config {path}"
            if "type" in model:
                raise LmdevError(f"{path}: model type {model['type']!r} is not a transformer the planner knows",
                                 "plan a gpt model, a preset or a Hugging Face config.json")
            return spec_from_lmdev_config(model, str(path)), f"lmdev config {path}"
        name = data.get("_name_or_path") if isinstance(data, dict) else None
        spec = spec_from_hf_config(data, name=name or path.parent.name or path.stem, where=str(path))
        return spec, f"config {path}"
    if text.lower().endswith((".json", ".yaml", ".yml", ".toml")):
        raise LmdevError(f"{text}: no such file", "check the path")
    preset = get_preset(text)
    return preset.spec, f"preset {preset.name} ({preset.hf_repo})"
