"""Offline bundles: a tar of the lock's wheels (each sha256 checked), the locks and the plan, which
installs on a machine with no network at all (``--no-index --find-links``).

Stable API (used by ``lmdev remote``)::

    build_bundle(out: Path, project: Path, profile: str | None = None) -> BundleInfo
    install_from_bundle(tar: Path, opts: SetupOptions) -> SetupResult
    install_bundle(tar: Path, venv: Path, project: Path | None = None, *, verify=True,
                   installer="uv") -> SetupResult

Layout of the tar: ``manifest.json`` (format, python, platform, environments -> lock and
requirements file, every wheel with its sha256), ``setup-plan.json``, ``pylock*.toml``,
``requirements.<env>.txt`` (``name==version --hash=sha256:...``) and ``wheels/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform as _platform
import shutil
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging import tags
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

from lmdev.errors import LmdevError
from lmdev.fsutil import atomic_write_text
from lmdev.setup.lock import (
    PLAN_FILE,
    Lock,
    lock_name,
    plan_file,
    read_lock,
    read_plan_record,
)
from lmdev.setup.plan import SetupPlan

if TYPE_CHECKING:
    from lmdev.setup.engine import SetupOptions, SetupResult

FORMAT = "lmdev-setup-bundle/1"


@dataclass
class BundleInfo:
    path: str
    environments: list[str]
    wheels: int
    bytes: int


def _platform_tags(platform: str | None) -> list[str]:
    """Platform tags a wheel may carry for ``platform`` (uv's --python-platform), or this machine's."""
    if not platform:
        if sys.platform.startswith("linux"):
            arch = _platform.machine()
            libc = _platform.libc_ver()[1] or "2.28"
            minor = int(libc.split(".")[1]) if "." in libc else 28
            return _linux_tags(arch, minor)
        return [t.platform for t in tags.sys_tags()]
    arch, _, rest = platform.partition("-")
    if rest.startswith("manylinux"):
        return _linux_tags(arch, int(rest.rsplit("_", 1)[-1]))
    if "apple-darwin" in rest:
        mac_arch = "arm64" if arch == "aarch64" else "x86_64"
        return list(tags.mac_platforms((14, 0), mac_arch))
    return ["win_amd64"]


def _linux_tags(arch: str, glibc_minor: int) -> list[str]:
    out = [f"manylinux_2_{m}_{arch}" for m in range(glibc_minor, 16, -1)]
    out += [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}", f"linux_{arch}"]
    return out


def supported_tags(python: str, platform: str | None) -> set[tags.Tag]:
    major, minor = (int(x) for x in python.split(".")[:2])
    plats = _platform_tags(platform)
    found = set(tags.cpython_tags((major, minor), platforms=plats))
    found |= set(tags.compatible_tags((major, minor), platforms=plats))
    return found


def _fits(filename: str, supported: set[tags.Tag]) -> bool:
    try:
        return bool(parse_wheel_filename(filename)[3] & supported)
    except InvalidWheelFilename:
        return False


def _fetch(url: str, dest: Path) -> None:
    if url.startswith("file://"):
        src = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path))
        try:
            shutil.copyfile(src, dest)
        except OSError as exc:
            raise LmdevError(f"cannot read {url}: {exc}", "re-lock with `lmdev setup`") from None
        return
    try:
        with urllib.request.urlopen(url, timeout=120) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except OSError as exc:
        raise LmdevError(f"cannot download {url}: {exc}",
                         "check the network, or build the bundle where the index is reachable") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _collect_wheels(lock: Lock, wheels_dir: Path, supported: set[tags.Tag]) -> tuple[list[str], dict[str, str]]:
    """Copy each package's fitting wheel into ``wheels_dir``; the requirement lines and the files."""
    lines, files = [], {}
    for pkg in sorted(lock.packages, key=lambda p: p["name"]):
        fitting = [w for w in pkg.get("wheels", []) if _fits(_wheel_name(w), supported)]
        if not fitting:
            raise LmdevError(f"the lock has no wheel of {pkg['name']} {pkg['version']} for this platform",
                             "bundles hold wheels only: re-lock for the target with `--for PROFILE`")
        wheel = fitting[0]
        name, want = _wheel_name(wheel), wheel.get("hashes", {}).get("sha256")
        dest = wheels_dir / name
        _fetch(str(wheel.get("url") or wheel.get("path")), dest)
        got = _sha256(dest)
        if want and got != want:
            raise LmdevError(f"{name}: sha256 {got[:12]}… differs from the lock's {want[:12]}…",
                             "refusing to bundle a changed file; check the index, or re-lock")
        files[name] = got
        lines.append(f"{pkg['name']}=={pkg['version']} --hash=sha256:{got}")
    return lines, files


def _wheel_name(entry: dict) -> str:
    return str(entry.get("name") or urllib.parse.unquote(str(entry.get("url") or entry.get("path")).rsplit("/", 1)[-1]))


def build_bundle(out: Path, project: Path, profile: str | None = None) -> BundleInfo:
    """Write the wheelhouse of the project's lock(s) (or of ``--for profile``'s locks) to ``out``."""
    record = read_plan_record(project, profile)
    if not record.get("plan"):
        raise LmdevError(f"no setup plan in {project}" + (f" for {profile}" if profile else ""),
                         "run `lmdev setup` (or `lmdev setup --for PROFILE`) first")
    plan = SetupPlan.from_dict(record["plan"])
    with tempfile.TemporaryDirectory(prefix="lmdev-bundle-") as tmp:
        stage = Path(tmp)
        (stage / "wheels").mkdir()
        manifest: dict = {"format": FORMAT, "python": plan.python, "environments": {}, "files": {}}
        for env in plan.environments:
            name = env.name if not profile else (profile if env.name == "main" else f"{profile}-{env.name}")
            lock = read_lock(project / lock_name(name))
            supported = supported_tags(lock.tool.get("python", plan.python), lock.tool.get("platform"))
            lines, files = _collect_wheels(lock, stage / "wheels", supported)
            req = f"requirements.{env.name}.txt"
            atomic_write_text(stage / req, "\n".join(lines) + "\n")
            shutil.copyfile(project / lock_name(name), stage / lock_name(env.name))
            manifest["environments"][env.name] = {"lock": lock_name(env.name), "requirements": req,
                                                  "python": lock.tool.get("python", plan.python),
                                                  "platform": lock.tool.get("platform")}
            manifest["files"].update(files)
        shutil.copyfile(project / plan_file(profile), stage / PLAN_FILE)
        atomic_write_text(stage / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return _write_tar(out, stage, manifest)


def _write_tar(out: Path, stage: Path, manifest: dict) -> BundleInfo:
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".part", dir=out.parent)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w") as tar:
            for path in sorted(stage.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(stage)))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return BundleInfo(str(out), sorted(manifest["environments"]), len(manifest["files"]), out.stat().st_size)


