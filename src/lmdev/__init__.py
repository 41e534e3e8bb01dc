"""lmdev: the local development environment for large AI models."""

__version__ = "0.1.0"

__all__ = ["__version__", "init", "log", "finish", "autolog", "Histogram", "Image", "Text", "Table"]

# The tracking API, imported on first use so that `import lmdev` stays cheap.
_LAZY = {
    "init": "lmdev.track.api",
    "log": "lmdev.track.api",
    "finish": "lmdev.track.api",
    "autolog": "lmdev.integrations.autolog",
    # values beyond scalars for run.log: {"weights": lmdev.Histogram(w), "sample": lmdev.Image(x)}
    "Histogram": "lmdev.track.media",
    "Image": "lmdev.track.media",
    "Text": "lmdev.track.media",
    "Table": "lmdev.track.media",
}


def __getattr__(name: str) -> object:  # PEP 562: a module attribute on first use
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lmdev' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
