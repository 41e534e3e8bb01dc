"""What ``lmdev compress`` starts from: SOURCE resolved to a runnable fp32 model, the recipe to
build its architecture again, and its evaluation data.

SOURCE is one of
- ``RUN[@STEP]``: a run of the store (id, id prefix or name); its newest valid checkpoint, or the
  one of step STEP; the model and the data come from the run's config;
- a checkpoint folder (``.../checkpoints/step-NNNNNNNN``), which carries its config;
- a folder written by ``lmdev compress -o OUT`` (so a pruned model can be quantised);
- ``hf:PATH``: a local transformers causal-LM folder with safetensors weights (pickled weights
  are refused; give ``--data`` for a task metric).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from lmdev.errors import LmdevError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from lmdev.train.models import HFCausalLM

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


@dataclass
class ModelSpec:
    """How to build a model's architecture again (weights are loaded separately).

    ``kind`` "lmdev": ``config`` is a train config's ``model`` section and ``shape`` the data
    shape (lmdev.train.models.DataShape as a dict); "hf": ``config`` is a transformers
    config.json."""

    kind: str
    config: dict[str, Any]
    shape: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        if self.kind == "hf":
            return build_hf_from_config(self.config)
        from pydantic import TypeAdapter

        from lmdev.train.config import ModelConfig
        from lmdev.train.models import DataShape, build_model

        cfg = TypeAdapter(ModelConfig).validate_python(self.config)
        shape = DataShape(self.shape["kind"], tuple(self.shape["input_shape"]), int(self.shape["n_outputs"]),
                          self.shape["task"])
        return build_model(cfg, shape)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config, "shape": self.shape}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> ModelSpec:
        return ModelSpec(d["kind"], d["config"], d.get("shape", {}))


@dataclass
class Source:
    """A resolved SOURCE: the fp32 model in eval mode, how to rebuild it, and its data."""

    ref: str
    kind: str  # "run" | "checkpoint" | "variant" | "hf"
    model: nn.Module
    spec: ModelSpec
    data: Any = None  # lmdev.train.data.Data, or None when there is no evaluation data
    train_config: Any = None  # lmdev.train.config.TrainConfig when the source has one
    run_id: str | None = None
    path: Path | None = None
    weights_bytes: int = 0  # size on disk of the source's weights
    method: dict[str, Any] | None = None  # a compress output: the manifest's method entry

    @property
    def task(self) -> str:
        return str(self.spec.shape.get("task") or "language_modeling")

    @property
    def is_tokens(self) -> bool:
        return self.spec.kind == "hf" or self.spec.shape.get("kind") == "tokens"


def build_hf_from_config(config: dict[str, Any]) -> nn.Module:
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        raise LmdevError("hf: models need the transformers package", "pip install transformers") from None
    from lmdev.train.models import HFCausalLM

    cfg = dict(config)
    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise LmdevError("the transformers config.json has no model_type")
    heads = cfg.pop("lmdev_heads_per_layer", None)  # a GPT-2 whose heads lmdev pruned (compress.prune_gpt2)
    channels = cfg.pop("lmdev_channels_per_layer", None)  # ... and its MLP channels, per block
    hf_cfg = AutoConfig.for_model(model_type, **{k: v for k, v in cfg.items()
                                                 if k not in ("transformers_version", "architectures")})
    model = HFCausalLM(AutoModelForCausalLM.from_config(hf_cfg))
    if heads is not None:
        from lmdev.compress.prune_gpt2 import set_heads

        set_heads(model, heads if isinstance(heads, list) else int(heads))
    if channels is not None:
        from lmdev.compress.prune_gpt2 import set_channels

        set_channels(model, list(channels))
    return model


def resolve(ref: str, *, home: str | Path | None = None, data: str | None = None,
            base_dir: Path | None = None) -> Source:
    """SOURCE -> Source. ``data`` (a data type such as ``text:PATH``) gives an hf model or a
    checkpoint its evaluation data, or replaces the config's."""
    if ref.startswith("hf:"):
        return _from_hf(ref, data, base_dir)
    path = Path(ref).expanduser()
    if path.is_dir() and (path / "manifest.json").is_file() and _is_compress_output(path):
        return _from_variant(path, ref, data, base_dir)
    if path.is_dir() and (path / "state.json").is_file():
        return _from_checkpoint(path, ref, None, data, base_dir)
    if path.is_dir() and any(p.name.startswith("step-") for p in path.iterdir()):
        return _from_checkpoint(_latest(path, None, ref), ref, None, data, base_dir)
    if path.exists():
        raise LmdevError(f"{ref} is not a checkpoint, a run's checkpoints folder or a compress output",
                         "give RUN[@STEP], a step-NNNNNNNN folder, an OUT folder of lmdev compress, or hf:PATH")
    return _from_run(ref, home, data, base_dir)


