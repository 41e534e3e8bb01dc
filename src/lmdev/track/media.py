"""Values beyond scalars that ``run.log`` accepts: histograms, images, text and small tables.

Each is built on the caller's thread (``lmdev.Histogram(weights)`` reads the tensor *now*, so a
later in-place update does not change what was logged) and stored by the writer thread in the
store's ``media`` table (``Store.media``), apart from the scalar chunks: logging a histogram
never slows down logging a loss.

- :class:`Histogram`: bucket edges and counts (never the raw values), from a tensor, an array
  or a sequence of numbers; non-finite values are counted apart.
- :class:`Image`: a PNG written under the run's folder (``media/<key>/<step>.png``) by the
  writer thread; from a NumPy array or a tensor (HW, HWC or CHW; float in [0, 1] or uint8) or
  a PIL image.
- :class:`Text`: a string (at most ``TEXT_LIMIT`` characters).
- :class:`Table`: columns and rows of JSON scalars (at most ``TABLE_CELLS`` cells).
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

import numpy as np

from lmdev.errors import LmdevError
from lmdev.track.types import Media

__all__ = ["Histogram", "Image", "Media", "Table", "Text", "encode_png"]

TEXT_LIMIT = 1_000_000  # characters
TABLE_CELLS = 100_000
MAX_BINS = 10_000
MAX_PIXELS = 16_000_000


def _as_numpy(value: Any) -> Any:
    """A tensor (torch, TF), an array or a sequence as a NumPy array, copied off any device."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        return value.numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # TF eager tensors
        return np.asarray(value.numpy())
    return np.asarray(value)


class Histogram(Media):
    """The distribution of a tensor's values in ``bins`` equal buckets between its min and max.

    Stored as ``edges`` (bins + 1 floats) and ``counts`` (bins ints), with ``min``, ``max``,
    ``count`` and ``nonfinite`` (NaN/Inf values, not in any bucket). ``range=(lo, hi)`` fixes the
    buckets' span (values outside it are not counted in a bucket)."""

    kind = "histogram"

    def __init__(self, values: Any, bins: int = 64, range: tuple[float, float] | None = None) -> None:  # noqa: A002
        if type(bins) is not int or not 1 <= bins <= MAX_BINS:
            raise LmdevError(f"a histogram needs 1 to {MAX_BINS} bins, not {bins!r}")
        if hasattr(values, "detach") and hasattr(values, "histc"):
            self._from_torch(values, bins, range)
            return
        arr = np.asarray(_as_numpy(values), dtype=np.float64).ravel()
        finite = arr[np.isfinite(arr)]
        self.nonfinite = int(arr.size - finite.size)
        self.count = int(finite.size)
        lo, hi = range if range is not None else ((float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0))
        if hi <= lo:
            hi = lo + 1.0 if hi == lo else lo
        counts, edges = np.histogram(finite, bins=bins, range=(lo, hi))
        self.counts = [int(c) for c in counts]
        self.edges = [float(e) for e in edges]
        self.min = float(finite.min()) if finite.size else None
        self.max = float(finite.max()) if finite.size else None

    def _from_torch(self, tensor: Any, bins: int, span: tuple[float, float] | None) -> None:
        """Counted where the tensor lives (one small transfer back, not the whole tensor)."""
        import torch

        t = tensor.detach().reshape(-1)
        if not t.is_floating_point():
            t = t.double()
        elif t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()
        ok = torch.isfinite(t)
        finite = t[ok]
        self.nonfinite = int(t.numel() - finite.numel())
        self.count = int(finite.numel())
        if finite.numel():
            lo_t, hi_t = torch.aminmax(finite)
            self.min, self.max = float(lo_t), float(hi_t)
        else:
            self.min = self.max = None
        lo, hi = span if span is not None else ((self.min, self.max) if self.min is not None else (0.0, 0.0))
        assert lo is not None and hi is not None
        if hi <= lo:
            hi = lo + 1.0
        counts = torch.histc(finite.double(), bins=bins, min=lo, max=hi) if finite.numel() else torch.zeros(bins)
        self.counts = [int(c) for c in counts.tolist()]
        self.edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]

    def payload(self) -> dict[str, Any]:
        return {"edges": self.edges, "counts": self.counts, "min": self.min, "max": self.max,
                "count": self.count, "nonfinite": self.nonfinite}


