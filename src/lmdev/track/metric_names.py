"""One name for a metric whichever framework logged it.

Keras logs ``val_loss``, transformers ``eval_loss``, lmdev's engine ``val/loss``: the same
quantity under three spellings. :func:`canonical` maps the ``<split>_<name>`` spelling of a
split prefix to lmdev's ``<split>/<name>``, so runs from different integrations line up in the
runs table and in ``runs compare``. The stored key is never changed: it stays the metric's
name in the store (and its alias in what is shown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")

SPLITS = ("train", "val", "test", "eval")


def canonical(key: str) -> str:
    """``val_loss`` -> ``val/loss``, ``eval_accuracy`` -> ``eval/accuracy``; a key with a ``/``
    or without a split prefix is already canonical."""
    if "/" in key:
        return key
    for split in SPLITS:
        if key.startswith(split + "_") and len(key) > len(split) + 1:
            return f"{split}/{key[len(split) + 1:]}"
    return key


def aliases(keys: Iterable[str]) -> dict[str, list[str]]:
    """{canonical name: the stored keys spelled that way}, the canonical spelling first."""
    out: dict[str, list[str]] = {}
    for key in keys:
        out.setdefault(canonical(key), []).append(key)
    for name, originals in out.items():
        originals.sort(key=lambda k: (k != name, k))
    return out


def by_canonical(values: Mapping[str, T]) -> dict[str, T]:
    """``values`` keyed by canonical name; where a run holds two spellings of one name, the
    canonical spelling's value wins."""
    return {name: values[originals[0]] for name, originals in aliases(values).items()}


_HIGHER_IS_BETTER = ("acc", "accuracy", "f1", "bleu", "rouge", "auc", "reward", "tokens_per_s", "throughput", "mfu",
                     "precision", "recall")


def higher_is_better(key: str) -> bool:
    """Which way a metric improves, from its name: accuracy, F1, reward, throughput... up;
    losses, perplexity, errors down. The one rule for "the best evaluation"."""
    name = key.rsplit("/", 1)[-1].lower()
    return any(word in name for word in _HIGHER_IS_BETTER)


def improves(key: str, value: float, best: float | None) -> bool:
    """``value`` of metric ``key`` is finite and better than ``best`` (any finite value beats None)."""
    import math

    if not math.isfinite(value):
        return False
    return best is None or (value > best if higher_is_better(key) else value < best)