def _is_compress_output(path: Path) -> bool:
    try:
        return json.loads((path / "manifest.json").read_text(encoding="utf-8")).get("format", "").startswith(
            "lmdev-compress")
    except (OSError, ValueError, AttributeError):
        return False


def _from_run(ref: str, home: str | Path | None, data: str | None, base_dir: Path | None) -> Source:
    from lmdev.track.store import Store, run_dir

    name, sep, step_text = ref.rpartition("@")
    run_ref = name if sep else ref
    step = None
    if sep:
        if not step_text.isdigit():
            raise LmdevError(f"{ref!r}: the step after @ must be a number", "e.g. my-run@500")
        step = int(step_text)
    try:
        store = Store.existing(home)
    except LmdevError:
        raise
    except Exception as exc:  # no store at all
        raise LmdevError(f"no run store to look up {run_ref!r} in ({exc})",
                         "give a checkpoint folder, or set LMDEV_HOME") from None
    try:
        info = store.get_run(run_ref)
        folder = run_dir(store.home, info.id) / "checkpoints"
    finally:
        store.close()
    source = _from_checkpoint(_latest(folder, step, ref), ref, info.id, data, base_dir)
    source.kind = "run"
    return source


def _latest(folder: Path, step: int | None, ref: str) -> Path:
    from lmdev.train import checkpoint as ckpt

    found = ckpt.list_checkpoints(folder)
    if step is not None:
        found = [p for p in found if int(p.name[len(ckpt.PREFIX):]) == step]
        if not found:
            raise LmdevError(f"{ref}: no checkpoint of step {step}", f"see the folders in {folder}")
    for path in reversed(found):
        if ckpt.verify(path) is None:
            return path
    raise LmdevError(f"{ref}: no complete checkpoint in {folder}", "train the run until it saves one")


def _from_checkpoint(path: Path, ref: str, run_id: str | None, data_spec: str | None,
                     base_dir: Path | None) -> Source:
    from lmdev.train import checkpoint as ckpt
    from lmdev.train.config import load_config

    problem = ckpt.verify(path)
    if problem:
        raise LmdevError(f"checkpoint {path} is corrupt: {problem}", "give an earlier checkpoint")
    state = ckpt.read_state(path)  # decrypted when the checkpoint is encrypted
    if "config" not in state:
        raise LmdevError(f"checkpoint {path} does not record its config", "it was not written by lmdev train")
    if ckpt.is_sharded(path):
        raise LmdevError(f"checkpoint {path} is sharded", "export it first: lmdev checkpoint export")
    overrides = [f"data.type={data_spec}"] if data_spec else []
    cfg = load_config(state["config"], overrides)
    data = load_eval_data(cfg.data, cfg.seed, base_dir)
    spec = lmdev_spec(cfg.model.model_dump(mode="json"), data.shape)
    model = spec.build()

    from lmdev.secure import require_safe

    require_safe(path, what="compress the checkpoint")
    weights = ckpt.read_tensors(path / "model.safetensors")
    _load_state(model, weights, path)
    return Source(ref, "checkpoint", model.eval(), spec, data, cfg, run_id, path,
                  (path / "model.safetensors").stat().st_size)


def lmdev_spec(model_config: dict[str, Any], shape: Any) -> ModelSpec:
    cfg = dict(model_config)
    if cfg.get("type") == "gpt" and cfg.get("vocab_size") is None:
        cfg["vocab_size"] = shape.n_outputs
    return ModelSpec("lmdev", cfg, {"kind": shape.kind, "input_shape": list(shape.input_shape),
                                    "n_outputs": shape.n_outputs, "task": shape.task})


def _load_state(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    missing, unexpected = model.load_state_dict(weights, strict=False)
    tied = {n for n, _ in model.named_parameters()}  # tied parameters appear under one name only
    missing = [k for k in missing if k in tied and k not in weights and not _is_tied(model, k)]
    if missing or unexpected:
        raise LmdevError(f"the weights in {path} do not fit the model built from its config "
                         f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})")


def _is_tied(model: nn.Module, name: str) -> bool:
    target = model.get_parameter(name)
    return any(p is target and n != name for n, p in model.named_parameters(remove_duplicate=False))


def load_eval_data(cfg: Any, seed: int, base_dir: Path | None) -> Any:
    from lmdev.train.data import load_data

    try:
        return load_data(cfg, seed, base_dir)
    except LmdevError as exc:
        raise LmdevError(f"cannot load the evaluation data: {exc.message}", exc.hint) from None


