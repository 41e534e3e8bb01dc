"""The training config: YAML (or TOML) validated by pydantic, every error reported at once with
its field path, any field overridable with ``--set a.b=c``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from lmdev.config_files import CONFIG_LIMIT
from lmdev.errors import LmdevError


class _Strict(BaseModel):
    # NaN and ±Infinity (also "1e400", which overflows to inf) are refused in every number field
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --------------------------------------------------------------------------- model


Width = Annotated[int, Field(gt=0)]


class MLPConfig(_Strict):
    type: Literal["mlp"] = "mlp"
    hidden: list[Width] = Field(default_factory=lambda: [128, 64])
    activation: Literal["relu", "gelu", "tanh", "silu", "sigmoid"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class CNNConfig(_Strict):
    type: Literal["cnn"] = "cnn"
    channels: list[Width] = Field(default_factory=lambda: [32, 64])
    kernel_size: int = Field(3, ge=1)
    hidden: int = Field(128, ge=1)
    activation: Literal["relu", "gelu", "tanh", "silu"] = "relu"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class GPTConfig(_Strict):
    type: Literal["gpt"] = "gpt"
    vocab_size: int | None = Field(None, ge=2, description="taken from the data when not given")
    block_size: int = Field(128, ge=1, description="the longest sequence the model accepts")
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_kv_head: int | None = Field(None, ge=1, description="grouped-query attention; default n_head")
    n_embd: int = Field(128, ge=1)
    head_dim: int | None = Field(None, ge=1, description="width of each attention head; default n_embd / n_head "
                                 "(lmdev compress sets it when it prunes heads)")
    ffn_hidden: int | None = Field(None, ge=1, description="default: 4*n_embd (gelu) or 8/3*n_embd (swiglu)")
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    position: Literal["rope", "learned"] = "rope"
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    rope_theta: float = Field(10000.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    bias: bool = False
    tie_embeddings: bool = True
    activation_checkpointing: bool = False

    @model_validator(mode="after")
    def _heads(self) -> GPTConfig:
        problems = gpt_cross_field_errors(self.model_dump())
        if problems:
            raise ValueError("; ".join(problems))
        return self


def gpt_cross_field_errors(m: dict[str, Any]) -> list[str]:
    """The GPT checks that involve several fields (run on the raw values too, so that they are
    reported alongside single-field errors instead of on the next attempt)."""
    out: list[str] = []
    embd, head, kv = m.get("n_embd", 128), m.get("n_head", 4), m.get("n_kv_head")
    if not all(isinstance(v, int) and v > 0 for v in (embd, head)):
        return out
    hd = m.get("head_dim")
    if isinstance(hd, int) and hd > 0:  # an explicit head width: n_head * head_dim need not be n_embd
        if m.get("position", "rope") == "rope" and hd % 2:
            out.append(f"rope needs an even head size (head_dim {hd})")
    elif embd % head:
        out.append(f"n_embd ({embd}) must be divisible by n_head ({head})")
    elif m.get("position", "rope") == "rope" and (embd // head) % 2:
        out.append("rope needs an even head size (n_embd / n_head)")
    kv = kv if isinstance(kv, int) and kv > 0 else head
    if head % kv:
        out.append(f"n_head ({head}) must be divisible by n_kv_head ({kv})")
    return out


class PythonModelConfig(_Strict):
    """``type: python:package.module:factory``; ``kwargs`` are passed to the factory."""

    type: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class HFModelConfig(_Strict):
    """``type: hf:PATH``: a local Hugging Face causal-LM folder (config.json + safetensors);
    needs transformers. ``from_config: true`` builds it with random weights from config.json."""

    type: str
    from_config: bool = False


MODEL_TYPES = ["mlp", "cnn", "gpt", "python:package.module:factory", "hf:PATH"]


def _model_tag(v: Any) -> str | None:
    kind = v.get("type", "mlp") if isinstance(v, dict) else getattr(v, "type", None)
    if isinstance(kind, str) and kind.startswith(("python:", "hf:")):
        return kind.split(":", 1)[0]
    return kind if kind in ("mlp", "cnn", "gpt") else None


ModelConfig = Annotated[
    Union[
        Annotated[MLPConfig, Tag("mlp")],
        Annotated[CNNConfig, Tag("cnn")],
        Annotated[GPTConfig, Tag("gpt")],
        Annotated[PythonModelConfig, Tag("python")],
        Annotated[HFModelConfig, Tag("hf")],
    ],
    Discriminator(
        _model_tag,
        custom_error_type="unknown_model_type",
        custom_error_message=f"unknown model type; valid: {', '.join(MODEL_TYPES)}",
    ),
]


# --------------------------------------------------------------------------- data


class DataConfig(_Strict):
    type: str = Field("digits", description="digits | csv:PATH | npy:PATH | text:PATH | synthetic | python:mod:fn "
                      "(a file type may also be given as type: csv with path: PATH)")
    batch_size: int = Field(64, ge=1, description="the global batch")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    target: str | int | None = Field(None, description="csv: the label column (name or index); default the last")
    task: Literal["auto", "classification", "regression"] = "auto"
    seq_len: int = Field(128, ge=1, description="text: tokens per example")
    tokenizer: Literal["byte", "tiktoken"] = "byte"
    n_examples: int = Field(20000, ge=1, description="synthetic: how many problems to generate")
    val: str | None = Field(None, description="a separate validation file (csv/npy/parquet/text), used "
                            "instead of a random split")
    test: str | None = Field(None, description="a test file: checked for overlap with train, never trained on")
    check: Literal["off", "warn", "fail"] = Field(
        "warn", description="the data check before training: off, warn (record and warn), fail (stop on severe)")

    @model_validator(mode="before")
    @classmethod
    def _path_field(cls, v: Any) -> Any:
        """``{type: csv, path: x.csv}`` is ``{type: csv:x.csv}`` (the one form the rest reads)."""
        if not isinstance(v, dict) or "path" not in v:
            return v
        v = dict(v)
        path, kind = v.pop("path"), v.get("type", "digits")
        if not isinstance(path, str) or not path:
            raise ValueError(f"data.path must be a file path, not {path!r}")
        if not isinstance(kind, str) or kind not in PATH_DATA_TYPES:
            raise ValueError(f"data.path goes with a file type ({', '.join(PATH_DATA_TYPES)}), not type {kind!r}")
        v["type"] = f"{kind}:{path}"
        return v

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        kind = v.split(":", 1)[0]
        if kind not in DATA_TYPES:
            raise ValueError(f"unknown data type {v!r}; valid: {', '.join(DATA_TYPE_HELP)}")
        if kind not in ("digits", "synthetic") and ":" not in v:
            raise ValueError(f"{kind} data needs a path: {kind}:PATH")
        return v

    @model_validator(mode="after")
    def _split_files(self) -> DataConfig:
        kind = self.type.split(":", 1)[0]
        if (self.val or self.test) and kind not in ("csv", "npy", "parquet", "text"):
            raise ValueError(f"val/test files need file data (csv, npy, parquet, text), not {kind}")
        return self


DATA_TYPES = ["digits", "csv", "npy", "parquet", "text", "synthetic", "sparse", "python"]
PATH_DATA_TYPES = ["csv", "npy", "parquet", "text", "sparse"]  # those that take a PATH
DATA_TYPE_HELP = ["digits", "csv:PATH", "npy:PATH", "parquet:PATH", "text:PATH", "synthetic", "sparse:PATH",
                  "python:module:function"]


# --------------------------------------------------------------------------- optimisation


LOSSES = ["cross_entropy", "mse", "bce", "l1", "huber"]
OPTIMIZERS = ["sgd", "momentum", "adam", "adamw", "sparse_adam"]


class LossConfig(_Strict):
    type: str = Field("cross_entropy", description="a built-in loss, or module:function of your project "
                      "(called as function(output, target) -> scalar tensor), found beside the config")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    huber_delta: float = Field(1.0, gt=0.0)

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in LOSSES and ":" not in v:
            raise ValueError(f"unknown loss {v!r}; valid: {', '.join(LOSSES)}, or module:function")
        return v


class OptimizerConfig(_Strict):
    type: str = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    momentum: float = Field(0.0, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)

    @field_validator("type")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; valid: {', '.join(OPTIMIZERS)}")
        return v


class RegularizationConfig(_Strict):
    l1: float = Field(0.0, ge=0.0, description="adds l1 * sum|θ| to the loss")
    l2: float = Field(0.0, ge=0.0, description="adds l2 * sum θ² to the loss (not weight decay)")


class ScheduleConfig(_Strict):
    type: Literal["constant", "cosine", "linear"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)


class TrainLoopConfig(_Strict):
    max_steps: int = Field(500, ge=1)
    eval_every: int = Field(100, ge=1)
    log_every: int = Field(10, ge=1)
    grad_accum: int = Field(1, ge=1)
    grad_clip: float | None = Field(None, gt=0.0)
    compile: bool = False
    nan_policy: Literal["skip", "rollback", "stop"] = "skip"
    max_nan_skips: int = Field(3, ge=0, description="skipped steps before a rollback")
    max_rollbacks: int = Field(3, ge=0, description="rollbacks before the run stops")


class CheckpointConfig(_Strict):
    every: int = Field(100, ge=1)
    keep: int = Field(3, ge=1)
    keep_best: bool = True
    encrypt: bool | list[Annotated[str, Field(pattern=r"^age1[02-9ac-hj-np-z]{58}$")]] = Field(
        False, description="encrypt the checkpoint files at rest (age): true = to your own key "
        "(lmdev secure keygen), or a list of age recipients (age1...); read back with the key")


class FSDPConfig(_Strict):
    cpu_offload: bool = Field(False, description="keep sharded parameters and optimizer state in host memory")
    reshard_after_forward: bool = Field(True, description="free gathered parameters after forward (less memory)")


class TrainConfig(_Strict):
    name: str = "run"
    seed: int = 0
    model: ModelConfig = Field(default_factory=MLPConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    regularization: RegularizationConfig = Field(default_factory=RegularizationConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainLoopConfig = Field(default_factory=TrainLoopConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    device: str = "auto"
    strategy: Literal["auto", "ddp", "fsdp"] = Field(
        "auto", description="with several workers: ddp, fsdp, or auto (fsdp when the model's training "
        "state does not fit one device)")
    fsdp: FSDPConfig = Field(default_factory=FSDPConfig)
    callbacks: list[str] = Field(default_factory=list, description="module:Class objects with on_eval, "
                                 "on_checkpoint or on_resume methods, found beside the config")

    @field_validator("model", mode="before")
    @classmethod
    def _model_type(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v

    @field_validator("name", "device", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("loss", mode="before")
    @classmethod
    def _loss_name(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError(f"unknown device {v!r}; valid: auto, cpu, cuda, cuda:N, mps")


# --------------------------------------------------------------------------- loading


EXPANDED_LIMIT = 100_000  # values in a config once YAML's aliases are expanded


def _parse_value(text: str) -> Any:
    import yaml

    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return text
    check_expansion(value, f"--set value {text[:40]!r}")
    return value


def check_expansion(data: Any, source: str, limit: int = EXPANDED_LIMIT) -> None:
    """Refuse a config that YAML aliases (``&a`` / ``*a``) blow up: the values it holds once
    every alias is expanded are counted without expanding them (each shared node once); a
    "billion laughs" is refused in milliseconds instead of filling memory later."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: Any) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in busy:
            raise LmdevError(f"{source} refers to itself through a YAML alias", "remove the recursive alias")
        busy.add(key)
        children = node.values() if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                raise LmdevError(f"{source} expands to more than {limit:,} values (YAML aliases)",
                                 "write the config without aliases (&name / *name) that repeat large parts")
        busy.discard(key)
        sizes[key] = total
        return total

    try:
        size(data)
    except RecursionError:
        raise LmdevError(f"{source} is nested too deeply", "flatten the config") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``["optimizer.lr=0.01", "model.hidden=[64,32]"]`` applied to a raw config dict."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LmdevError(f"--set {item!r} is not KEY=VALUE", "e.g. --set optimizer.lr=0.01")
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if isinstance(nxt, str) and p in ("model", "loss"):
                nxt = {"type": nxt}
            if not isinstance(nxt, dict):
                nxt = {}
            node[p] = nxt
            node = nxt
        node[parts[-1]] = _parse_value(value)
    return data


