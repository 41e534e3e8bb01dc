"""Make a model smaller and faster, and measure on this machine whether it pays.

From Python::

    from lmdev.compress import Options, compress, load
    report = compress("digits-mlp", Options(method="quantize", out=Path("out/mlp-int8")))
    model = load("out/mlp-int8")   # a torch.nn.Module, or an ONNX Runtime runner for ONNX variants

Docs: docs/commands/compress.md; the report's JSON: docs/schemas/compress.md.
"""

from __future__ import annotations

from typing import Any


def compress(ref: str, opts: Any = None, progress: Any = None) -> Any:
    """Compress SOURCE ``ref`` with ``opts`` (lmdev.compress.core.Options); returns the Report."""
    from lmdev.compress.core import Options, compress as run

    return run(ref, opts or Options(), progress)


def load(out: Any) -> Any:
    """The variant written to ``out`` by ``lmdev compress -o OUT``, ready to run."""
    from lmdev.compress.output import load as load_out

    return load_out(out)


def __getattr__(name: str) -> Any:
    if name == "Options":
        from lmdev.compress.core import Options

        return Options
    raise AttributeError(name)


__all__ = ["compress", "load", "Options"]