class Image(Media):
    """An image, kept as 8-bit pixels (HWC, 1, 3 or 4 channels) and written as a PNG file.

    ``data``: a PIL image, or an array/tensor of shape HW, HWC or CHW (a channel count of 1, 3
    or 4 first and not last means CHW, as torchvision produces); floats are taken to be in
    [0, 1] and clipped, integers in [0, 255]."""

    kind = "image"

    def __init__(self, data: Any, caption: str | None = None) -> None:
        self.caption = None if caption is None else str(caption)
        if hasattr(data, "mode") and hasattr(data, "tobytes") and hasattr(data, "size"):  # PIL
            if data.mode not in ("L", "RGB", "RGBA"):
                data = data.convert("RGBA" if "A" in data.mode else "RGB")
            data = np.asarray(data)
        arr = _as_numpy(data)
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = np.transpose(arr, (1, 2, 0))
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4) or 0 in arr.shape[:2]:
            raise LmdevError(f"cannot log an image of shape {tuple(arr.shape)}",
                             "give HW, HWC or CHW with 1, 3 or 4 channels")
        if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
            raise LmdevError(f"an image of {arr.shape[1]}x{arr.shape[0]} pixels is over the limit "
                             f"of {MAX_PIXELS:,} pixels", "resize it before logging")
        if arr.dtype == np.uint8:
            pixels = np.ascontiguousarray(arr)  # a copy: the caller may reuse its buffer
            if pixels is arr:
                pixels = arr.copy()
        elif np.issubdtype(arr.dtype, np.floating):
            pixels = (np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
            pixels = np.clip(arr.astype(np.int64) * (255 if arr.dtype == np.bool_ else 1), 0, 255).astype(np.uint8)
        else:
            raise LmdevError(f"cannot log an image of dtype {arr.dtype}", "give floats in [0, 1] or uint8")
        self.pixels = pixels

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    def payload(self) -> dict[str, Any]:
        return {"width": self.width, "height": self.height, "channels": int(self.pixels.shape[2]),
                "caption": self.caption}

    def png(self) -> bytes:
        """The image as PNG bytes (8-bit, grey / RGB / RGBA, zlib level 6)."""
        return encode_png(self.pixels)


def encode_png(pixels: Any) -> bytes:
    """PNG bytes of an HWC uint8 array with 1, 3 or 4 channels."""
    h, w, c = pixels.shape
    colour = {1: 0, 3: 2, 4: 6}[c]
    rows = np.empty((h, 1 + w * c), dtype=np.uint8)
    rows[:, 0] = 0  # filter type None on every row
    rows[:, 1:] = pixels.reshape(h, w * c)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + chunk(b"IEND", b""))


class Text(Media):
    """A piece of text (a generated sample, a prompt and its answer)."""

    kind = "text"

    def __init__(self, text: str) -> None:
        text = str(text)
        if len(text) > TEXT_LIMIT:
            raise LmdevError(f"a text of {len(text):,} characters is over the limit of {TEXT_LIMIT:,}",
                             "log a shorter text, or save it as a file with run.log_artifact")
        self.text = text

    def payload(self) -> dict[str, Any]:
        return {"text": self.text}


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # the store's JSON holds no NaN
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:
        return _cell(value.item())
    return str(value)


class Table(Media):
    """A small table: ``columns`` (names) and ``rows`` (each a sequence of as many cells).

    Cells are numbers, strings, booleans or None (anything else is stored as its text); at most
    ``TABLE_CELLS`` cells in all: a larger table is an error, not a silent cut."""

    kind = "table"

    def __init__(self, columns: list[str] | tuple[str, ...], rows: Any) -> None:
        cols = [str(c) for c in columns]
        if not cols:
            raise LmdevError("a table needs at least one column")
        table = [list(r) for r in rows]
        for i, row in enumerate(table):
            if len(row) != len(cols):
                raise LmdevError(f"row {i} of the table has {len(row)} cells for {len(cols)} columns")
        cells = len(table) * len(cols)
        if cells > TABLE_CELLS:
            raise LmdevError(f"a table of {cells:,} cells is over the limit of {TABLE_CELLS:,}",
                             "log a sample of the rows, or save the table as a file with run.log_artifact")
        self.columns = cols
        self.rows = [[_cell(v) for v in row] for row in table]

    def payload(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows}