_MODEL_TAGS = ("mlp", "cnn", "gpt", "python", "hf")


def unknown_model_message(model: Any) -> str:
    """``unknown model 'perceptron9000'; known: mlp, cnn, ...``: the name given, then the known ones."""
    name = model.get("type") if isinstance(model, dict) else model
    return f"unknown model {name!r}; known: {', '.join(MODEL_TYPES)}"


def format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        # drop the union tags pydantic puts in the path: model.gpt.n_head -> model.n_head
        parts = [str(p) for i, p in enumerate(err["loc"])
                 if not (i == 1 and err["loc"][0] == "model" and p in _MODEL_TAGS)]
        loc = ".".join(parts) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "unknown_model_type":
            msg = unknown_model_message(err.get("input"))
        lines.append(f"  {loc}: {msg}")
    return f"{source}: {len(lines)} error(s) in the config\n" + "\n".join(lines)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A training config file's settings (YAML, TOML or JSON: :mod:`lmdev.config_files`)."""
    from lmdev.config_files import read_file

    data = read_file(path, CONFIG_LIMIT)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise LmdevError(f"{path} must hold a mapping of settings, not a {type(data).__name__}")
    check_expansion(data, str(path))
    return data


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> TrainConfig:
    """A validated config from a file path or a dict, with ``--set`` overrides applied.

    Raises LmdevError listing every problem with its field path."""
    if isinstance(source, dict):
        data, label = json.loads(json.dumps(source)), "config"
    else:
        data, label = read_config_file(source), str(source)
    data = apply_overrides(data, overrides or [])
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        message = format_errors(exc, label)
        model = data.get("model")
        if isinstance(model, dict) and model.get("type") == "gpt":
            extra = [e for e in gpt_cross_field_errors(model) if e not in message]
            if extra:
                lines = message.split("\n")
                lines += [f"  model: {e}" for e in extra]
                message = f"{label}: {len(lines) - 1} error(s) in the config\n" + "\n".join(lines[1:])
        raise ConfigError(message) from None


class ConfigError(LmdevError):
    """A config with errors: the message holds every error, one per line."""

    def __init__(self, message: str) -> None:
        super().__init__(message, None)
