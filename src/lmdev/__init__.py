"""lmdev: the local development environment for large AI models."""

__version__ = "0.1.0"

__all__ = ["__version__"]
