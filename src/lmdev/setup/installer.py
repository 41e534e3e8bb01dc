"""The real installers: uv (default, from the ``uv`` PyPI package) or pip, run as subprocesses.

Each call passes every package source explicitly (see :mod:`lmdev.setup.config`) and shields the
installer from configuration lmdev did not translate (``uv --no-config``, ``PIP_CONFIG_FILE=/dev/null``),
so what is resolved is exactly what the plan and the sources say.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmdev.errors import LmdevError
from lmdev.setup.config import Sources
from lmdev.setup.lock import Lock, lock_from_text, normalise
from lmdev.setup.state import TOOLS, site_packages

INSTALLERS = ("uv", "pip")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """Where packages go (a virtual environment or, with --system, an interpreter) and for which
    platform the resolver works (``platform`` set: a lock for another machine, nothing installed)."""

    python: str  # the interpreter
    version: str  # "3.11"
    prefix: Path
    platform: str | None = None  # uv --python-platform, e.g. x86_64-manylinux_2_28


def uv_binary() -> str:
    """The uv executable: the one the ``uv`` package installed beside this Python, else PATH's."""
    here = Path(sys.executable).parent / "uv"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("uv")
    if not found:
        raise LmdevError("uv is not installed", "pip install uv (or pass --installer pip)")
    return found


def default_installer() -> str:
    """uv when it is installed (the ``uv`` package, or on PATH), else pip."""
    try:
        uv_binary()
    except LmdevError:
        return "pip"
    return "uv"


