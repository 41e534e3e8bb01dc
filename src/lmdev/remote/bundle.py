"""What bootstrap ships: lmdev as a wheel built here, and a wheelhouse of its dependencies.

``make_bundle(target)`` is the one place that decides what goes to a remote; ``lmdev setup
bundle`` (its lock and offline bundle) can replace it without touching the rest of bootstrap.
Everything is made here, on the machine that has a package index (the remote needs none):
lmdev's wheel with ``pip wheel --no-deps`` from the source tree, its runtime dependencies with
``pip download`` for the remote's Python version and platform. Both are cached under
``~/.cache/lmdev/remote/``.
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
from lmdev.fsutil import atomic_write_text

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
    wheelhouse: list[Path] = field(default_factory=list)  # its dependencies, and pip
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


def platform_tags(t: Target) -> list[str]:
    if t.libc[0] != "glibc":
        return [f"linux_{t.machine}"]
    major, minor = (int(x) for x in (t.libc[1].split(".") + ["0"])[:2])
    tags = [f"manylinux_{major}_{m}_{t.machine}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    tags += [f"{name}_{t.machine}" for m, name in legacy.items() if minor >= m]
    return tags + [f"linux_{t.machine}"]


def download_wheelhouse(target: Target, reqs: list[str]) -> list[Path]:
    """Wheels of ``reqs`` (and pip) for the target, from this machine's package index."""
    key = hashlib.sha256(("|".join(sorted(reqs)) + target.tag).encode()).hexdigest()[:12]
    out = cache_dir() / "wheelhouse" / f"{target.tag}-{key}"
    done = out / ".complete"
    if not done.is_file():
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(out),
               "--python-version", f"{target.version[0]}.{target.version[1]}",
               "--implementation", "cp", "--abi", f"cp{target.version[0]}{target.version[1]}",
               "--abi", "abi3", "--abi", "none"]
        for plat in platform_tags(target):
            cmd += ["--platform", plat]
        r = subprocess.run(cmd + ["pip", *reqs], capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise LmdevError(f"cannot gather lmdev's dependencies for the remote ({target.tag}): "
                             f"{r.stderr.strip()[-400:]}",
                             "this machine needs a package index (or a local mirror) to build the bundle")
        atomic_write_text(done, "\n".join(reqs) + "\n")
    return sorted(p for p in out.glob("*.whl"))


def make_bundle(target: Target) -> Bundle:
    """Everything a remote without internet needs to run this lmdev."""
    fp = fingerprint()
    reqs = requirements()
    wheel = build_wheel(fp)
    return Bundle(wheel=wheel, wheelhouse=download_wheelhouse(target, reqs), requirements=reqs,
                  fingerprint=fp)


def wheel_name_ok(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9_.+-]+\.whl", name) is not None
