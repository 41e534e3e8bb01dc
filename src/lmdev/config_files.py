"""Reading config files, one reader for every lmdev command: YAML, TOML and JSON by the file's
suffix (``.toml``, ``.json``, anything else YAML), with one error per problem that names the
file, the format and the position.

TOML is read with the standard library's ``tomllib`` (Python 3.11+) or, on Python 3.10, with
``tomli`` (the same API; a dependency there). :data:`tomllib` is whichever is installed."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from lmdev.errors import LmdevError

try:
    import tomllib
except ImportError:  # Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ImportError:
        tomllib = None  # type: ignore[assignment]

CONFIG_LIMIT = 4 * 1024**2  # bytes: a config file larger than this is not a config
FORMATS = {".toml": "toml", ".json": "json"}  # every other suffix: yaml
FORMAT_NAMES = {"toml": "TOML", "json": "JSON", "yaml": "YAML"}


def format_of(path: str | Path) -> str:
    return FORMATS.get(Path(path).suffix.lower(), "yaml")


def toml_reader(source: str | Path) -> ModuleType:
    """The TOML reader (looked up when called): ``tomllib``, else ``tomli``; neither, an error
    that says so rather than "not valid TOML"."""
    try:
        import tomllib as reader

        return reader
    except ImportError:
        pass
    try:
        import tomli

        module: ModuleType = tomli
        return module
    except ImportError:
        raise LmdevError(f"{source}: reading TOML on Python {sys.version_info[0]}.{sys.version_info[1]} "
                         "needs the tomli package", "pip install tomli, or write the file as YAML") from None


def parse(text: str, fmt: str, source: str | Path) -> Any:
    """``text`` read as ``fmt`` (yaml, toml or json); a syntax error is an LmdevError naming
    ``source``, the format and the position."""
    try:
        if fmt == "toml":
            return toml_reader(source).loads(text)
        if fmt == "json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except RecursionError:
        raise LmdevError(f"{source} is nested too deeply", "flatten the file") from None
    except LmdevError:
        raise
    except Exception as exc:  # yaml, toml and json each have their own error type
        raise LmdevError(f"{source} is not valid {FORMAT_NAMES[fmt]}: {_where(exc)}",
                         "fix the syntax at the position shown") from None


def _where(exc: Exception) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    mark = getattr(exc, "problem_mark", None)  # PyYAML: where it went wrong
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {getattr(exc, 'problem', None) or first}"
    return first


def read_text(path: Path, limit: int = CONFIG_LIMIT, what: str = "config file") -> str:
    """A config file's text: a regular file of at most ``limit`` bytes, in UTF-8 (a BOM is
    allowed); checked before it is read, so ``/dev/zero`` or a huge file fails at once."""
    from lmdev.fsutil import read_limited

    raw = read_limited(path, limit, what)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        raise LmdevError(f"{what} {path} is not UTF-8 text (binary, or UTF-16)", "save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LmdevError(f"{what} {path} is not UTF-8 text (byte {exc.start} is not valid UTF-8)",
                         "save it as UTF-8") from None


def read_file(path: str | Path, limit: int = CONFIG_LIMIT) -> Any:
    """The content of a YAML, TOML or JSON file (by its suffix)."""
    path = Path(path)
    return parse(read_text(path, limit), format_of(path), path)
