"""Model presets and the planner's description of a transformer.

A :class:`ModelSpec` is the architecture as plain data: exactly the shapes memory and compute
depend on. It is built from a Hugging Face ``config.json`` (:func:`spec_from_hf_config`), from a
preset (the same fields of the model's public config, in ``data/models.json`` with their source),
or directly (the training engine's ``gpt`` config maps one-to-one onto these fields).

:func:`param_count` is a closed formula over the spec; tests check it against the published
counts and against transformers' own count on the meta device.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from lmdev.errors import LmdevError


@dataclass(frozen=True)
class ModelSpec:
    """A transformer's shapes. Decoders (GPT, Llama, Mixtral ...) and encoders (BERT)."""

    name: str
    n_layers: int
    hidden: int
    n_heads: int
    ffn: int  # MLP intermediate size (per expert for MoE)
    vocab: int
    n_kv_heads: int | None = None  # grouped-query attention; None = n_heads
    head_dim: int | None = None  # None = hidden // n_heads
    max_positions: int | None = None
    mlp: str = "gelu"  # "gelu": up, act, down | "swiglu"/"geglu": gate * act(up), down
    activation: str = ""  # the implementation's activation (HF name: silu, gelu_new ...); sets what it saves
    n_experts: int = 1  # >1: mixture of experts (each a full MLP) with a router
    experts_per_token: int = 1
    tied_embeddings: bool = False
    norm: str = "rmsnorm"  # "rmsnorm" (weight) | "layernorm" (weight + bias)
    norm_bias: bool = True  # LayerNorm with a bias (lmdev's gpt with bias=false has none)
    norms_per_layer: int = 2  # Gemma 2 has 4 (pre/post attention, pre/post MLP)
    qkv_bias: bool = False
    out_bias: bool = False  # attention output projection
    mlp_bias: bool = False
    learned_positions: bool = False  # GPT-2 / BERT position table (else rotary, no parameters)
    encoder: bool = False  # BERT: token types, embedding norm, pooler; no LM head
    type_vocab: int = 0
    pooler: bool = False
    attn_dropout: float = 0.0  # dropout probabilities (they add masks to activations in training)
    hidden_dropout: float = 0.0
    family: str = ""  # llama, qwen2, gpt2, bert ... (the HF model_type); lmdev-gpt: lmdev's own gpt

    def __post_init__(self) -> None:
        for field in ("n_layers", "hidden", "n_heads", "ffn", "vocab", "n_kv_heads", "head_dim", "max_positions",
                      "n_experts", "experts_per_token"):
            v = getattr(self, field)
            if v is None and field in ("n_kv_heads", "head_dim", "max_positions"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise LmdevError(f"model {self.name}: {field} must be a positive integer, got {v!r}",
                                 "check the model config")
        for field in ("attn_dropout", "hidden_dropout"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:  # NaN fails too
                raise LmdevError(f"model {self.name}: {field} must be a probability in [0, 1), got {v!r}",
                                 "check the model config")
        if self.head_dim is None and self.hidden % self.n_heads:
            raise LmdevError(f"model {self.name}: hidden {self.hidden} is not divisible by n_heads {self.n_heads}",
                             "the width must split evenly into attention heads (or give head_dim)")
        if self.experts_per_token > self.n_experts:
            raise LmdevError(f"model {self.name}: experts_per_token {self.experts_per_token} is more than "
                             f"n_experts {self.n_experts}", "check the model config")
        if self.mlp not in ("gelu", "swiglu", "geglu"):
            raise LmdevError(f"model {self.name}: unknown MLP kind {self.mlp!r}", "use gelu, swiglu or geglu")
        if self.n_heads % self.kv_heads:
            raise LmdevError(f"model {self.name}: n_heads {self.n_heads} is not a multiple of n_kv_heads "
                             f"{self.kv_heads} (key/value heads must divide the attention heads)",
                             "check n_kv_heads / num_key_value_heads")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def dim_head(self) -> int:
        return self.head_dim or self.hidden // self.n_heads

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.dim_head

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.dim_head

    @property
    def gated(self) -> bool:
        return self.mlp in ("swiglu", "geglu")

    @property
    def moe(self) -> bool:
        return self.n_experts > 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_layers(self, n_layers: int) -> ModelSpec:
        return dataclasses.replace(self, n_layers=n_layers, name=f"{self.name} ({n_layers} layers)")


# --- parameter counts ------------------------------------------------------------------------

def _norm_params(spec: ModelSpec) -> int:
    return spec.hidden * (2 if spec.norm == "layernorm" and spec.norm_bias else 1)


def attention_params(spec: ModelSpec) -> int:
    h, q, kv = spec.hidden, spec.q_dim, spec.kv_dim
    n = h * q + 2 * h * kv + q * h
    if spec.qkv_bias:
        n += q + 2 * kv
    if spec.out_bias:
        n += h
    return n


def mlp_params(spec: ModelSpec) -> int:
    """One expert's MLP."""
    h, f = spec.hidden, spec.ffn
    if spec.gated:
        return 3 * h * f + ((2 * f + h) if spec.mlp_bias else 0)
    return 2 * h * f + ((f + h) if spec.mlp_bias else 0)


def layer_params(spec: ModelSpec) -> int:
    mlp = mlp_params(spec) * spec.n_experts + (spec.hidden * spec.n_experts if spec.moe else 0)
    return attention_params(spec) + mlp + spec.norms_per_layer * _norm_params(spec)


def embedding_params(spec: ModelSpec) -> int:
    n = spec.vocab * spec.hidden
    if spec.learned_positions:
        n += (spec.max_positions or 0) * spec.hidden
    if spec.encoder:
        n += spec.type_vocab * spec.hidden + _norm_params(spec)
    return n


def head_params(spec: ModelSpec) -> int:
    """What follows the last layer: final norm and untied LM head (decoders), pooler (BERT)."""
    if spec.encoder:
        return (spec.hidden * spec.hidden + spec.hidden) if spec.pooler else 0
    return _norm_params(spec) + (0 if spec.tied_embeddings else spec.vocab * spec.hidden)


def param_count(spec: ModelSpec) -> int:
    """Exact number of parameters (tied embeddings counted once)."""
    return embedding_params(spec) + spec.n_layers * layer_params(spec) + head_params(spec)


def active_param_count(spec: ModelSpec) -> int:
    """Parameters a token passes through (MoE: only ``experts_per_token`` experts)."""
    if not spec.moe:
        return param_count(spec)
    idle = (spec.n_experts - spec.experts_per_token) * mlp_params(spec) * spec.n_layers
    return param_count(spec) - idle


# --- from a Hugging Face config ----------------------------------------------------------------

_GATED_ACTS = {"silu": "swiglu", "swish": "swiglu", "gelu": "geglu", "gelu_pytorch_tanh": "geglu",
               "gelu_new": "geglu", "gelu_fast": "geglu"}
_LLAMA_LIKE = {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "gemma", "gemma2", "gemma3_text",
               "phi3", "olmo", "olmo2", "granite", "cohere", "smollm3", "internlm2", "yi", "deepseek"}


def _field(cfg: dict[str, Any], *names: str, default: Any = None, required: bool = True,
           where: str = "config.json") -> Any:
    for name in names:
        if name in cfg and cfg[name] is not None:
            return cfg[name]
    if default is not None or not required:
        return default
    raise LmdevError(f"{where}: missing field {names[0]!r}",
                     "a Hugging Face config.json of a transformer model is expected")


def _int(cfg: dict[str, Any], *names: str, where: str, default: int | None = None,
         required: bool = True) -> int | None:
    value = _field(cfg, *names, default=default, required=required, where=where)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise LmdevError(f"{where}: field {names[0]!r} must be a positive integer, got {value!r}",
                         "fix the value in the config")
    return value


def _check_heads(cfg: dict[str, Any], hidden: int, heads: int, where: str) -> None:
    """Impossible attention shapes, named by the config's own fields."""
    if cfg.get("head_dim") is None and hidden % heads:
        raise LmdevError(f"{where}: field 'hidden_size' ({hidden}) is not divisible by 'num_attention_heads' "
                         f"({heads})", "the width must split evenly into heads (or set head_dim)")
    kv = _int(cfg, "num_key_value_heads", where=where, required=False)
    if kv is not None and heads % kv:
        raise LmdevError(f"{where}: field 'num_key_value_heads' ({kv}) does not divide 'num_attention_heads' "
                         f"({heads})", "grouped-query attention needs heads = a multiple of the KV heads")


def _check_probs(cfg: dict[str, Any], where: str) -> None:
    for key in ("attention_dropout", "attn_pdrop", "resid_pdrop", "hidden_dropout_prob",
                "attention_probs_dropout_prob"):
        v = cfg.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1):
            raise LmdevError(f"{where}: field {key!r} must be a probability in [0, 1), got {v!r}", "fix the value")


def spec_from_hf_config(cfg: dict[str, Any], name: str | None = None, where: str = "config.json") -> ModelSpec:
    """The :class:`ModelSpec` of a Hugging Face ``config.json`` (already parsed).

    Raises :class:`LmdevError` naming the field that is missing or malformed."""
    if not isinstance(cfg, dict):
        raise LmdevError(f"{where}: expected a JSON object", "a Hugging Face config.json is expected")
    mtype = cfg.get("model_type")
    if not isinstance(mtype, str) or not mtype:
        raise LmdevError(f"{where}: missing field 'model_type'", "a Hugging Face config.json is expected")
    _check_probs(cfg, where)
    if mtype in ("gpt2", "gpt_bigcode"):
        h = _int(cfg, "n_embd", "hidden_size", where=where)
        assert h is not None
        inner = cfg.get("n_inner")
        ffn = _int(cfg, "n_inner", where=where) if inner is not None else 4 * h
        return ModelSpec(
            name=name or cfg.get("_name_or_path") or mtype, family=mtype,
            n_layers=_int(cfg, "n_layer", "num_hidden_layers", where=where),  # type: ignore[arg-type]
            hidden=h, n_heads=_int(cfg, "n_head", "num_attention_heads", where=where),  # type: ignore[arg-type]
            ffn=ffn, vocab=_int(cfg, "vocab_size", where=where),  # type: ignore[arg-type]
            max_positions=_int(cfg, "n_positions", "max_position_embeddings", where=where, default=1024),
            mlp="gelu", activation=str(cfg.get("activation_function") or "gelu_new"),
            tied_embeddings=bool(cfg.get("tie_word_embeddings", True)), norm="layernorm",
            qkv_bias=True, out_bias=True, mlp_bias=True, learned_positions=True,
            attn_dropout=float(cfg.get("attn_pdrop", 0.1)), hidden_dropout=float(cfg.get("resid_pdrop", 0.1)))
    if mtype in ("bert", "roberta"):
        return ModelSpec(
            name=name or cfg.get("_name_or_path") or mtype, family=mtype,
            n_layers=_int(cfg, "num_hidden_layers", where=where),  # type: ignore[arg-type]
            hidden=_int(cfg, "hidden_size", where=where),  # type: ignore[arg-type]
            n_heads=_int(cfg, "num_attention_heads", where=where),  # type: ignore[arg-type]
            ffn=_int(cfg, "intermediate_size", where=where),  # type: ignore[arg-type]
            vocab=_int(cfg, "vocab_size", where=where),  # type: ignore[arg-type]
            max_positions=_int(cfg, "max_position_embeddings", where=where, default=512),
            mlp="gelu", activation=str(cfg.get("hidden_act") or "gelu"), norm="layernorm",
            qkv_bias=True, out_bias=True, mlp_bias=True,
            learned_positions=True, encoder=True, type_vocab=int(cfg.get("type_vocab_size", 2)),
            pooler=bool(cfg.get("add_pooling_layer", True)),
            attn_dropout=float(cfg.get("attention_probs_dropout_prob", 0.1)),
            hidden_dropout=float(cfg.get("hidden_dropout_prob", 0.1)))
    if mtype in _LLAMA_LIKE or "num_key_value_heads" in cfg or "intermediate_size" in cfg:
        h = _int(cfg, "hidden_size", where=where)
        n = _int(cfg, "num_attention_heads", where=where)
        assert h is not None and n is not None
        _check_heads(cfg, h, n, where)
        act = cfg.get("hidden_act") or cfg.get("hidden_activation") or "silu"
        if not isinstance(act, str):
            raise LmdevError(f"{where}: field 'hidden_act' must be a string, got {act!r}", "fix the value")
        experts = _int(cfg, "num_local_experts", "num_experts", where=where, default=1)
        ffn_name = "moe_intermediate_size" if (experts or 1) > 1 and "moe_intermediate_size" in cfg \
            else "intermediate_size"
        qkv_bias = bool(cfg.get("attention_bias", mtype in ("qwen2", "qwen2_moe")))
        return ModelSpec(
            name=name or cfg.get("_name_or_path") or mtype, family=mtype,
            n_layers=_int(cfg, "num_hidden_layers", where=where),  # type: ignore[arg-type]
            hidden=h, n_heads=n,
            n_kv_heads=_int(cfg, "num_key_value_heads", where=where, default=n),
            head_dim=_int(cfg, "head_dim", where=where, required=False),
            ffn=_int(cfg, ffn_name, where=where),  # type: ignore[arg-type]
            vocab=_int(cfg, "vocab_size", where=where),  # type: ignore[arg-type]
            max_positions=_int(cfg, "max_position_embeddings", where=where, required=False),
            mlp=_GATED_ACTS.get(act, "swiglu"), activation=act, n_experts=experts or 1,
            experts_per_token=_int(cfg, "num_experts_per_tok", where=where, default=1) or 1,
            tied_embeddings=bool(cfg.get("tie_word_embeddings", mtype.startswith("gemma"))),
            norm="rmsnorm", norms_per_layer=4 if mtype in ("gemma2", "gemma3_text") else 2,
            qkv_bias=qkv_bias, out_bias=bool(cfg.get("attention_bias", False)) and mtype != "qwen2",
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            attn_dropout=float(cfg.get("attention_dropout", 0.0) or 0.0))
    raise LmdevError(f"{where}: model_type {mtype!r} is not supported by the planner",
                     "supported: Llama-style decoders (llama, mistral, mixtral, qwen2, gemma, phi3 ...), gpt2, bert")


# --- from lmdev's own gpt (lmdev.train, `model: {type: gpt, ...}`) ----------------------------

def spec_from_lmdev_gpt(model: dict[str, Any], vocab: int | None = None, where: str = "config") -> ModelSpec:
    """The :class:`ModelSpec` of the training engine's ``gpt`` model config (its field names and
    defaults: n_layer 4, n_head 4, n_embd 128, block_size 128, rmsnorm, rope, swiglu, no bias,
    tied embeddings). ``vocab`` is used when the config leaves ``vocab_size`` to the data."""
    def get(key: str, default: Any) -> Any:
        v = model.get(key)
        return default if v is None else v

    d = {k: model.get(k) for k in ("n_layer", "n_head", "n_embd", "block_size", "n_kv_head", "ffn_hidden",
                                   "vocab_size", "head_dim")}
    for key, v in d.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            raise LmdevError(f"{where}: field 'model.{key}' must be a positive integer, got {v!r}", "fix the value")
    h = get("n_embd", 128)
    mlp = get("mlp", "swiglu")
    if mlp not in ("swiglu", "gelu"):
        raise LmdevError(f"{where}: field 'model.mlp' must be swiglu or gelu, got {mlp!r}", "fix the value")
    v = d["vocab_size"] or vocab
    if not v:
        raise LmdevError(f"{where}: model.vocab_size is not set (the trainer takes it from the data)",
                         "set model.vocab_size to plan this config")
    bias = bool(get("bias", False))
    dropout = float(get("dropout", 0.0))
    return ModelSpec(
        name=str(model.get("name") or "gpt"), family="lmdev-gpt", n_layers=get("n_layer", 4), hidden=h,
        n_heads=get("n_head", 4), n_kv_heads=d["n_kv_head"], head_dim=d["head_dim"],
        ffn=d["ffn_hidden"] or (int(8 * h / 3) if mlp == "swiglu" else 4 * h), vocab=v,
        max_positions=get("block_size", 128), mlp=mlp, activation="silu" if mlp == "swiglu" else "gelu",
        tied_embeddings=bool(get("tie_embeddings", True)), norm=get("norm", "rmsnorm"), norm_bias=bias,
        qkv_bias=bias, out_bias=bias, mlp_bias=bias, learned_positions=get("position", "rope") == "learned",
        attn_dropout=dropout, hidden_dropout=dropout)


# --- presets ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Preset:
    name: str
    hf_repo: str
    aliases: tuple[str, ...]
    published_params: int
    config: dict[str, Any]
    source: str

    @property
    def spec(self) -> ModelSpec:
        return spec_from_hf_config(self.config, name=self.name, where=f"preset {self.name}")


@lru_cache(maxsize=1)
def presets() -> dict[str, Preset]:
    raw = json.loads(resources.files("lmdev.catalog").joinpath("data/models.json").read_text("utf-8"))
    return {m["name"]: Preset(name=m["name"], hf_repo=m["hf_repo"], aliases=tuple(m.get("aliases", [])),
                              published_params=int(m["published_params"]), config=m["config"],
                              source=m["source"]) for m in raw["models"]}


def _index() -> dict[str, str]:
    index: dict[str, str] = {}
    for p in presets().values():
        for key in (p.name, p.hf_repo, *p.aliases):
            index[key.lower()] = p.name
    return index


def find_preset(name: str) -> Preset | None:
    target = _index().get(name.strip().lower())
    return presets()[target] if target else None


def closest_presets(name: str, n: int = 3) -> list[str]:
    names = list(presets())
    low = name.strip().lower()
    found = difflib.get_close_matches(low, names, n=n, cutoff=0.5)
    if len(found) < n:
        by_repo = {k: v for k, v in _index().items()}
        for key in difflib.get_close_matches(low, list(by_repo), n=n * 2, cutoff=0.5):
            if by_repo[key] not in found:
                found.append(by_repo[key])
    return found[:n]


def get_preset(name: str) -> Preset:
    preset = find_preset(name)
    if preset is None:
        close = closest_presets(name)
        hint = f"did you mean {', '.join(close)}?" if close else "run `lmdev plan --list-models` for the presets"
        raise LmdevError(f"unknown model {name!r}: not a preset, a config.json or a folder holding one", hint)
    return preset
