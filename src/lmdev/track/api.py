"""The tracking API: ``lmdev.init()``, ``lmdev.log()``, ``lmdev.finish()``.

``init`` opens the store under ``LMDEV_HOME`` and starts a run (a writer thread, and a telemetry
sampler unless turned off). The newest unfinished run of this process is the *active* run that
``lmdev.log`` writes to. At interpreter exit unfinished runs are flushed and finished
(``failed`` if an exception ended the program).

Environment:
  LMDEV_HOME       the store folder (default ./.lmdev)
  LMDEV_RUN_ID     attach to this run instead of starting one (set by ``lmdev run`` for its child)
  LMDEV_TELEMETRY  "0" turns telemetry off by default
  RANK, LOCAL_RANK, WORLD_SIZE  (torchrun) only rank 0 logs metrics unless log_all_ranks=True;
                   the ranks of one launch share one run
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from lmdev import names
from lmdev.errors import LmdevError, LmdevWarning
from lmdev.redact import redact_argv, redact_value
from lmdev.track.run import Run, active_run, finish_previous, jsonable, register
from lmdev.track.store import Store, StoreUnavailable, hostname
from lmdev.track.types import RunInfo

_FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "lightning", "pytorch-lightning",
               "transformers", "numpy")

__all__ = ["init", "log", "finish", "active_run", "split_ref", "rank", "local_rank", "world_size"]


def _env_int(*names: str, default: int = 0) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                pass
    return default


def rank() -> int:
    """This process's global rank in a multi-process launch (0 when not launched so)."""
    return _env_int("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK")


def local_rank() -> int:
    return _env_int("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")


def world_size() -> int:
    return _env_int("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", default=1)


def _launch_run_id() -> str | None:
    """One id shared by the ranks of one torchrun launch (None outside a multi-process launch)."""
    if world_size() <= 1:
        return None
    parts = [os.environ.get(k, "") for k in ("TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT",
                                              "SLURM_JOB_ID")]
    if _env_int("LOCAL_WORLD_SIZE", default=-1) == world_size():  # one node: the launcher's pid
        try:
            import psutil

            parent = psutil.Process(os.getppid())
            parts += [str(parent.pid), f"{parent.create_time():.3f}"]
        except Exception:
            parts.append(str(os.getppid()))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def _git(cwd: Path) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the repository around ``cwd``; None for what cannot be known. Git's
    output is bytes (ref and file names need not be UTF-8): decoded leniently, and a commit
    that is not a hex object id counts as unknown."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, timeout=5)
        if commit.returncode != 0:
            return None, None
        sha = commit.stdout.decode("utf-8", errors="replace").strip()
        if not (len(sha) in (40, 64) and all(c in "0123456789abcdef" for c in sha)):
            return None, None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, timeout=5)
        return sha, bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None, None


def _versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in _FRAMEWORKS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def _default_name() -> str:
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    return script or "run"


def init(name: str | None = None, *, project: str = "default", config: Any = None,
         tags: Sequence[str] = (), parent: str | None = None, home: str | os.PathLike[str] | None = None,
         telemetry: bool | None = None, telemetry_interval: float = 2.0, flush_interval: float = 1.0,
         log_all_ranks: bool = False, run_id: str | None = None, resume: str | None = None,
         fork: str | None = None, reinit: str = "finish_previous", resume_event: bool = True) -> Run:
    """Start a run (or, with ``run_id`` / ``$LMDEV_RUN_ID``, attach to one) and make it active.

    ``config`` is a dict, a dataclass or an argparse Namespace (stored as JSON). ``telemetry``
    samples the system every ``telemetry_interval`` seconds (default on; off when attaching or
    with LMDEV_TELEMETRY=0). Metrics are written every ``flush_interval`` seconds.

    ``resume="RUN"`` (an id, id prefix or name) continues that run in this process: same id and
    name, running again; steps continue after its last one, and a resume event is recorded.
    ``resume="RUN@STEP"`` also drops what it logged past STEP (``Run.rewind``). A run whose
    process is still alive cannot be resumed. ``resume_event=False``: no event now, because the
    caller rewinds itself once it knows the step (the training engine, after its checkpoint).
    ``fork="RUN@STEP"`` starts a new run whose parent is RUN, from its step STEP (default: its
    last step): the new run logs from STEP + 1; its config and name default to the parent's.

    ``reinit``: ``"finish_previous"`` (default) finishes the runs this process started before
    (a notebook cell run twice); ``"create_new"`` keeps them open.
    Raises LmdevError if the store is corrupt or from a newer lmdev, and ``lmdev.names.InvalidName``
    (an LmdevError and a ValueError) for a run id, name, project or tag lmdev does not accept;
    if the store merely cannot be written, warns once and returns a run that records nothing,
    so training goes on.
    """
    if flush_interval <= 0:
        raise ValueError("flush_interval must be > 0")
    if reinit not in ("finish_previous", "create_new"):
        raise ValueError(f"reinit must be 'finish_previous' or 'create_new', not {reinit!r}")
    if resume is not None and fork is not None:
        raise LmdevError("lmdev.init() takes resume= or fork=, not both")
    if reinit == "finish_previous":
        finish_previous()
    if resume is not None:
        return _resume(resume, home, config=config, flush_interval=flush_interval,
                       telemetry=telemetry, telemetry_interval=telemetry_interval, event=resume_event)
    env_id = os.environ.get("LMDEV_RUN_ID") or None
    if run_id is not None:
        names.check_run_id(run_id, "run_id")
    elif env_id is not None:
        names.check_run_id(env_id, "LMDEV_RUN_ID")
    launch_id = _launch_run_id()
    my_rank = rank()
    attached = bool(run_id or env_id)
    rid = run_id or env_id or launch_id or secrets.token_hex(6)
    owner = not attached and my_rank == 0
    if telemetry is None:
        telemetry = _telemetry_default() and not attached
    info = _new_info(rid, name, project, config, tags)
    info.parent_id = parent
    store = _open_store(home, needed=fork is not None)
    fork_from = _fork_point(store, fork, info, config, named=name is not None) \
        if fork is not None and store is not None else None
    pid_start = _pid_start()
    run = Run(info, store, rank=my_rank, owner=owner, log_metrics=my_rank == 0 or log_all_ranks,
              flush_interval=flush_interval, pid_start=pid_start)
    if store is not None and owner and launch_id is not None:
        run.take_over(pid_start)  # another rank may have created the row first: make it ours
    if fork_from is not None:
        run.continue_after(fork_from[1])
        run.event(f"forked from run {fork_from[0]} at step {fork_from[1]}", kind="fork",
                  parent=fork_from[0], step=fork_from[1])
    return _started(run, store, telemetry, telemetry_interval)


