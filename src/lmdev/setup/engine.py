"""``lmdev setup`` end to end: target -> facts -> plan -> resolve -> pin check -> lock -> install ->
verify. Each environment of the plan gets its own lock and its own record.

Nothing is installed until everything is resolved, the torch family's index is checked and the
lock is written; the installer then downloads every file before it changes the environment, so a
failure (unreachable index, hash mismatch, no solution) leaves the previous environment as it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError
from lmdev.setup import installer as inst
from lmdev.setup.config import Sources, load_sources
from lmdev.setup.lock import (
    Lock,
    lock_name,
    read_lock,
    read_plan_record,
    write_lock,
    write_plan_record,
)
from lmdev.setup.plan import EnvPlan, SetupPlan, make_plan
from lmdev.setup.profile import MachineProfile, named_profile, profile_from_facts
from lmdev.setup.state import Difference, compare, installed_dists
from lmdev.setup.verify import Step, Verification, frameworks_to_verify, python_of, verify

UV_PLATFORMS = {("linux", "x86_64"): "x86_64-manylinux_2_28", ("linux", "aarch64"): "aarch64-manylinux_2_28",
                ("darwin", "arm64"): "aarch64-apple-darwin", ("darwin", "x86_64"): "x86_64-apple-darwin",
                ("windows", "x86_64"): "x86_64-pc-windows-msvc", ("windows", "AMD64"): "x86_64-pc-windows-msvc"}


@dataclass
class SetupOptions:
    stacks: list[str] = field(default_factory=list)
    project: Path = field(default_factory=Path.cwd)  # where the locks are written
    venv: Path | None = None
    python: str | None = None
    system: bool = False
    installer: str = "uv"
    for_profile: str | None = None
    platform: str | None = None  # with for_profile: uv's --python-platform (x86_64-manylinux_2_28, ...)
    torch_index: str | None = None
    verify: bool = True
    verify_timeout: float = 180.0
    frozen: bool = False
    upgrade: bool = False  # resolve again even when the lock still fits the plan
    facts: Any = None  # doctor's Facts (collected when None)
    profile: MachineProfile | None = None  # this machine's profile, once read (before --python)


@dataclass
class EnvResult:
    name: str
    prefix: str | None
    lock: str
    action: str  # no-op, installed, locked (another machine), frozen
    changes: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # name, before, after
    verification: Verification | None = None
    verified_before: bool = False  # the verification is the record of an earlier run on this lock
    from_lock: bool = False  # installed from the existing lock (it still fits the plan): no resolve
    differences: list[Difference] = field(default_factory=list)  # --frozen: how it differed from the lock

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "prefix": self.prefix, "lock": self.lock, "action": self.action,
                "changes": [{"package": n, "before": b, "after": a} for n, b, a in self.changes],
                "verification": self.verification.to_dict() if self.verification else None,
                "verified_before": self.verified_before, "from_lock": self.from_lock,
                "differences": [{"package": d.package, "kind": d.kind, "installed": d.installed,
                                 "locked": d.locked, "text": d.describe()} for d in self.differences]}


@dataclass
class SetupResult:
    plan: SetupPlan
    environments: list[EnvResult]

    @property
    def ok(self) -> bool:
        return all(e.verification is None or e.verification.ok for e in self.environments)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "plan": self.plan.to_dict(),
                "environments": [e.to_dict() for e in self.environments]}


Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def target_prefix(opts: SetupOptions, environ: dict[str, str] | None = None) -> Path:
    """The environment setup works on: --venv, else the active one, else ./.venv."""
    environ = dict(os.environ) if environ is None else environ
    if opts.system:
        return Path(sys.prefix)
    if opts.venv:
        return opts.venv.resolve()
    if environ.get("VIRTUAL_ENV"):
        return Path(environ["VIRTUAL_ENV"]).resolve()
    return (opts.project / ".venv").resolve()


def venv_python_version(prefix: Path) -> str | None:
    """The Python version of the virtual environment at ``prefix`` (from pyvenv.cfg), or None."""
    cfg = prefix / "pyvenv.cfg"
    if not cfg.is_file():
        return None
    for line in cfg.read_text(encoding="utf-8", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version_info", "version"):
            return ".".join(value.strip().split(".")[:2])
    return None


def plan_for(opts: SetupOptions, sources: Sources) -> tuple[SetupPlan, MachineProfile]:
    """The plan for this machine (or --for's profile) and the target's Python."""
    if opts.for_profile:
        profile = named_profile(opts.for_profile, opts.python or _here_python())
    else:
        prefix = target_prefix(opts)
        python = (opts.python or venv_python_version(prefix)
                  or (_here_python() if opts.system else None) or _here_python())
        profile = machine_profile(opts).with_python(python)
    return make_plan(profile, opts.stacks or sources.stacks, sources.torch_index), profile


def machine_profile(opts: SetupOptions) -> MachineProfile:
    """This machine's profile, read once per run (from ``opts.facts`` when given)."""
    if opts.profile is None:
        profile = profile_from_facts(opts.facts or machine_facts())
        if opts.facts is None and sys.platform.startswith("linux"):  # this machine: its C library too
            import dataclasses
            import platform

            profile = dataclasses.replace(profile, glibc=platform.libc_ver()[1] or None)
        opts.profile = profile
    return opts.profile


def machine_facts() -> Any:
    """The facts the planner reads (host and accelerators), without doctor's software scan."""
    from lmdev.probe.gpu import collect_accelerators
    from lmdev.probe.host import collect_host
    from lmdev.probe.source import LocalSource, guarded
    from lmdev.probe.types import AcceleratorFacts, Facts, HostFacts

    src = LocalSource()
    errors: list[Any] = []
    return Facts(host=guarded("host", lambda: collect_host(src, errors), HostFacts(), errors),
                 accelerators=guarded("accelerators", lambda: collect_accelerators(src, errors),
                                      AcceleratorFacts(), errors))


def _here_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def dry_run(opts: SetupOptions) -> SetupPlan:
    return plan_for(opts, load_sources(opts.project, flags={"torch-index": opts.torch_index}))[0]


def run_setup(opts: SetupOptions, say: Say = _quiet) -> SetupResult:
    """Plan, install, lock and verify (see the module's docstring)."""
    sources = load_sources(opts.project, flags={"torch-index": opts.torch_index})
    if opts.frozen:
        return run_frozen(opts, say)
    plan, profile = plan_for(opts, sources)
    results = []
    for env in plan.environments:
        if opts.for_profile:
            results.append(_lock_for_profile(opts, plan, env, profile, sources, say))
        else:
            results.append(_setup_env(opts, plan, env, sources, say))
    if opts.for_profile:
        write_plan_record(opts.project, plan.to_dict(), {}, opts.for_profile)
    elif any(r.verification and not r.verified_before for r in results) or \
            read_plan_record(opts.project).get("plan") != plan.to_dict():
        save_verifications(opts.project, plan.to_dict(), results)
    return SetupResult(plan, results)


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def save_verifications(project: Path, plan: dict[str, Any], results: list[EnvResult]) -> None:
    """Save each environment's verification with the plan, tied to the lock it verified."""
    record = {r.name: {**r.verification.to_dict(), "lock-sha256": file_sha256(Path(r.lock))}
              for r in results if r.verification}
    old = read_plan_record(project).get("verification", {})
    write_plan_record(project, plan, {**old, **record})


def earlier_verification(project: Path, env: EnvPlan, lock_path: Path) -> Verification | None:
    """The passing verification an earlier run saved for exactly this lock, if any."""
    saved = read_plan_record(project).get("verification", {}).get(env.name)
    if not saved or not saved.get("ok") or saved.get("lock-sha256") != file_sha256(lock_path):
        return None
    try:
        return Verification(saved["python"], [Step(**step) for step in saved["steps"]])
    except (KeyError, TypeError):
        return None


def env_prefix(opts: SetupOptions, env: EnvPlan) -> Path:
    base = target_prefix(opts)
    return Path(str(base) + env.suffix) if env.suffix else base


def _lock_tool(plan: SetupPlan, env: EnvPlan, python: str, platform: str | None) -> dict[str, Any]:
    tool: dict[str, Any] = {"environment": env.name, "python": python, "plan-digest": plan.digest(),
                            "backends": dict(sorted(env.backends.items()))}
    if platform:
        tool["platform"] = platform
    if env.env_vars:
        tool["env"] = dict(sorted(env.env_vars.items()))
    return tool


def _resolve_env(opts: SetupOptions, env: EnvPlan, target: inst.Target, sources: Sources) -> Lock:
    """Resolve the environment's requirements; the pinned index's pages of the torch family are
    read while the resolver works, and every torch-family file of the result checked against them."""
    pinned = next((r.pinned_index for r in env.requirements if r.pinned_index), None)
    pages = None
    if pinned:
        from lmdev.setup.pinning import check_pinned, prefetch

        pages = prefetch(pinned, [r.name for r in env.requirements if r.pinned_index])
    lock = inst.resolve(opts.installer, target, [r.spec for r in env.requirements],
                        sources.with_torch_index(pinned))
    if pinned and pages:
        check_pinned(lock, pinned, next(iter(env.backends.values()), "?") if "torch" not in env.backends
                     else env.backends["torch"], pages())
    return lock


def lock_fits(lock_path: Path, plan: SetupPlan, sources: Sources) -> Lock | None:
    """The lock at ``lock_path`` when it was made for this plan from these sources, else None."""
    if not lock_path.is_file():
        return None
    try:
        lock = read_lock(lock_path)
    except LmdevError:
        return None
    fits = lock.tool.get("plan-digest") == plan.digest() and lock.tool.get("sources") == sources.digest()
    return lock if fits else None


def is_satisfied(lock_path: Path, plan: SetupPlan, prefix: Path, sources: Sources) -> bool:
    """Whether the environment already holds every package of this plan's lock, each the very
    version and file the lock names (other packages may be there too)."""
    if not (prefix / "pyvenv.cfg").is_file() and not prefix.is_dir():
        return False
    lock = lock_fits(lock_path, plan, sources)
    return lock is not None and not compare(lock, installed_dists(prefix), exact=False)


def noop_result(opts: SetupOptions) -> SetupResult | None:
    """The result of a plain ``lmdev setup`` when it has nothing to do: every environment holds
    its lock and (unless verification is off) an earlier run verified that lock. None otherwise."""
    if opts.for_profile or opts.frozen or opts.upgrade:
        return None
    sources = load_sources(opts.project, flags={"torch-index": opts.torch_index})
    plan, _ = plan_for(opts, sources)
    results = []
    for env in plan.environments:
        prefix, lock_path = env_prefix(opts, env), opts.project / lock_name(env.name)
        if not is_satisfied(lock_path, plan, prefix, sources):
            return None
        result = EnvResult(env.name, str(prefix), str(lock_path), "no-op")
        if opts.verify:
            result.verification = earlier_verification(opts.project, env, lock_path)
            if result.verification is None:
                return None
            result.verified_before = True
        results.append(result)
    return SetupResult(plan, results)


def _setup_env(opts: SetupOptions, plan: SetupPlan, env: EnvPlan, sources: Sources, say: Say) -> EnvResult:
    prefix = env_prefix(opts, env)
    lock_path = opts.project / lock_name(env.name)
    python = python_of(prefix) if not opts.system else sys.executable
    if not opts.upgrade and is_satisfied(lock_path, plan, prefix, sources):
        say(f"{env.name}: {prefix} already matches {lock_path.name}; nothing to install")
        result = EnvResult(env.name, str(prefix), str(lock_path), "no-op")
        earlier = earlier_verification(opts.project, env, lock_path) if opts.verify else None
        if earlier:
            result.verification, result.verified_before = earlier, True
            return result
    else:
        created = not opts.system and not (prefix / "pyvenv.cfg").is_file() and not prefix.exists()
        if not opts.system and not (prefix / "pyvenv.cfg").is_file():
            say(f"creating the virtual environment {prefix} (Python {plan.python})")
            inst.create_venv(prefix, opts.python or plan.python, opts.installer)
        try:
            result = _resolve_and_install(opts, plan, env, sources, prefix, say)
        except BaseException:
            if created:  # a venv this run made and could not fill: leave nothing behind
                shutil.rmtree(prefix, ignore_errors=True)
            raise
    if opts.verify:
        say(f"{env.name}: verifying")
        result.verification = verify_env(python, env, plan, opts.verify_timeout)
    return result


def _resolve_and_install(opts: SetupOptions, plan: SetupPlan, env: EnvPlan, sources: Sources,
                         prefix: Path, say: Say) -> EnvResult:
    lock_path = opts.project / lock_name(env.name)
    python = python_of(prefix) if not opts.system else sys.executable
    target = inst.Target(python, plan.python, prefix)
    before = inst.installed(prefix)
    kept = None if opts.upgrade else lock_fits(lock_path, plan, sources)
    if kept is not None:  # the lock was made for this very plan and these sources: install it as is
        say(f"{env.name}: installing {len(kept.packages)} package(s) from {lock_path.name} into {prefix}")
        inst.install_lock(opts.installer, target, lock_path, reinstall=_other_files(kept, prefix))
        return EnvResult(env.name, str(prefix), str(lock_path), "installed",
                         diff(before, inst.installed(prefix)), from_lock=True)
    say(f"{env.name}: resolving {len(env.requirements)} requirement(s) with {opts.installer}")
    inst.prepare_audit()  # the install's audit record is written before it runs: its imports overlap the resolve
    lock = _resolve_env(opts, env, target, sources)
    lock.tool = {**_lock_tool(plan, env, plan.python, None), "sources": sources.digest()}
    lock.requires_python = f"=={plan.python}.*"
    say(f"{env.name}: installing {len(lock.packages)} package(s) into {prefix}")
    install_then_keep_lock(opts.installer, target, lock, lock_path)
    return EnvResult(env.name, str(prefix), str(lock_path), "installed", diff(before, inst.installed(prefix)))


def _other_files(lock: Lock, prefix: Path) -> list[str]:
    """Packages installed at the lock's version but from another file or source: an installer
    that compares versions only would keep them."""
    return [d.package for d in compare(lock, installed_dists(prefix), exact=False) if d.kind in ("file", "source")]


def install_then_keep_lock(installer: str, target: inst.Target, lock: Lock, lock_path: Path) -> None:
    """Install ``lock`` from a staging copy; it replaces ``lock_path`` only once the install
    succeeded, so a failed setup leaves the previous lock (and environment) in place."""
    staging = lock_path.with_name(f"pylock.lmdev-staging-{os.getpid()}.toml")
    write_lock(staging, lock)
    try:
        inst.install_lock(installer, target, staging, reinstall=_other_files(lock, target.prefix))
        os.replace(staging, lock_path)
    finally:
        staging.unlink(missing_ok=True)


def verify_env(python: str, env: EnvPlan, plan: SetupPlan, timeout: float) -> Verification:
    vendors = {g["vendor"] for g in plan.machine.get("gpus", [])}
    expect = "nvidia" if "nvidia" in vendors and env.backends.get("torch", "").startswith("cu") else None
    prefix = Path(python).parent.parent
    packages = inst.installed(prefix) if (prefix / "pyvenv.cfg").is_file() else None
    return verify(python, frameworks_to_verify(env.backends, env.env_vars), expect_gpu=expect,
                  env_vars=env.env_vars, timeout=timeout, packages=packages)


def diff(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str | None, str | None]]:
    names = sorted(set(before) | set(after))
    return [(n, before.get(n), after.get(n)) for n in names if before.get(n) != after.get(n)]


