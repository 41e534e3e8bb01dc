"""Models built from configs: an MLP, a small CNN, a decoder-only transformer (``gpt``) and any
user ``nn.Module`` through ``python:package.module:factory``.

The GPT reads top to bottom as the math it computes: token embedding (plus learned positions, or
rotary position embedding inside attention), then ``n_layer`` blocks of
``x + attention(norm(x))`` and ``x + mlp(norm(x))``, a final norm and the output projection
(tied to the embedding by default)."""

from __future__ import annotations

import importlib
import math
import os
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmdev.errors import LmdevError
from lmdev.train.config import CNNConfig, GPTConfig, HFModelConfig, MLPConfig, PythonModelConfig

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU, "sigmoid": nn.Sigmoid}


@dataclass
class DataShape:
    """What the data tells the model: its input and output sizes."""

    kind: str  # "table" (x: [B, F]), "image" ([B, C, H, W]), "tokens" ([B, T] of ids), "sparse" (CSR [B, F])
    input_shape: tuple[int, ...]  # per example, without the batch dimension
    n_outputs: int  # classes, regression targets or vocabulary size
    task: str  # "classification", "regression", "language_modeling"


# --------------------------------------------------------------------------- MLP and CNN


class SparseLinear(nn.Module):
    """x @ W + b for a sparse CSR batch x [B, F], as a sparse embedding: the rows of W that a
    batch touches are gathered and summed, weighted by x's values, and only those rows get a
    gradient (a sparse one: train with sparse_adam or sgd)."""

    def __init__(self, n_features: int, out: int) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(n_features, out, mode="sum", sparse=True)
        self.bias = nn.Parameter(torch.zeros(out))
        nn.init.normal_(self.bag.weight, std=1.0 / math.sqrt(n_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        crow = x.crow_indices()
        out: torch.Tensor = self.bag(x.col_indices(), crow[:-1], per_sample_weights=x.values()) + self.bias
        return out


def build_mlp(cfg: MLPConfig, shape: DataShape) -> nn.Module:
    width = math.prod(shape.input_shape)
    layers: list[nn.Module] = []
    hidden = list(cfg.hidden)
    if shape.kind == "sparse":  # the first layer reads the sparse input
        if not hidden:
            return nn.Sequential(SparseLinear(width, shape.n_outputs))
        width = hidden.pop(0)
        layers += [SparseLinear(math.prod(shape.input_shape), width), ACTIVATIONS[cfg.activation]()]
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
    else:
        layers.append(nn.Flatten())
    for h in hidden:
        layers += [nn.Linear(width, h), ACTIVATIONS[cfg.activation]()]
        if cfg.dropout:
            layers.append(nn.Dropout(cfg.dropout))
        width = h
    layers.append(nn.Linear(width, shape.n_outputs))
    return nn.Sequential(*layers)


def build_cnn(cfg: CNNConfig, shape: DataShape) -> nn.Module:
    if shape.kind == "image":
        c, h, w = shape.input_shape
        reshape: nn.Module = nn.Identity()
    else:  # a flat table whose width is a square (8x8 digits): read it as a 1-channel image
        side = int(math.isqrt(math.prod(shape.input_shape)))
        if side * side != math.prod(shape.input_shape):
            raise LmdevError(f"the cnn model needs images; the data has {shape.input_shape[0]} features, "
                             "not a square number", "use model type mlp for tables")
        c, h, w = 1, side, side
        reshape = nn.Unflatten(1, (1, side, side))
    layers: list[nn.Module] = [reshape]
    for out in cfg.channels:
        layers += [nn.Conv2d(c, out, cfg.kernel_size, padding=cfg.kernel_size // 2),
                   ACTIVATIONS[cfg.activation]()]
        if h >= 4 and w >= 4:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = out
    layers += [nn.Flatten(), nn.Linear(c * h * w, cfg.hidden), ACTIVATIONS[cfg.activation]()]
    if cfg.dropout:
        layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(cfg.hidden, shape.n_outputs))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- GPT


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def _norm(cfg: GPTConfig) -> nn.Module:
    return RMSNorm(cfg.n_embd) if cfg.norm == "rmsnorm" else nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


def rope_tables(head_dim: int, length: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, [length, head_dim / 2]."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (even, odd) pair of x [B, H, T, D] by its position's angle."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos[: x.shape[-2]].to(x.dtype), sin[: x.shape[-2]].to(x.dtype)
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def gpt_head_dim(cfg: GPTConfig) -> int:
    """The width of each attention head: ``head_dim`` when the config gives it, else n_embd / n_head."""
    return cfg.head_dim or cfg.n_embd // cfg.n_head


class Attention(nn.Module):
    """Causal self-attention with grouped-query heads (n_kv_head <= n_head)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv = cfg.n_head, cfg.n_kv_head or cfg.n_head
        self.head_dim = gpt_head_dim(cfg)
        self.qkv = nn.Linear(cfg.n_embd, (self.n_head + 2 * self.n_kv) * self.head_dim, bias=cfg.bias)
        self.proj = nn.Linear(self.n_head * self.head_dim, cfg.n_embd, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.rope = cfg.position == "rope"

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_head * self.head_dim, self.n_kv * self.head_dim, self.n_kv * self.head_dim], dim=-1)
        q = q.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = v.view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        if self.rope:
            assert cos is not None and sin is not None, "a RoPE model's blocks are given the rotation tables"
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv != self.n_head:  # each key/value head serves n_head / n_kv query heads
            k = k.repeat_interleave(self.n_head // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        out: torch.Tensor = self.proj(y.transpose(1, 2).reshape(b, t, -1))
        return out


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        hidden = cfg.ffn_hidden or (int(8 * cfg.n_embd / 3) if self.swiglu else 4 * cfg.n_embd)
        self.up = nn.Linear(cfg.n_embd, hidden * (2 if self.swiglu else 1), bias=cfg.bias)
        self.down = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.up(x).chunk(2, dim=-1)
            out: torch.Tensor = self.down(F.silu(gate) * up)
        else:
            out = self.down(F.gelu(self.up(x)))
        return out


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.norm1, self.attn = _norm(cfg), Attention(cfg)
        self.norm2, self.mlp = _norm(cfg), MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), cos, sin))
        out: torch.Tensor = x + self.drop(self.mlp(self.norm2(x)))
        return out


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        assert cfg.vocab_size is not None
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.block_size, cfg.n_embd) if cfg.position == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = _norm(cfg)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        if cfg.position == "rope":
            cos, sin = rope_tables(gpt_head_dim(cfg), cfg.block_size, cfg.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2's scaled init of the residual projections
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.cfg.block_size:
            raise LmdevError(f"sequence of {t} tokens is longer than the model's block_size "
                             f"{self.cfg.block_size}", "raise model.block_size or lower data.seq_len")
        x = self.embed(idx)
        if self.pos is not None:
            x = x + self.pos(torch.arange(t, device=idx.device))
        x = self.drop(x)
        for block in self.blocks:
            if self.cfg.activation_checkpointing and self.training:
                x = checkpoint(block, x, self.rope_cos, self.rope_sin, use_reentrant=False)
            else:
                x = block(x, self.rope_cos, self.rope_sin)
        logits: torch.Tensor = self.head(self.norm(x))
        return logits


# --------------------------------------------------------------------------- factory


def add_search_folder(base_dir: str | os.PathLike[str] | None) -> None:
    """Let ``module:name`` references find modules beside the config (``base_dir``) and in the
    current folder. Appended, after the standard library and site-packages, so a stray
    ``tiktoken.py`` beside the config cannot replace the real one."""
    from pathlib import Path

    for folder in (str(Path(base_dir).resolve()) if base_dir else None, os.getcwd()):
        if folder and folder not in sys.path:
            sys.path.append(folder)


def load_object(spec: str, what: str) -> object:
    """``package.module:name`` -> the object (imports the module)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise LmdevError(f"{what} {spec!r} is not of the form package.module:name",
                         "e.g. python:mypkg.models:build")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise LmdevError(f"cannot import {module!r} for {what}: {exc}",
                         "check the module is on PYTHONPATH (the config's folder is added)") from None
    try:
        return getattr(mod, name)
    except AttributeError:
        raise LmdevError(f"module {module!r} has no {name!r} for {what}") from None


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM that returns its logits, like lmdev's own GPT."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.inner(input_ids=idx, use_cache=False).logits
        return logits


def build_hf(cfg: HFModelConfig, shape: DataShape) -> nn.Module:
    from pathlib import Path

    path = Path(cfg.type.removeprefix("hf:")).expanduser()
    if not (path / "config.json").is_file():
        raise LmdevError(f"{path} is not a Hugging Face model folder (no config.json)",
                         "give the folder holding config.json and model.safetensors")
    try:
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        raise LmdevError("hf: models need the transformers package", "pip install transformers") from None
    if shape.kind != "tokens":
        raise LmdevError("hf: models are causal language models and need token data",
                         "use data type text:PATH or synthetic")
    if cfg.from_config:
        inner = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]  # transformers is untyped here
            AutoConfig.from_pretrained(path, local_files_only=True))
    else:
        from lmdev.secure import require_safe

        require_safe(path, what="load the hf: model")  # every file of the folder, before transformers reads it
        inner = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
    vocab = inner.get_input_embeddings().num_embeddings
    if vocab < shape.n_outputs:
        raise LmdevError(f"the model's vocabulary ({vocab}) is smaller than the data's ({shape.n_outputs})")
    return HFCausalLM(inner)


def build_model(cfg: MLPConfig | CNNConfig | GPTConfig | PythonModelConfig | HFModelConfig,
                shape: DataShape) -> nn.Module:
    if isinstance(cfg, MLPConfig):
        return build_mlp(cfg, shape)
    if isinstance(cfg, CNNConfig):
        return build_cnn(cfg, shape)
    if isinstance(cfg, GPTConfig):
        if shape.kind != "tokens":
            raise LmdevError("the gpt model needs token data", "use data type text:PATH or synthetic")
        if cfg.vocab_size is None:
            cfg = cfg.model_copy(update={"vocab_size": shape.n_outputs})
        elif cfg.vocab_size < shape.n_outputs:
            raise LmdevError(f"model.vocab_size {cfg.vocab_size} is smaller than the data's "
                             f"vocabulary {shape.n_outputs}", "remove model.vocab_size to take the data's")
        return GPT(cfg)
    if isinstance(cfg, HFModelConfig):
        return build_hf(cfg, shape)
    factory = load_object(cfg.type.removeprefix("python:"), "model")
    kwargs = {**shape_kwargs(factory, cfg.kwargs, shape), **cfg.kwargs}
    _check_kwargs(factory, kwargs, cfg.type)
    model = factory(**kwargs)  # type: ignore[operator]
    if not isinstance(model, nn.Module):
        raise LmdevError(f"model factory {cfg.type} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def data_facts(shape: DataShape) -> dict[str, object]:
    """What the data tells a model factory, by parameter name: ``input_shape`` (per example),
    ``in_features`` (tables), ``n_outputs``, ``n_classes`` / ``num_classes`` (classification),
    ``vocab_size`` and ``seq_len`` (token data)."""
    facts: dict[str, object] = {"input_shape": tuple(shape.input_shape), "n_outputs": shape.n_outputs}
    if shape.kind == "tokens":
        facts.update(vocab_size=shape.n_outputs, seq_len=shape.input_shape[0])
    else:
        facts["in_features"] = math.prod(shape.input_shape)
    if shape.task == "classification":
        facts.update(n_classes=shape.n_outputs, num_classes=shape.n_outputs)
    return facts


AT_LEAST = ("n_outputs", "n_classes", "num_classes", "vocab_size")  # a model may have more outputs than the data needs


def shape_kwargs(factory: object, given: dict[str, object], shape: DataShape) -> dict[str, object]:
    """The data's facts that ``factory`` takes (a parameter of that name; ``**kwargs`` alone
    receives none) and the config does not give; a value the config gives that
    contradicts the data is refused here, naming both, before anything is trained."""
    import inspect

    facts = data_facts(shape)
    for key, value in given.items():
        want = facts.get(key)
        if want is None or value == want or (isinstance(value, list) and tuple(value) == want):
            continue
        if key in AT_LEAST and isinstance(value, int) and isinstance(want, int) and value >= want:
            continue
        raise LmdevError(f"model.kwargs.{key} is {value!r} but the data's {key} is {want!r}",
                         f"remove model.kwargs.{key}: the factory is given the data's value")
    try:
        params = inspect.signature(factory).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in facts.items() if k in params and k not in given}


def _check_kwargs(factory: object, kwargs: dict[str, object], name: str) -> None:
    """model.kwargs must fit the factory's signature: checked before the call, so a typo is
    named (with what the factory takes) rather than a TypeError from inside it."""
    import inspect

    if not callable(factory):
        raise LmdevError(f"model factory {name} is a {type(factory).__name__}, not a function or class")
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the call itself will tell
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        takes = ", ".join(p for p in sig.parameters if p not in ("self", "args", "kwargs")) or "nothing"
        raise LmdevError(f"model.kwargs do not fit {name}: {exc} (it takes: {takes})",
                         "fix model.kwargs in the config") from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