def _from_hf(ref: str, data_spec: str | None, base_dir: Path | None) -> Source:
    path = Path(ref.removeprefix("hf:")).expanduser()
    if not (path / "config.json").is_file():
        raise LmdevError(f"{path} is not a transformers model folder (no config.json)",
                         "give the folder holding config.json and model.safetensors")
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    weights = sorted(path.glob("*.safetensors"))
    if pickled and not weights:
        raise LmdevError(f"{path} holds pickled weights ({', '.join(pickled[:3])}), which lmdev never loads "
                         "(unpickling runs code)", "convert them to safetensors first; a scanner "
                         "(lmdev secure scan) is planned")
    if not weights:
        raise LmdevError(f"{path} has no .safetensors weights")
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    spec = ModelSpec("hf", config)
    from safetensors.torch import load_file

    from lmdev.secure import require_safe

    require_safe(path, what="compress the hf: model")  # every file of the folder

    model = spec.build()
    state: dict[str, torch.Tensor] = {}
    for w in weights:
        state.update(load_file(str(w)))
    inner = _hf_inner(model)
    missing, unexpected = inner.load_state_dict(state, strict=False)
    missing = [k for k in missing if not _is_tied(inner, k)] if missing else []
    if missing or unexpected:
        raise LmdevError(f"the weights in {path} do not fit its config.json "
                         f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})")
    data = hf_data(config, inner, data_spec, base_dir) if data_spec else None
    return Source(ref, "hf", model.eval(), spec, data, None, None, path,
                  sum(w.stat().st_size for w in weights))


def hf_data(config: dict[str, Any], inner: nn.Module, data_spec: str, base_dir: Path | None) -> Any:
    """The --data of a transformers model (an hf: folder or an hf variant): sequences no longer
    than the model's positions, with a vocabulary that fits its embedding."""
    from lmdev.train.config import DataConfig

    seq = int(config.get("n_positions") or config.get("max_position_embeddings") or 128)
    data = load_eval_data(DataConfig(type=data_spec, seq_len=min(64, seq)), 0, base_dir)
    vocab = cast(Any, inner).get_input_embeddings().num_embeddings
    if data.shape.n_outputs > vocab:
        raise LmdevError(f"the data's vocabulary ({data.shape.n_outputs}) is larger than the model's ({vocab})")
    return data


def _hf_inner(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside the HFCausalLM that an "hf" ModelSpec builds."""
    return cast("PreTrainedModel", cast("HFCausalLM", model).inner)


def _from_variant(path: Path, ref: str, data_spec: str | None, base_dir: Path | None) -> Source:
    from lmdev.compress.output import load_variant

    loaded = load_variant(path)
    manifest = loaded.manifest
    if manifest["load"].get("dtype") in ("bfloat16", "float16"):
        raise LmdevError(f"{path} is a {manifest['load']['dtype']} variant", "compress its fp32 source instead")
    data = None
    cfg = None
    if manifest.get("train_config"):
        from lmdev.train.config import load_config

        overrides = [f"data.type={data_spec}"] if data_spec else []
        cfg = load_config(manifest["train_config"], overrides)
        data = load_eval_data(cfg.data, cfg.seed, base_dir)
    spec = ModelSpec.from_dict(manifest["model"])
    model = loaded.model if isinstance(loaded.model, nn.Module) else None
    if model is None:
        raise LmdevError(f"{path} is an ONNX variant", "compress the source it was made from instead")
    if data is None and data_spec and spec.kind == "hf":  # an hf variant has no training config
        data = hf_data(spec.config, _hf_inner(model), data_spec, base_dir)
    return Source(ref, "variant", model.eval(), spec, data, cfg, manifest.get("run_id"), path,
                  sum(f["bytes"] for f in manifest["files"].values()), manifest.get("method"))


def from_config(config: dict[str, Any], train_steps: int = 0, seed: int = 0) -> Source:
    """A source built in memory from a train config (a dict), trained for ``train_steps`` with
    the config's optimizer and data: for benchmarks, tests and notebooks without a run store."""
    from lmdev.train.config import load_config

    cfg = load_config(config)
    data = load_eval_data(cfg.data, cfg.seed, None)
    spec = lmdev_spec(cfg.model.model_dump(mode="json"), data.shape)
    torch.manual_seed(seed)
    model = spec.build()
    source = Source(cfg.name, "config", model, spec, data, cfg)
    if train_steps:
        from lmdev.compress.finetune import finetune

        finetune(model, source, train_steps)
    model.eval()
    return source