def _lock_for_profile(opts: SetupOptions, plan: SetupPlan, env: EnvPlan, profile: MachineProfile,
                      sources: Sources, say: Say) -> EnvResult:
    platform = opts.platform or UV_PLATFORMS.get((profile.os, profile.arch))
    if not platform:
        raise LmdevError(f"cannot lock for {profile.os}/{profile.arch}", "use a Linux, macOS or Windows profile")
    tag = opts.for_profile or profile.name
    name = f"{tag}" if env.name == "main" else f"{tag}-{env.name}"
    lock_path = opts.project / lock_name(name)
    say(f"{env.name}: resolving for {profile.name} ({platform}, Python {profile.python})")
    lock = _resolve_env(opts, env, inst.Target(sys.executable, profile.python, Path(sys.prefix), platform), sources)
    lock.tool = _lock_tool(plan, env, profile.python, platform)
    lock.requires_python = f"=={profile.python}.*"
    write_lock(lock_path, lock)
    return EnvResult(env.name, None, str(lock_path), "locked")


def run_frozen(opts: SetupOptions, say: Say = _quiet) -> SetupResult:
    """Install exactly the project's lock(s); refuse a lock made for another Python or a file whose
    hash differs."""
    record = read_plan_record(opts.project)
    if not record.get("plan"):
        raise LmdevError(f"no setup plan in {opts.project}", "run `lmdev setup` first (it writes the lock and its plan)")
    plan = SetupPlan.from_dict(record["plan"])
    results = []
    for env in plan.environments:
        lock_path = opts.project / lock_name(env.name)
        lock = read_lock(lock_path)
        refuse_other_python(lock, lock_path, opts.python)
        prefix = env_prefix(opts, env)
        python = python_of(prefix) if not opts.system else sys.executable
        if not opts.system and not (prefix / "pyvenv.cfg").is_file():
            inst.create_venv(prefix, lock.tool.get("python"), opts.installer)
        have_py = venv_python_version(prefix) if not opts.system else _here_python()
        if lock.tool.get("python") and have_py and lock.tool["python"] != have_py:
            raise LmdevError(f"{lock_path.name} was made for Python {lock.tool['python']}; {prefix} has Python {have_py}",
                             f"use --python {lock.tool['python']} with a new --venv, or re-lock with `lmdev setup`")
        result = _install_exactly(opts, lock, lock_path, inst.Target(python, plan.python, prefix), say)
        result.name = env.name
        if opts.verify:
            result.verification = verify_env(python, env, plan, opts.verify_timeout)
        results.append(result)
    return SetupResult(plan, results)


