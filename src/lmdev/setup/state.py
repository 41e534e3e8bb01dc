"""What an environment holds, read from its ``.dist-info`` folders (no interpreter started), and
how it differs from a lock, exactly.

A package matches its lock entry when the version is the same (the local part, ``+cpu`` /
``+cu128``, included), the installed wheel is one of the entry's files (same tags and build
number, read from the ``WHEEL`` file) and its source is the same (a direct URL or path, from
``direct_url.json``, only where the lock names one). ``pip freeze`` leaves out pip's own tools;
so does :func:`compare`'s list of extras.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdev.setup.lock import Lock, normalise

# installed with every environment, left out of `pip freeze` (and never removed by --frozen)
TOOLS = frozenset({"pip", "setuptools", "wheel", "distribute"})


@dataclass(frozen=True)
class Dist:
    """One installed distribution."""

    name: str  # normalised
    version: str
    tags: frozenset[str]  # the wheel's tags (WHEEL "Tag:" lines)
    build: str | None  # the wheel's build number (WHEEL "Build:")
    direct_url: str | None  # where it came from when not from an index (direct_url.json)


@dataclass(frozen=True)
class Difference:
    """One way the environment differs from the lock."""

    package: str
    kind: str  # missing, version, file, source, extra
    installed: str | None
    locked: str | None

    def describe(self) -> str:
        if self.kind == "missing":
            return f"{self.package}: not installed; the lock has {self.locked}"
        if self.kind == "extra":
            return f"{self.package} {self.installed}: installed, not in the lock"
        return f"{self.package}: installed {self.installed}; the lock has {self.locked}"


def site_packages(prefix: Path) -> list[Path]:
    return sorted(prefix.glob("lib/python3*/site-packages")) + sorted(prefix.glob("Lib/site-packages"))


def _wheel_info(info: Path) -> tuple[frozenset[str], str | None]:
    try:
        text = (info / "WHEEL").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset(), None
    tags, build = set(), None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Tag":
            tags.add(value.strip())
        elif key.strip() == "Build":
            build = value.strip()
    return frozenset(tags), build


def _direct_url(info: Path) -> str | None:
    path = info / "direct_url.json"
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("url") or "") or None
    except (OSError, ValueError, AttributeError):
        return None


def installed_dists(prefix: Path) -> dict[str, Dist]:
    """Every distribution in the environment at ``prefix``, by normalised name."""
    out: dict[str, Dist] = {}
    for sp in site_packages(prefix):
        for info in sp.glob("*.dist-info"):
            name, _, version = info.name[: -len(".dist-info")].partition("-")
            if not version:
                continue
            tags, build = _wheel_info(info)
            out[normalise(name)] = Dist(normalise(name), version, tags, build, _direct_url(info))
    return out


def wheel_tags(filename: str) -> tuple[frozenset[str], str | None]:
    """The tags a wheel file name stands for (``py3-none-any``; compressed tag sets expanded) and
    its build number; nothing for a name that is not a wheel's. (The wheel spec's file name:
    ``name-version[-build]-python-abi-platform.whl``; read here without packaging, whose import
    would cost a no-op setup more than the whole comparison.)"""
    if not filename.endswith(".whl"):
        return frozenset(), None
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return frozenset(), None
    build = parts[2] if len(parts) == 6 else None
    py, abi, plat = parts[-3:]
    return frozenset(f"{p}-{a}-{t}" for p in py.split(".") for a in abi.split(".") for t in plat.split(".")), build


def _same_version(a: str, b: str) -> bool:
    if a == b:
        return True
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False


def _file_name(entry: dict[str, Any]) -> str:
    where = str(entry.get("name") or entry.get("url") or entry.get("path") or "")
    return urllib.parse.unquote(where.rstrip("/").rsplit("/", 1)[-1])


def _direct_source(pkg: dict[str, Any]) -> str | None:
    """The URL or path a lock entry installs from directly (PEP 751 archive, directory, vcs)."""
    for key in ("archive", "directory", "vcs"):
        if isinstance(pkg.get(key), dict):
            return str(pkg[key].get("url") or pkg[key].get("path") or "")
    return None


def _same_source(a: str, b: str) -> bool:
    def plain(u: str) -> str:
        u = u.split("#", 1)[0].rstrip("/")
        return urllib.parse.unquote(u[len("file://"):] if u.startswith("file://") else u)

    return plain(a) == plain(b) or plain(a).endswith("/" + plain(b).lstrip("./"))


def compare_package(pkg: dict[str, Any], have: Dist | None) -> Difference | None:
    """How the installed ``have`` differs from the lock entry ``pkg`` (None: it matches)."""
    name, version = normalise(pkg["name"]), str(pkg["version"])
    if have is None:
        return Difference(name, "missing", None, version)
    if not _same_version(have.version, version):
        return Difference(name, "version", have.version, version)
    direct = _direct_source(pkg)
    if direct is not None:
        if not have.direct_url or not _same_source(have.direct_url, direct):
            return Difference(name, "source", have.direct_url or "an index", direct)
        return None
    if have.direct_url:
        return Difference(name, "source", have.direct_url, "a file from the index")
    wheels = [wheel_tags(_file_name(w)) for w in pkg.get("wheels", [])]
    if wheels and have.tags and (have.tags, have.build) not in wheels:
        mine = ", ".join(sorted(have.tags)) + (f" build {have.build}" if have.build else "")
        files = "; ".join(_file_name(w) for w in pkg.get("wheels", []))
        return Difference(name, "file", f"{have.version} ({mine})", f"{version} ({files})")
    return None


def compare(lock: Lock, dists: dict[str, Dist], exact: bool = True) -> list[Difference]:
    """Every difference between the environment (``dists``) and ``lock``; ``exact`` also lists
    packages the lock does not have (pip's own tools aside)."""
    out = []
    locked = set()
    for pkg in sorted(lock.packages, key=lambda p: normalise(p["name"])):
        name = normalise(pkg["name"])
        locked.add(name)
        diff = compare_package(pkg, dists.get(name))
        if diff:
            out.append(diff)
    if exact:
        out += [Difference(n, "extra", d.version, None) for n, d in sorted(dists.items())
                if n not in locked and n not in TOOLS]
    return out
