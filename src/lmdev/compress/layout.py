"""How many units (heads, channels) each block keeps when a share of them is pruned.

- ``uniform``: the same share of every block (``keep_count`` of each block's width);
- ``global``: the units of all blocks ranked together by their scores and the lowest removed, so
  a block whose units matter less loses more. The total kept is the uniform layout's, so the two
  prune the same number of parameters. Every block keeps at least ``min_heads`` heads (one) and
  ``min_channels`` MLP channels (a tenth of its width): a block left with no attention or no MLP
  would still run, but a fine-tune could not bring it back.

The scores must be comparable across blocks: the callers measure a unit's contribution relative to
the residual stream the block reads (lmdev.compress.prune_gpt2.unit_scores with ``relative``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from lmdev.errors import LmdevError

LAYOUTS = ("uniform", "global")
MIN_CHANNEL_SHARE = 0.1


def min_heads(width: int) -> int:
    return 1


def min_channels(width: int) -> int:
    return max(1, math.ceil(width * MIN_CHANNEL_SHARE))


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise LmdevError(f"unknown --prune-layout {layout!r}", f"valid: {', '.join(LAYOUTS)}")


def counts(scores: list[torch.Tensor], ratio: float, layout: str, what: str,
           minimum: Callable[[int], int]) -> list[int]:
    """Units kept per block, given each block's unit ``scores`` (higher: more important)."""
    from lmdev.compress.prune import keep_count

    check_layout(layout)
    uniform = [keep_count(s.numel(), ratio, what) for s in scores]
    if layout == "uniform":
        return uniform
    floor = [min(minimum(s.numel()), u) for s, u in zip(scores, uniform)]
    spare = sum(uniform) - sum(floor)
    ranked = [s.float().sort(descending=True).values for s in scores]
    rest = torch.cat([r[f:] for r, f in zip(ranked, floor)])  # the units above each block's floor
    owner = torch.cat([torch.full((r.numel() - f,), b) for b, (r, f) in enumerate(zip(ranked, floor))])
    picked = owner[rest.topk(spare).indices] if spare else owner[:0]
    extra = torch.bincount(picked, minlength=len(scores))
    return [f + int(e) for f, e in zip(floor, extra)]
