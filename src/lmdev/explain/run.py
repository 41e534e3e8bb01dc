"""``explain_run``: choose or sample inputs, attribute the run's model, gather the explanation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmdev.errors import LmdevError
from lmdev.explain.types import METHODS, Attribution, Explanation

IMPORTANCE_ROWS = 64  # tables: feature importance is averaged over this many validation rows
WINDOW = 32  # language models: tokens in a sampled input


@dataclass
class ExplainOptions:
    method: str = "integrated-gradients"
    inputs: list[str] = field(default_factory=list)  # tables: validation row numbers; text: strings
    count: int = 3  # inputs sampled when none are given
    seed: int = 0
    home: str | Path | None = None
    data_dir: Path | None = None  # where the config's relative data paths start (default: the config's folder)
    steps: int = 50  # integrated gradients: points on the path


def explain_run(ref: str, opts: ExplainOptions | None = None) -> Explanation:
    import torch

    from lmdev.explain.model import load_run_model

    opts = opts or ExplainOptions()
    if opts.method not in METHODS:
        raise LmdevError(f"unknown method {opts.method!r}", f"choose one of: {', '.join(METHODS)}")
    rm = load_run_model(ref, opts.home, opts.data_dir)
    torch.manual_seed(opts.seed)
    if rm.data.shape.kind == "tokens":
        return _explain_tokens(rm, opts)
    if rm.data.shape.kind not in ("table", "image"):
        raise LmdevError(f"explain does not support {rm.data.shape.kind} data yet")
    return _explain_table(rm, opts)


def _model_name(cfg: Any) -> str:
    return str(cfg.model.type).split(":", 1)[0]


# --------------------------------------------------------------------------- tables and images


def _explain_table(rm: Any, opts: ExplainOptions) -> Explanation:
    import torch

    from lmdev.explain.attribute import attribute_table

    split = rm.data.val if len(rm.data.val) else rm.data.train
    where = "val" if len(rm.data.val) else "train"
    x, y = split.x, split.y
    width = int(np.prod(rm.data.shape.input_shape))
    side = math.isqrt(width)
    image = side * side == width and (rm.cfg.data.type == "digits" or _model_name(rm.cfg) == "cnn")
    names = [f"r{i // side}c{i % side}" for i in range(width)] if image else feature_names(rm)
    rows = _chosen_rows(opts, len(x))
    baseline = rm.data.train.x.mean(0, keepdim=True)
    classification = rm.data.shape.task == "classification"

    def run(idx: list[int]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        xs = x[idx].float()
        with torch.no_grad():
            out = rm.model(xs)
        target = out.argmax(1) if classification else None
        scores, delta = attribute_table(rm.model, xs, baseline, target, opts.method, opts.steps)
        return scores.reshape(len(idx), -1), delta, out

    scores, delta, out = run(rows)
    exp = Explanation(rm.run_id, rm.run_name, rm.step, _model_name(rm.cfg), "image" if image else "table",
                      opts.method, names, [side, side] if image else [])
    for i, r in enumerate(rows):
        pred = str(int(out[i].argmax())) if classification else f"{float(out[i, 0]):.4g}"
        label = str(int(y[r])) if classification else f"{float(y[r].reshape(-1)[0]):.4g}"
        exp.items.append(Attribution(f"{where} row {r}", pred, scores[i].tolist(), label,
                                     values=x[r].reshape(-1).tolist(),
                                     delta=float(delta[i].abs()) if delta is not None else None))
    sample = np.random.default_rng(opts.seed).permutation(len(x))[:IMPORTANCE_ROWS].tolist()
    mean_abs = run(sample)[0].abs().mean(0)
    order = mean_abs.argsort(descending=True).tolist()
    exp.importance = [(names[j], float(mean_abs[j])) for j in order]
    exp.sample = len(sample)
    return exp


def _chosen_rows(opts: ExplainOptions, n: int) -> list[int]:
    if not opts.inputs:
        return np.random.default_rng(opts.seed).permutation(n)[: opts.count].tolist()
    rows = []
    for text in opts.inputs:
        if not text.strip().isdigit() or int(text) >= n:
            raise LmdevError(f"--input {text!r} is not a validation row number (0..{n - 1})",
                             "for tables and images, --input takes a row of the validation split")
        rows.append(int(text))
    return rows


def feature_names(rm: Any) -> list[str]:
    """A csv's header names (without the target column); f0, f1, ... otherwise."""
    width = int(np.prod(rm.data.shape.input_shape))
    kind, _, arg = rm.cfg.data.type.partition(":")
    if kind == "csv":
        import csv

        from lmdev.data.read import label_index, resolve

        with open(resolve(arg, rm.base_dir), newline="", encoding="utf-8", errors="replace") as f:
            head = next(csv.reader([f.readline()]), [])
        col = label_index(head, rm.cfg.data.target, arg) if head else -1
        names = [c.strip() for i, c in enumerate(head) if i != col]
        if len(names) == width and not all(_number(n) for n in names):
            return names
    return [f"f{i}" for i in range(width)]


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- language models


def _explain_tokens(rm: Any, opts: ExplainOptions) -> Explanation:
    import torch

    from lmdev.explain.attribute import attribute_tokens

    encode, decode = _codec(rm.cfg.data.tokenizer)
    limit = min(rm.cfg.data.seq_len, getattr(rm.cfg.model, "block_size", rm.cfg.data.seq_len))
    if opts.inputs:
        sequences = [encode(t)[-limit:] for t in opts.inputs]
        if any(not s for s in sequences):
            raise LmdevError("an --input text is empty", "give some text to continue")
    else:
        tokens = rm.data.val.tokens if rm.data.val.tokens is not None and len(rm.data.val.tokens) > WINDOW else rm.data.train.tokens
        n = min(WINDOW, limit)
        starts = np.random.default_rng(opts.seed).integers(0, len(tokens) - n, opts.count)
        sequences = [np.asarray(tokens[s:s + n]).astype(np.int64).tolist() for s in starts]
    exp = Explanation(rm.run_id, rm.run_name, rm.step, _model_name(rm.cfg), "tokens", opts.method)
    for seq in sequences:
        ids = torch.tensor([seq], dtype=torch.long)
        with torch.no_grad():
            target = int(rm.model(ids)[0, -1].argmax())
        scores, delta = attribute_tokens(rm.model, ids, target, opts.method, opts.steps)
        text = "".join(decode([t]) for t in seq)
        exp.items.append(Attribution(text, decode([target]), scores.tolist(), tokens=[decode([t]) for t in seq],
                                     delta=delta))
    return exp


def _codec(tokenizer: str) -> tuple[Any, Any]:
    if tokenizer == "tiktoken":
        import tiktoken

        enc = tiktoken.get_encoding("gpt2")
        return enc.encode_ordinary, enc.decode
    return (lambda text: list(text.encode("utf-8"))), (lambda ids: bytes(ids).decode("utf-8", "replace"))