def refuse_other_python(lock: Lock, lock_path: Path, asked: str | None) -> None:
    """--frozen with --python: the lock decides the Python; asking for another one is an error."""
    made_for = lock.tool.get("python")
    if not asked or not made_for or not asked.replace(".", "").isdigit():
        return
    if ".".join(asked.split(".")[:2]) != made_for:
        raise LmdevError(f"{lock_path.name} was made for Python {made_for}; --python asks for {asked}",
                         f"drop --python (a new environment gets Python {made_for}), or re-lock with "
                         f"`lmdev setup --python {asked}`")


def _install_exactly(opts: SetupOptions, lock: Lock, lock_path: Path, target: inst.Target, say: Say) -> EnvResult:
    """Make the environment hold exactly ``lock``, then check it does: every package the very
    version, file and source the lock names, and nothing else (pip's own tools aside)."""
    prefix = target.prefix
    before_dists = installed_dists(prefix)
    differences = compare(lock, before_dists)
    if not differences:
        say(f"{prefix} already holds exactly {lock_path.name}")
        return EnvResult("", str(prefix), str(lock_path), "no-op")
    say(f"{prefix}: " + "; ".join(d.describe() for d in differences[:5])
        + (f" (+{len(differences) - 5} more)" if len(differences) > 5 else ""))
    say(f"installing exactly {lock_path.name} into {prefix}")
    inst.sync_lock(opts.installer, target, lock_path,
                   reinstall=[d.package for d in differences if d.kind in ("file", "source")])
    left = compare(lock, installed_dists(prefix))
    if left:
        raise FrozenMismatch(lock_path, prefix, left)
    before = {n: d.version for n, d in before_dists.items()}
    return EnvResult("", str(prefix), str(lock_path), "frozen", diff(before, inst.installed(prefix)),
                     differences=differences)


