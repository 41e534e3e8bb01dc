"""What bootstrap ships: lmdev as a wheel built here, and its dependencies as an offline bundle.

``make_bundle(target)`` is the one place that decides what goes to a remote. Everything is made
here, on the machine that has a package index (the remote needs none): lmdev's wheel with ``pip
wheel --no-deps`` from the source tree; its runtime dependencies locked by ``lmdev setup``'s
resolver for the remote's Python and platform and packed by ``lmdev.setup.bundle`` (the format of
``lmdev setup bundle``: a manifest, the lock, hashed requirements, the wheels). Both are cached
under ``~/.cache/lmdev/remote/``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import lmdev
from lmdev.errors import LmdevError

_SOURCE_SUFFIXES = (".py", ".json", ".js", ".css", ".html", ".typed")


@dataclass(frozen=True)
class Target:
    """The remote interpreter the bundle is for."""

    version: tuple[int, int]
    machine: str  # x86_64, aarch64
    libc: tuple[str, str] = ("glibc", "2.17")

    @property
    def tag(self) -> str:
        return f"cp{self.version[0]}{self.version[1]}-{self.machine}-{self.libc[0]}{self.libc[1]}"


@dataclass
class Bundle:
    wheel: Path  # lmdev itself
    deps: Path  # its dependencies and pip: an ``lmdev setup bundle`` tar
    requirements: list[str] = field(default_factory=list)
    fingerprint: str = ""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "lmdev" / "remote"


def package_dir() -> Path:
    return Path(lmdev.__file__).resolve().parent


def fingerprint() -> str:
    """A hash of this lmdev's code and data: what makes two installations the same."""
    h = hashlib.sha256(lmdev.__version__.encode())
    root = package_dir()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def requirements(extras: tuple[str, ...] = ("ui",)) -> list[str]:
    """lmdev's runtime dependencies and those of ``extras`` (the dashboard by default)."""
    from packaging.requirements import Requirement

    try:
        reqs = metadata.requires("lmdev") or []
    except metadata.PackageNotFoundError:
        raise LmdevError("cannot read lmdev's dependencies (lmdev is not installed here)",
                         "install lmdev with pip in this environment first") from None
    out = []
    for text in reqs:
        req = Requirement(text)
        if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            out.append(f"{req.name}{req.specifier}")
    return out


def _source_tree() -> Path:
    root = package_dir().parent.parent
    if not (root / "pyproject.toml").is_file():
        raise LmdevError("lmdev's source tree is not here (it was installed from a wheel)",
                         "run lmdev from a source checkout (pip install -e .) to bootstrap remotes")
    return root


def build_wheel(fp: str) -> Path:
    """lmdev's wheel, built from the source tree into the cache (once per fingerprint)."""
    out = cache_dir() / "lmdev" / fp
    found = sorted(out.glob("lmdev-*.whl")) if out.is_dir() else []
    if found:
        return found[-1]
    src = _source_tree()
    with tempfile.TemporaryDirectory(prefix="lmdev-wheel-") as tmp:
        work = Path(tmp) / "src-copy"
        work.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (src / name).is_file():
                shutil.copy2(src / name, work / name)
        shutil.copytree(src / "src", work / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc"))
        dest = Path(tmp) / "dist"
        r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--quiet", "-w", str(dest), str(work)], capture_output=True, text=True, check=False)
        wheels = sorted(dest.glob("lmdev-*.whl"))
        if r.returncode != 0 or not wheels:
            raise LmdevError(f"building lmdev's wheel failed: {r.stderr.strip()[-400:]}",
                             "check that setuptools is installed here (pip install setuptools)")
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wheels[0], out / wheels[0].name)
    return out / wheels[0].name


def uv_platform(t: Target) -> str:
    """The target as uv's ``--python-platform`` (``x86_64-manylinux_2_36``): wheels up to its glibc."""
    if t.libc[0] != "glibc":
        raise LmdevError(f"the remote's C library is {t.libc[0]} {t.libc[1]}; lmdev bootstraps glibc Linux hosts",
                         "use a glibc Linux host (Debian, Ubuntu, RHEL, ...)")
    minor = int((t.libc[1].split(".") + ["0"])[1] or 0)
    if minor < 17:
        raise LmdevError(f"the remote's glibc {t.libc[1]} is older than 2.17 (manylinux2014)",
                         "use a newer Linux on the remote")
    return f"{t.machine}-manylinux_2_{min(minor, 40)}"


def deps_bundle(target: Target, reqs: list[str]) -> Path:
    """lmdev's dependencies (and pip) for the target, as an ``lmdev setup bundle`` tar.

    Resolved here with ``lmdev setup``'s resolver and sources (this machine's index, every file
    with its sha256) into a lock for the remote's Python and platform, then bundled by
    :func:`lmdev.setup.bundle.build_lock_bundle`: the remote installs it with
    ``--no-index --require-hashes``. Cached per requirements and target."""
    from lmdev.setup import installer as inst
    from lmdev.setup.bundle import build_lock_bundle
    from lmdev.setup.config import load_sources

    key = hashlib.sha256(("|".join(sorted(reqs)) + target.tag).encode()).hexdigest()[:12]
    out = cache_dir() / "bundles" / f"deps-{target.tag}-{key}.tar"
    if out.is_file():
        return out
    python = f"{target.version[0]}.{target.version[1]}"
    platform = uv_platform(target)
    lock = inst.resolve("uv", inst.Target(sys.executable, python, Path(sys.prefix), platform), [*reqs, "pip"],
                        load_sources(Path.cwd()))
    lock.tool = {"environment": "lmdev-remote", "python": python, "platform": platform}
    lock.requires_python = f"=={python}.*"
    build_lock_bundle(out, lock)
    return out


def make_bundle(target: Target) -> Bundle:
    """Everything a remote without internet needs to run this lmdev."""
    fp = fingerprint()
    reqs = requirements()
    return Bundle(wheel=build_wheel(fp), deps=deps_bundle(target, reqs), requirements=reqs, fingerprint=fp)


def wheel_name_ok(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_.+-]+\.whl", name) is not None
