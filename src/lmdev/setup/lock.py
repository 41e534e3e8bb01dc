"""The lock: a PEP 751 ``pylock.toml`` (every file with its sha256) and, beside it,
``setup-plan.json`` (the plan it came from and the verification record).

One environment per lock file: ``pylock.toml`` for the main environment, ``pylock.<name>.toml``
for a framework the plan put in its own environment (PEP 751 names).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdev.config_files import tomllib

from lmdev.errors import LmdevError
from lmdev.fsutil import atomic_write_text

PLAN_FILE = "setup-plan.json"


@dataclass
class Lock:
    """A parsed pylock.toml: its packages as the file has them, and lmdev's table."""

    packages: list[dict[str, Any]]
    requires_python: str
    tool: dict[str, Any] = field(default_factory=dict)  # [tool.lmdev]: environment, python, plan digest

    def pins(self) -> dict[str, str]:
        """Normalised name -> version of every package."""
        return {normalise(p["name"]): str(p["version"]) for p in self.packages}

    def files(self) -> list[dict[str, Any]]:
        """Every wheel and sdist entry, each with its package's name."""
        out = []
        for p in self.packages:
            for w in p.get("wheels", []):
                out.append({"package": p["name"], **w})
            if p.get("sdist"):
                out.append({"package": p["name"], **p["sdist"]})
        return out


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def lock_name(env_name: str) -> str:
    return "pylock.toml" if env_name == "main" else f"pylock.{env_name}.toml"


def read_lock(path: Path) -> Lock:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LmdevError(f"no lock at {path}", "run `lmdev setup` first to make one") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise LmdevError(f"{path} is not a valid pylock.toml: {exc}", "regenerate it with `lmdev setup`") from None
    if str(data.get("lock-version", "")).split(".")[0] != "1":
        raise LmdevError(f"{path}: unsupported lock-version {data.get('lock-version')!r}", "expected 1.0")
    return Lock(list(data.get("packages", [])), str(data.get("requires-python", "")),
                dict(data.get("tool", {}).get("lmdev", {})))


def lock_from_text(text: str) -> Lock:
    """A lock from a resolver's pylock.toml output (uv pip compile --format pylock.toml)."""
    data = tomllib.loads(text)
    return Lock(list(data.get("packages", [])), str(data.get("requires-python", "")), {})


def write_lock(path: Path, lock: Lock) -> Path:
    lines = ['lock-version = "1.0"', 'created-by = "lmdev"']
    if lock.requires_python:
        lines.append(f"requires-python = {_toml(lock.requires_python)}")
    for pkg in sorted(lock.packages, key=lambda p: normalise(p["name"])):
        lines += ["", "[[packages]]"]
        lines += [f"{k} = {_toml(v)}" for k, v in pkg.items() if k not in ("wheels",)]
        if pkg.get("wheels"):
            lines.append("wheels = [")
            lines += [f"  {_toml(w)}," for w in pkg["wheels"]]
            lines.append("]")
    if lock.tool:
        lines += ["", "[tool.lmdev]"]
        lines += [f"{k} = {_toml(v)}" for k, v in sorted(lock.tool.items())]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _key(k: str) -> str:
    return k if k.replace("-", "").replace("_", "").isalnum() else json.dumps(k)


def plan_file(profile: str | None = None) -> str:
    """``setup-plan.json``, or ``setup-plan.<profile>.json`` for a plan made with ``--for``."""
    return PLAN_FILE if not profile else f"setup-plan.{profile}.json"


def read_plan_record(folder: Path, profile: str | None = None) -> dict[str, Any]:
    path = folder / plan_file(profile)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LmdevError(f"{path} is not valid JSON: {exc}", "delete it and run `lmdev setup` again") from None


def write_plan_record(folder: Path, plan: dict[str, Any], verification: dict[str, Any],
                      profile: str | None = None) -> Path:
    record = {"plan": plan, "verification": verification}
    return atomic_write_text(folder / plan_file(profile), json.dumps(record, indent=2, sort_keys=True) + "\n")