def installer_env() -> dict[str, str]:
    """The environment for installer subprocesses: no pip/uv settings lmdev did not translate."""
    uv_index = re.compile(r"UV_(INDEX|EXTRA_INDEX|DEFAULT_INDEX|FIND_LINKS|NO_INDEX|CONSTRAINT)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and not uv_index.match(k)}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.pop("VIRTUAL_ENV", None)
    return env


def run_tool(cmd: list[str], what: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=installer_env(),
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise LmdevError(f"cannot run {cmd[0]}", "pip install uv, or pass --installer pip") from None
    except subprocess.TimeoutExpired:
        raise LmdevError(f"{what} did not finish in {timeout:.0f} s", "check the index is reachable") from None
    if proc.returncode != 0:
        raise installer_error(what, proc.stderr + proc.stdout)
    return proc


def prepare_audit() -> None:
    """Import the audit log's module in a thread now (while the resolver works), so that recording
    an install just before it starts costs no import time on the way to the installer."""
    import threading

    threading.Thread(target=lambda: __import__("lmdev.secure.audit"), name="lmdev-audit-import", daemon=True).start()


def installer_error(what: str, output: str) -> LmdevError:
    """The installer's failure as one line with its fix."""
    text = " ".join(output.split())
    low = text.lower()
    if "hash" in low and ("mismatch" in low or "do not match" in low or "didn't match" in low):
        return LmdevError(f"{what}: a file's sha256 differs from the lock; refusing to install it",
                          "the file changed on the index or in the bundle: check where it came from, "
                          "or re-lock with `lmdev setup` (without --frozen)")
    if any(s in low for s in ("connection refused", "failed to fetch", "could not connect",
                              "name or service not known", "network is unreachable", "dns error",
                              "connection error", "failed to establish a new connection")):
        url = re.search(r"(https?|file)://[^\s`'\"]+", text)
        return LmdevError(f"{what}: index unreachable" + (f" ({url.group(0)})" if url else ""),
                          "check the index URL and the network (a PyTorch mirror: torch-index in "
                          "[tool.lmdev.setup] or --torch-index), or use --from-bundle")
    if "no space left" in low:
        return LmdevError(f"{what}: disk full", "free space in the target environment's disk and the cache")
    tail = text[-600:]
    return LmdevError(f"{what} failed: {tail}", "see the resolver's message; check the stacks and the indexes")


def create_venv(path: Path, python: str | None, installer: str, offline: bool = False) -> None:
    """A new virtual environment at ``path`` (uv's is created in milliseconds). ``offline``: use
    an interpreter already on this machine, never download one."""
    if installer == "uv":
        cmd = [uv_binary(), "venv", "--no-config", "--quiet", str(path)] + (
            ["--offline", "--no-python-downloads"] if offline else [])
        if python:
            cmd += ["--python", python]
        run_tool(cmd, "creating the virtual environment", timeout=300)
    else:
        interp = shutil.which(f"python{python}") if python else sys.executable
        if not interp:
            raise LmdevError(f"no python{python} on PATH", "install it, or pass --installer uv "
                             "(uv finds or installs interpreters)")
        run_tool([interp, "-m", "venv", str(path)], "creating the virtual environment", timeout=300)


def resolve(installer: str, target: Target, requirements: list[str], sources: Sources) -> Lock:
    """Resolve ``requirements`` for ``target`` into a lock (every file with its hash)."""
    with tempfile.TemporaryDirectory(prefix="lmdev-setup-") as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        if installer == "uv":
            return _resolve_uv(target, req, sources)
        return _resolve_pip(target, req, sources, Path(tmp))


def _resolve_uv(target: Target, req: Path, sources: Sources) -> Lock:
    cmd = [uv_binary(), "pip", "compile", "--no-config", "--quiet", "--no-header", str(req),
           "--format", "pylock.toml", "--generate-hashes", *sources.uv_args()]
    if target.platform:
        cmd += ["--python-version", target.version, "--python-platform", target.platform]
    else:
        cmd += ["--python", target.python]
    proc = run_tool(cmd, "resolving")
    return lock_from_text(proc.stdout)


def _resolve_pip(target: Target, req: Path, sources: Sources, tmp: Path) -> Lock:
    report = tmp / "report.json"
    cmd = [sys.executable, "-m", "pip", "--python", target.python, "install", "--dry-run",
           "--ignore-installed", "--quiet", "--report", str(report), "-r", str(req), *sources.pip_args()]
    if target.platform:
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "-r", str(req), "--only-binary=:all:", "--target", str(tmp / "t"),
               "--python-version", target.version, "--platform", pip_platform(target.platform),
               *sources.pip_args()]
    run_tool(cmd, "resolving")
    data = json.loads(report.read_text(encoding="utf-8"))
    packages = []
    for item in data.get("install", []):
        meta, info = item["metadata"], item["download_info"]
        url = info["url"]
        hashes = (info.get("archive_info") or {}).get("hashes") or {}
        if "sha256" not in hashes:
            raise LmdevError(f"{meta['name']}: the resolver gave no sha256 for {url}",
                             "use an index that publishes hashes, or --installer uv")
        entry = {"url": url, "hashes": {"sha256": hashes["sha256"]}}
        name = url.rsplit("/", 1)[-1].split("#")[0]
        pkg = {"name": meta["name"], "version": meta["version"]}
        pkg["wheels" if name.endswith(".whl") else "sdist"] = [entry] if name.endswith(".whl") else entry
        packages.append(pkg)
    return Lock(packages, f">={target.version}")


def pip_platform(uv_platform: str) -> str:
    arch, _, rest = uv_platform.partition("-")
    if rest.startswith("manylinux"):
        return f"{rest}_{arch}"
    if "apple-darwin" in rest:
        return "macosx_11_0_arm64" if arch == "aarch64" else "macosx_11_0_x86_64"
    return "win_amd64"


def install_lock(installer: str, target: Target, lock_path: Path, reinstall: list[str] | None = None) -> None:
    """Install exactly the packages of ``lock_path`` (a pylock.toml), each file's hash checked;
    ``reinstall``: packages to install again even though their version is already there (another
    file of the same version)."""
    reinstall = sorted(set(reinstall or []))
    if installer == "uv":
        cmd = [uv_binary(), "pip", "install", "--no-config", "--quiet", "--python", target.python,
               "-r", str(lock_path)]
        for name in reinstall:
            cmd += ["--reinstall-package", name]
    else:
        cmd = [sys.executable, "-m", "pip", "--python", target.python, "install", "--quiet",
               "--no-deps", "-r", str(lock_path)]
        if reinstall:
            run_tool([sys.executable, "-m", "pip", "--python", target.python, "uninstall", "--yes",
                      "--quiet", *reinstall], "removing packages to reinstall")
    from lmdev.secure import audit  # the audit record of this install, written before it runs

    audit.record("setup.install", installer=installer, python=target.python, lock=str(lock_path.absolute()))
    run_tool(cmd, "installing")


def sync_lock(installer: str, target: Target, lock_path: Path, reinstall: list[str] | None = None) -> None:
    """Make the environment hold exactly ``lock_path``: install it, then remove what it does not list
    (pip's own tools stay). uv does both in one step (``uv pip sync``)."""
    reinstall = sorted(set(reinstall or []))
    if installer == "uv":
        cmd = [uv_binary(), "pip", "sync", "--no-config", "--quiet", "--preview-features", "pylock",
               "--python", target.python, str(lock_path)]
        for name in reinstall:
            cmd += ["--reinstall-package", name]
        run_tool(cmd, "installing")
        return
    install_lock(installer, target, lock_path, reinstall)
    from lmdev.setup.lock import read_lock

    locked = set(read_lock(lock_path).pins())
    extra = sorted(n for n in installed(target.prefix) if n not in locked and n not in TOOLS)
    if extra:
        run_tool([sys.executable, "-m", "pip", "--python", target.python, "uninstall", "--yes", "--quiet",
                  *extra], "removing packages the lock does not list")


def install_from_folder(installer: str, target: Target, requirements: Path, folder: Path) -> None:
    """Install a hashed requirements file from a folder of wheels, touching no network."""
    if installer == "uv":
        cmd = [uv_binary(), "pip", "install", "--no-config", "--quiet", "--offline", "--python",
               target.python, "--no-index", "--find-links", str(folder), "--require-hashes",
               "--no-deps", "-r", str(requirements)]
    else:
        cmd = [sys.executable, "-m", "pip", "--python", target.python, "install", "--quiet",
               "--no-index", "--find-links", str(folder), "--require-hashes", "--no-deps",
               "-r", str(requirements)]
    from lmdev.secure import audit  # the audit record of this install
    audit.record("setup.install", installer=installer, python=target.python, requirements=str(requirements.absolute()),
                 wheels=str(folder.absolute()), offline=True)
    run_tool(cmd, "installing from the bundle")


def installed(prefix: Path) -> dict[str, str]:
    """Normalised name -> version of every distribution in the environment at ``prefix``, read
    from the .dist-info folder names (no interpreter started)."""
    out: dict[str, str] = {}
    for sp in site_packages(prefix):
        for d in sp.glob("*.dist-info"):
            name, _, version = d.name[: -len(".dist-info")].partition("-")
            if version:
                out[normalise(name)] = version
    return out