def open_bundle(tar_path: Path, dest: Path) -> dict:
    """Extract ``tar_path`` into ``dest`` safely and check every wheel's sha256; the manifest."""
    try:
        with tarfile.open(tar_path) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # Python before 3.11.4 / 3.10.12 (Debian 12's 3.11.2): the same refusals by hand
                for m in tar.getmembers():
                    if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in Path(m.name).parts:
                        raise LmdevError(f"{tar_path}: unsafe member {m.name!r}", "rebuild it with `lmdev setup bundle`")
                tar.extractall(dest)
    except (OSError, tarfile.TarError) as exc:
        raise LmdevError(f"cannot read the bundle {tar_path}: {exc}", "rebuild it with `lmdev setup bundle`") from None
    try:
        manifest = json.loads((dest / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise LmdevError(f"{tar_path} is not an lmdev setup bundle (no manifest.json)",
                         "rebuild it with `lmdev setup bundle`") from None
    if manifest.get("format") != FORMAT:
        raise LmdevError(f"{tar_path}: unknown bundle format {manifest.get('format')!r}", f"expected {FORMAT}")
    for name, sha in manifest["files"].items():
        path = dest / "wheels" / name
        if not path.is_file() or _sha256(path) != sha:
            raise LmdevError(f"bundle file {name} is missing or its sha256 differs from the manifest",
                             "the bundle was changed or truncated: rebuild it")
    return manifest


def install_from_bundle(tar_path: Path, opts: SetupOptions) -> SetupResult:
    """Install the bundle's environments into ``opts``'s target with no network; then verify."""
    from lmdev.setup import installer as inst
    from lmdev.setup.engine import (
        EnvResult,
        SetupResult,
        diff,
        env_prefix,
        venv_python_version,
        verify_env,
    )
    from lmdev.setup.verify import python_of

    with tempfile.TemporaryDirectory(prefix="lmdev-unbundle-") as tmp:
        stage = Path(tmp)
        manifest = open_bundle(tar_path, stage)
        plan = SetupPlan.from_dict(json.loads((stage / PLAN_FILE).read_text(encoding="utf-8"))["plan"])
        results = []
        for env in plan.environments:
            info = manifest["environments"][env.name]
            prefix = env_prefix(opts, env)
            if not opts.system and not (prefix / "pyvenv.cfg").is_file():
                inst.create_venv(prefix, info["python"], opts.installer, offline=True)
            have = venv_python_version(prefix) if not opts.system else f"{sys.version_info[0]}.{sys.version_info[1]}"
            if have and have != info["python"]:
                raise LmdevError(f"the bundle is for Python {info['python']}; {prefix} has Python {have}",
                                 f"use a new --venv with --python {info['python']}")
            python = python_of(prefix) if not opts.system else sys.executable
            before = inst.installed(prefix)
            inst.install_from_folder(opts.installer, inst.Target(python, info["python"], prefix),
                                     stage / info["requirements"], stage / "wheels")
            for f in (info["lock"],):
                shutil.copyfile(stage / f, opts.project / f)
            res = EnvResult(env.name, str(prefix), str(opts.project / info["lock"]), "from-bundle",
                            diff(before, inst.installed(prefix)))
            if opts.verify:
                res.verification = verify_env(python, env, plan, opts.verify_timeout)
            results.append(res)
        shutil.copyfile(stage / PLAN_FILE, opts.project / PLAN_FILE)
        return SetupResult(plan, results)



def install_bundle(tar_path: Path, venv: Path, project: Path | None = None, *, verify: bool = True,
                   installer: str = "uv") -> SetupResult:
    """Install ``tar_path`` into the virtual environment ``venv`` (created when missing) with no
    network; the lock and plan are copied to ``project`` (default: ``venv``'s parent folder)."""
    from lmdev.setup.engine import SetupOptions

    opts = SetupOptions(project=project or venv.parent, venv=venv, verify=verify, installer=installer)
    return install_from_bundle(tar_path, opts)


def build_lock_bundle(out: Path, lock: Lock, env: str = "main") -> BundleInfo:
    """A bundle of one lock, with no setup plan: the same format, the same sha256 checks (``lmdev
    remote`` ships lmdev's own dependencies to a host without an index this way). The lock's
    ``[tool.lmdev]`` table names the target's ``python`` and ``platform``."""
    from lmdev.setup.lock import write_lock

    python = str(lock.tool.get("python") or f"{sys.version_info[0]}.{sys.version_info[1]}")
    with tempfile.TemporaryDirectory(prefix="lmdev-bundle-") as tmp:
        stage = Path(tmp)
        (stage / "wheels").mkdir()
        lines, files = _collect_wheels(lock, stage / "wheels", supported_tags(python, lock.tool.get("platform")))
        req = f"requirements.{env}.txt"
        atomic_write_text(stage / req, "\n".join(lines) + "\n")
        write_lock(stage / lock_name(env), lock)
        manifest = {"format": FORMAT, "python": python, "files": files,
                    "environments": {env: {"lock": lock_name(env), "requirements": req, "python": python,
                                           "platform": lock.tool.get("platform")}}}
        atomic_write_text(stage / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return _write_tar(out, stage, manifest)
