"""``lmdev setup`` end to end: target -> facts -> plan -> resolve -> pin check -> lock -> install ->
verify. Each environment of the plan gets its own lock and its own record.

Nothing is installed until everything is resolved, the torch family's index is checked and the
lock is written; the installer then downloads every file before it changes the environment, so a
failure (unreachable index, hash mismatch, no solution) leaves the previous environment as it was.
"""

from __future__ import annotations

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
from lmdev.setup.verify import Verification, frameworks_to_verify, python_of, verify

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
    facts: Any = None  # doctor's Facts (collected when None)


@dataclass
class EnvResult:
    name: str
    prefix: str | None
    lock: str
    action: str  # no-op, installed, locked (another machine), frozen
    changes: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # name, before, after
    verification: Verification | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "prefix": self.prefix, "lock": self.lock, "action": self.action,
                "changes": [{"package": n, "before": b, "after": a} for n, b, a in self.changes],
                "verification": self.verification.to_dict() if self.verification else None}


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
        facts = opts.facts or machine_facts()
        prefix = target_prefix(opts)
        python = (opts.python or venv_python_version(prefix)
                  or (_here_python() if opts.system else None) or _here_python())
        profile = profile_from_facts(facts).with_python(python)
        if opts.facts is None and sys.platform.startswith("linux"):  # this machine: its C library too
            import dataclasses
            import platform

            profile = dataclasses.replace(profile, glibc=platform.libc_ver()[1] or None)
    return make_plan(profile, opts.stacks or sources.stacks, sources.torch_index), profile


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
    else:
        record = {r.name: r.verification.to_dict() for r in results if r.verification}
        old = read_plan_record(opts.project).get("verification", {})
        write_plan_record(opts.project, plan.to_dict(), {**old, **record})
    return SetupResult(plan, results)


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
    pinned = next((r.pinned_index for r in env.requirements if r.pinned_index), None)
    lock = inst.resolve(opts.installer, target, [r.spec for r in env.requirements],
                        sources.with_torch_index(pinned))
    if pinned:
        from lmdev.setup.pinning import check_pinned

        check_pinned(lock, pinned, next(iter(env.backends.values()), "?") if "torch" not in env.backends
                     else env.backends["torch"])
    return lock


def is_satisfied(lock_path: Path, plan: SetupPlan, prefix: Path) -> bool:
    """Whether the environment already holds exactly what this plan's lock pins."""
    if not lock_path.is_file() or not (prefix / "pyvenv.cfg").is_file() and not prefix.is_dir():
        return False
    lock = read_lock(lock_path)
    if lock.tool.get("plan-digest") != plan.digest():
        return False
    have = inst.installed(prefix)
    return all(have.get(name) == version for name, version in lock.pins().items())


def _setup_env(opts: SetupOptions, plan: SetupPlan, env: EnvPlan, sources: Sources, say: Say) -> EnvResult:
    prefix = env_prefix(opts, env)
    lock_path = opts.project / lock_name(env.name)
    python = python_of(prefix) if not opts.system else sys.executable
    if is_satisfied(lock_path, plan, prefix):
        say(f"{env.name}: {prefix} already matches {lock_path.name}; nothing to install")
        result = EnvResult(env.name, str(prefix), str(lock_path), "no-op")
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
    say(f"{env.name}: resolving {len(env.requirements)} requirement(s) with {opts.installer}")
    lock = _resolve_env(opts, env, target, sources)
    lock.tool = _lock_tool(plan, env, plan.python, None)
    lock.requires_python = f"=={plan.python}.*"
    before = inst.installed(prefix)
    say(f"{env.name}: installing {len(lock.packages)} package(s) into {prefix}")
    install_then_keep_lock(opts.installer, target, lock, lock_path)
    return EnvResult(env.name, str(prefix), str(lock_path), "installed", diff(before, inst.installed(prefix)))


def install_then_keep_lock(installer: str, target: inst.Target, lock: Lock, lock_path: Path) -> None:
    """Install ``lock`` from a staging copy; it replaces ``lock_path`` only once the install
    succeeded, so a failed setup leaves the previous lock (and environment) in place."""
    staging = lock_path.with_name(f"pylock.lmdev-staging-{os.getpid()}.toml")
    write_lock(staging, lock)
    try:
        inst.install_lock(installer, target, staging)
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
        prefix = env_prefix(opts, env)
        python = python_of(prefix) if not opts.system else sys.executable
        if not opts.system and not (prefix / "pyvenv.cfg").is_file():
            inst.create_venv(prefix, lock.tool.get("python"), opts.installer)
        have_py = venv_python_version(prefix) if not opts.system else _here_python()
        if lock.tool.get("python") and have_py and lock.tool["python"] != have_py:
            raise LmdevError(f"{lock_path.name} was made for Python {lock.tool['python']}; {prefix} has Python {have_py}",
                             f"use --python {lock.tool['python']} with a new --venv, or re-lock with `lmdev setup`")
        before = inst.installed(prefix)
        say(f"{env.name}: installing exactly {lock_path.name} into {prefix}")
        inst.install_lock(opts.installer, inst.Target(python, plan.python, prefix), lock_path)
        result = EnvResult(env.name, str(prefix), str(lock_path), "frozen", diff(before, inst.installed(prefix)))
        if opts.verify:
            result.verification = verify_env(python, env, plan, opts.verify_timeout)
        results.append(result)
    return SetupResult(plan, results)


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
        old = record.get("verification", {})
        write_plan_record(opts.project, record["plan"],
                          {**old, **{r.name: r.verification.to_dict() for r in results if r.verification}})
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