def split_ref(ref: str) -> tuple[str, int | None]:
    """``"RUN@STEP"`` -> ("RUN", STEP); ``"RUN"`` -> ("RUN", None)."""
    head, sep, tail = ref.rpartition("@")
    if sep and head and tail.strip().lstrip("-").isdigit():
        step = int(tail)
        if step < 0:
            raise LmdevError(f"the step in {ref!r} is negative", "give RUN@STEP with STEP >= 0")
        return head, step
    return ref, None


def _telemetry_default() -> bool:
    return os.environ.get("LMDEV_TELEMETRY", "1") not in ("0", "false", "no")


def _new_info(rid: str, name: str | None, project: str, config: Any, tags: Sequence[str]) -> RunInfo:
    commit, dirty = _git(Path.cwd())
    info = RunInfo(
        id=rid, name=names.check_run_name(name or os.environ.get("LMDEV_RUN_NAME") or _default_name()),
        project=names.check_project(project), status="running", start_time=time.time(),
        config=redact_value(jsonable(config)) if config is not None else {}, tags=names.check_tags(tags),
        git_commit=commit, git_dirty=dirty,
        host=hostname(), pid=os.getpid(), lmdev_version=_lmdev_version(),
        framework_versions=_versions(), command=redact_argv([sys.executable, *sys.argv]),
    )
    if not isinstance(info.config, dict):
        info.config = {"config": info.config}
    return info


def _open_store(home: str | os.PathLike[str] | None, needed: bool) -> Store | None:
    """The store; None (with a warning) when it cannot be written, unless ``needed``."""
    import warnings

    try:
        return Store(home)
    except StoreUnavailable as exc:
        if needed:
            raise
        warnings.warn(f"lmdev: {exc}; training continues but this run is not recorded",
                      LmdevWarning, stacklevel=3)
        return None


def _fork_point(store: Store, fork: str, info: RunInfo, config: Any, named: bool) -> tuple[str, int]:
    """(parent id, step) of ``fork="RUN[@STEP]"``; the new run's lineage, and its config and
    name unless given (the parent's)."""
    ref, step = split_ref(fork)
    parent = store.get_run(ref)
    if step is None:
        step = store.last_step(parent)
        if step is None:
            raise LmdevError(f"run {parent.id} ({parent.name}) logged nothing to fork from",
                             "give the step: fork='RUN@STEP'")
    info.parent_id, info.fork_step = parent.id, step
    if config is None:
        info.config = dict(parent.config)
    if not named:
        info.name = parent.name
    return parent.id, step


def _resume(ref: str, home: str | os.PathLike[str] | None, *, config: Any, flush_interval: float,
            telemetry: bool | None, telemetry_interval: float, event: bool) -> Run:
    """``init(resume="RUN[@STEP]")``: this process continues the run."""
    ref, step = split_ref(ref)
    store = _open_store(home, needed=True)
    assert store is not None
    try:
        store.reap()  # a crashed process's run is marked killed first
        info = store.get_run(ref)
        if info.status == "running":
            raise LmdevError(f"run {info.id} ({info.name}) is still running (pid {info.pid} on {info.host})",
                             "stop it first, or fork it: lmdev.init(fork=...)")
    except BaseException:
        store.close()
        raise
    info.pid, info.host = os.getpid(), hostname()
    info.command = redact_argv([sys.executable, *sys.argv])
    run = Run(info, store, flush_interval=flush_interval, pid_start=_pid_start(), reopen=True)
    if config is not None:
        run.config.update(config)
    if step is not None:
        run.rewind(step)
    elif event:
        last = run.next_step - 1
        if last >= 0:
            run.rewind(last)
        else:
            run.event("resumed (nothing logged yet)", kind="resume", step=-1, dropped=0)
    if telemetry is None:
        telemetry = _telemetry_default()
    return _started(run, store, telemetry, telemetry_interval)


def _started(run: Run, store: Store | None, telemetry: bool, interval: float) -> Run:
    if store is not None:
        try:
            store.reap()  # runs of this store whose process died are marked killed
        except LmdevError:
            pass
    if telemetry:
        run.start_telemetry(interval, host=local_rank() == 0)
    register(run)
    return run


def _lmdev_version() -> str:
    from lmdev import __version__

    return __version__


def _pid_start() -> float | None:
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:
        return None


def log(data: Mapping[str, Any], step: int | None = None, commit: bool = True) -> None:
    """``run.log(data, step, commit)`` on the active run."""
    run = active_run()
    if run is None:
        raise LmdevError("lmdev.log() called with no active run", "call lmdev.init() first")
    run.log(data, step, commit)


def finish(status: str = "finished") -> None:
    """Finish the active run (no-op without one)."""
    run = active_run()
    if run is not None:
        run.finish(status)
