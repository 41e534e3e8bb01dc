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

import atexit
import hashlib
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from lmdev import names
from lmdev.errors import LmdevError
from lmdev.secure.redact import redact_argv, redact_value
from lmdev.track.run import LmdevWarning, Run, _jsonable
from lmdev.track.store import Store, StoreUnavailable, hostname
from lmdev.track.types import RunInfo

_FRAMEWORKS = ("torch", "tensorflow", "keras", "jax", "lightning", "pytorch-lightning",
               "transformers", "numpy")

_runs: list[Run] = []
_lock = threading.Lock()
_hooks_installed = False
_uncaught = False


def _env_int(*names: str, default: int = 0) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)  # type: ignore[arg-type]
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
         log_all_ranks: bool = False, run_id: str | None = None) -> Run:
    """Start a run (or, with ``run_id`` / ``$LMDEV_RUN_ID``, attach to one) and make it active.

    ``config`` is a dict, a dataclass or an argparse Namespace (stored as JSON). ``telemetry``
    samples the system every ``telemetry_interval`` seconds (default on; off when attaching or
    with LMDEV_TELEMETRY=0). Metrics are written every ``flush_interval`` seconds.
    Raises LmdevError if the store is corrupt or from a newer lmdev, and ``lmdev.names.InvalidName``
    (an LmdevError and a ValueError) for a run id, name, project or tag lmdev does not accept;
    if the store merely cannot be written, warns once and returns a run that records nothing,
    so training goes on.
    """
    import warnings

    if flush_interval <= 0:
        raise ValueError("flush_interval must be > 0")
    env_id = os.environ.get("LMDEV_RUN_ID") or None
    if run_id is not None:
        names.check_run_id(run_id, "run_id")
    elif env_id is not None:
        names.check_run_id(env_id, "LMDEV_RUN_ID")
    project = names.check_project(project)
    tags = names.check_tags(tags)
    launch_id = _launch_run_id()
    my_rank = rank()
    attached = bool(run_id or env_id)
    rid = run_id or env_id or launch_id or secrets.token_hex(6)
    owner = not attached and my_rank == 0
    if telemetry is None:
        telemetry = os.environ.get("LMDEV_TELEMETRY", "1") not in ("0", "false", "no") and not attached
    commit, dirty = _git(Path.cwd())
    info = RunInfo(
        id=rid, name=names.check_run_name(name or os.environ.get("LMDEV_RUN_NAME") or _default_name()),
        project=project, status="running", start_time=time.time(),
        config=redact_value(_jsonable(config)) if config is not None else {}, tags=tags, parent_id=parent,
        git_commit=commit, git_dirty=dirty,
        host=hostname(), pid=os.getpid(), lmdev_version=_lmdev_version(),
        framework_versions=_versions(), command=redact_argv([sys.executable, *sys.argv]),
    )
    if not isinstance(info.config, dict):
        info.config = {"config": info.config}
    try:
        store: Store | None = Store(home)
    except StoreUnavailable as exc:
        warnings.warn(f"lmdev: {exc}; training continues but this run is not recorded",
                      LmdevWarning, stacklevel=2)
        store = None
    pid_start = _pid_start()
    run = Run(info, store, rank=my_rank, owner=owner, log_metrics=my_rank == 0 or log_all_ranks,
              flush_interval=flush_interval, pid_start=pid_start)
    if store is not None and owner and launch_id is not None:
        # another rank may have created the row first: make it ours
        run._write_run(lambda s: s.update_run(run._rid, name=info.name, config=info.config,
                                              pid=info.pid, pid_start=pid_start, command=info.command))
    if store is not None:
        try:
            store.reap()  # runs of this store whose process died are marked killed
        except LmdevError:
            pass
    if telemetry:
        from lmdev.track.telemetry import Sampler

        run._sampler = Sampler(run._add_system, interval=telemetry_interval, rank=my_rank,
                               host=local_rank() == 0).start()
    with _lock:
        _runs.append(run)
    _install_hooks()
    return run


def _lmdev_version() -> str:
    from lmdev import __version__

    return __version__


def _pid_start() -> float | None:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:
        return None


def active_run() -> Run | None:
    """The newest unfinished run started in this process, if any."""
    with _lock:
        return _runs[-1] if _runs else None


def _forget(run: Run) -> None:
    with _lock:
        if run in _runs:
            _runs.remove(run)


def log(data: Mapping[str, Any], step: int | None = None) -> None:
    """``run.log(data, step)`` on the active run."""
    run = active_run()
    if run is None:
        raise LmdevError("lmdev.log() called with no active run", "call lmdev.init() first")
    run.log(data, step)


def finish(status: str = "finished") -> None:
    """Finish the active run (no-op without one)."""
    run = active_run()
    if run is not None:
        run.finish(status)


def _at_exit() -> None:
    while True:
        run = active_run()
        if run is None:
            return
        try:
            run.finish("failed" if _uncaught else "finished")
        except Exception:
            _forget(run)


def _after_fork_in_child() -> None:
    global _runs, _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    for run in _runs:
        run._after_fork()
    _runs = []


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
    previous = sys.excepthook

    def hook(exc_type: Any, exc: Any, tb: Any) -> None:
        global _uncaught
        _uncaught = True
        run = active_run()
        if run is not None:
            run.event(f"{exc_type.__name__}: {exc}", level="error")
        previous(exc_type, exc, tb)

    sys.excepthook = hook