class FrozenMismatch(LmdevError):
    """The environment still differs from the lock after installing it (exit 1: it ran, and the
    result is not what the lock says)."""

    exit_code = 1

    def __init__(self, lock_path: Path, prefix: Path, differences: list[Difference]) -> None:
        self.differences = differences
        super().__init__(f"{prefix} does not match {lock_path.name} after installing it: "
                         + "; ".join(d.describe() for d in differences),
                         "the installer did not install the lock's files; run with --installer uv, or "
                         "recreate the environment (a new --venv)")


def verify_only(opts: SetupOptions) -> SetupResult:
    """``lmdev setup --verify``: climb the ladder in the target environment, install nothing."""
    sources = load_sources(opts.project, flags={"torch-index": opts.torch_index})
    record = read_plan_record(opts.project)
    plan = SetupPlan.from_dict(record["plan"]) if record.get("plan") and not opts.stacks else plan_for(opts, sources)[0]
    results = []
    for env in plan.environments:
        prefix = env_prefix(opts, env)
        python = python_of(prefix) if not opts.system else sys.executable
        if not Path(python).exists():
            raise LmdevError(f"no environment at {prefix}", "run `lmdev setup` first, or pass --venv PATH")
        res = EnvResult(env.name, str(prefix), str(opts.project / lock_name(env.name)), "verified")
        res.verification = verify_env(python, env, plan, opts.verify_timeout)
        results.append(res)
    if record.get("plan") and not opts.stacks:  # the record saved with the lock
        save_verifications(opts.project, record["plan"], results)
    return SetupResult(plan, results)


def preview_changes(opts: SetupOptions) -> list[tuple[str, str | None, str | None]]:
    """What setup would change in the target environment(s): resolved, nothing installed."""
    sources = load_sources(opts.project, flags={"torch-index": opts.torch_index})
    plan, _ = plan_for(opts, sources)
    changes: list[tuple[str, str | None, str | None]] = []
    for env in plan.environments:
        prefix = env_prefix(opts, env)
        python = python_of(prefix) if not opts.system else sys.executable
        lock = _resolve_env(opts, env, inst.Target(python, plan.python, prefix), sources)
        have = inst.installed(prefix)
        changes += [(n, have.get(n), v) for n, v in sorted(lock.pins().items()) if have.get(n) != v]
    return changes
