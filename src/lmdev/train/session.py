"""A training session: the run in the store around ``fit``: create it (or continue it: one
training is one run, however often it is resumed), resolve ``--resume`` / ``--fork``, record the
outcome (finished, killed by a signal, failed)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError
from lmdev.train.config import TrainConfig
from lmdev.train.launch import worker_place
from lmdev.train.trainer import SignalLatch, Trainer, TrainResult
from lmdev.train.trainer import TrainProgress as Progress


@dataclass
class Origin:
    """Where a training starts from: a checkpoint (folder) to restore, and the run it belongs to.

    ``run_id`` with ``fork_step`` None: continue that run (``--resume``); with ``fork_step``: a
    new run forked from it at that step (``--fork``); None: a checkpoint outside the store (a
    new run restores it)."""

    checkpoint: Path
    run_id: str | None = None
    fork_step: int | None = None


def resolve_resume(ref: str, name: str, home: str | Path | None = None) -> Origin:
    """What ``--resume REF`` points at: a checkpoint path, a run id (prefix) or name; empty
    means the newest run named ``name`` that saved a checkpoint. A checkpoint path inside a
    run's folder of the store continues that run."""
    from lmdev.track.store import Store, run_dir
    from lmdev.train.checkpoint import list_checkpoints

    store = Store.existing(home)
    try:
        if ref and Path(ref).exists():
            return Origin(Path(ref), _owning_run(store, Path(ref)))
        if ref:
            info = store.get_run(ref)
        else:
            candidates = [r for r in store.list_runs() if r.name == name
                          and list_checkpoints(run_dir(store.home, r.id) / "checkpoints")]
            if not candidates:
                raise LmdevError(f"no earlier run named {name!r} has a checkpoint to resume",
                                 "give the run id: lmdev train CONFIG --resume RUN (see lmdev runs list)")
            info = candidates[0]
        folder = run_dir(store.home, info.id) / "checkpoints"
    finally:
        store.close()
    if not list_checkpoints(folder):
        raise LmdevError(f"run {info.id} ({info.name}) saved no checkpoint", "start a new run instead")
    return Origin(folder, info.id)


def _owning_run(store: Any, path: Path) -> str | None:
    """The id of the run of this store whose folder holds ``path`` (None: none does)."""
    runs = (store.home / "runs").resolve()
    try:
        rel = path.resolve().relative_to(runs)
    except ValueError:
        return None
    run_id = rel.parts[0] if rel.parts else None
    return run_id if run_id and any(r.id == run_id for r in store.list_runs()) else None


def resolve_fork(ref: str, home: str | Path | None = None) -> Origin:
    """What ``--fork RUN[@STEP]`` starts from: RUN's checkpoint at STEP, or the newest before
    it (default: its newest)."""
    from lmdev.track.api import split_ref
    from lmdev.track.store import Store, run_dir
    from lmdev.train.checkpoint import PREFIX, list_checkpoints

    run_ref, step = split_ref(ref)
    with Store.existing(home) as store:
        info = store.get_run(run_ref)
        folder = run_dir(store.home, info.id) / "checkpoints"
    found = [p for p in list_checkpoints(folder) if step is None or int(p.name[len(PREFIX):]) <= step]
    if not found:
        where = f" at or before step {step}" if step is not None else ""
        raise LmdevError(f"run {info.id} ({info.name}) has no checkpoint{where} to fork from",
                         "see its checkpoints with `lmdev runs show " + info.id + "`")
    return Origin(found[-1], info.id, int(found[-1].name[len(PREFIX):]))


def require_store(home: str | Path | None) -> None:
    """Training keeps its checkpoints in the run's folder in the store: a store that cannot be
    opened stops the run before it starts (never a silent ``./checkpoints`` that runs share)."""
    from lmdev.track.store import Store, StoreUnavailable

    try:
        Store(home).close()
    except StoreUnavailable as exc:
        raise LmdevError(f"{exc.message}; training needs it for its checkpoints and was not started",
                         exc.hint or "set LMDEV_HOME to a writable folder, or fix the folder's permissions") from None


def train_session(
    cfg: TrainConfig,
    *,
    resume: str | None = None,
    fork: str | None = None,
    base_dir: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    telemetry: bool = True,
    announce: Callable[[str], None] | None = None,
    home: str | Path | None = None,
    callbacks: list[Any] | None = None,
) -> TrainResult:
    """Train ``cfg`` as one run of the store (``lmdev train``, ``lmdev.train.fit``): ``resume`` /
    ``fork`` say where it starts; ``on_progress``, ``announce`` and ``callbacks`` (objects with
    on_eval / on_checkpoint / on_resume, beside the config's own) watch it."""
    require_store(home)
    latch = SignalLatch.install()  # from here until the run is recorded, a signal never kills mid-write
    try:
        watch = Watchers(on_progress, announce, callbacks)
        return _session(cfg, _origin(cfg, resume, fork, home), base_dir, watch, _Recording(telemetry, home))
    finally:
        latch.restore()


@dataclass
class Watchers:
    """What the caller attaches to a training: a progress callback, a line printer, callbacks."""

    on_progress: Callable[[Progress], None] | None = None
    announce: Callable[[str], None] | None = None
    callbacks: list[Any] | None = None


@dataclass
class _Recording:
    """Where the run is recorded, and whether it records telemetry."""

    telemetry: bool
    home: str | Path | None


def _origin(cfg: TrainConfig, resume: str | None, fork: str | None, home: str | Path | None) -> Origin | None:
    if resume is not None and fork is not None:
        raise LmdevError("--resume and --fork cannot be used together",
                         "--resume continues a run; --fork starts a new one from its checkpoint")
    if fork is not None:
        return resolve_fork(fork, home)
    return None if resume is None else resolve_resume(resume, cfg.name, home)


def _open_run(cfg: TrainConfig, origin: Origin | None, telemetry: bool, home: str | Path | None) -> Any:
    """The run this training records into: the resumed run itself, a fork, or a new run."""
    import lmdev.track as track

    config = cfg.model_dump(mode="json")
    if origin is not None and origin.run_id is not None and origin.fork_step is None:
        if track.api.rank() != 0:  # rank 0 reopens the run; the other ranks attach to it
            return track.init(run_id=origin.run_id, home=home, telemetry=telemetry, reinit="create_new")
        # the engine calls run.rewind(S) once it has restored checkpoint S: that is the resume event
        return track.init(resume=origin.run_id, config=config, home=home, telemetry=telemetry,
                          resume_event=False, reinit="create_new")
    fork = f"{origin.run_id}@{origin.fork_step}" if origin is not None and origin.run_id else None
    # reinit="create_new": a run the calling script has open stays open (lmdev.train.fit in a script)
    return track.init(name=cfg.name, config=config, fork=fork, home=home, telemetry=telemetry,
                      tags=["lmdev-train"], reinit="create_new")


def _session(cfg: TrainConfig, origin: Origin | None, base_dir: Path | None, watch: Watchers,
             where: _Recording) -> TrainResult:
    from lmdev.train.preflight import preflight

    preflight(cfg, base_dir)  # a config that cannot train leaves nothing behind: no failed run
    run = _open_run(cfg, origin, where.telemetry, where.home)
    announce = watch.announce
    resume_path = origin.checkpoint if origin is not None else None
    if run.dir is None:  # the store went away between the check and the run's creation
        run.finish("failed")
        raise LmdevError("the run store cannot be written, so this run has nowhere to keep its checkpoints",
                         "set LMDEV_HOME to a writable folder (see lmdev doctor)")
    if resume_path is None and worker_place(os.environ).restart > 0 and run.dir:
        # torchrun restarted this worker (--max-restarts): the launch's run continues from its
        # own checkpoint (the engine rewinds what the failed worker logged past it)
        from lmdev.train.checkpoint import list_checkpoints

        own = Path(run.dir) / "checkpoints"
        if list_checkpoints(own):
            resume_path = own
            run.event(f"worker restarted by the elastic launcher: resuming from {own}", level="warning")
    if announce:
        from rich.markup import escape  # names and paths are user text: never markup

        announce(f"run [cyan]{escape(str(run.id))}[/] ({escape(cfg.name)})"
                 + (f", resuming {escape(str(resume_path))}" if resume_path else ""))
    try:
        from lmdev.data.check import check_for_training

        check_for_training(cfg, run, base_dir, announce)  # data.check: off | warn | fail
        result = Trainer(cfg, run=run, base_dir=base_dir, on_progress=watch.on_progress,
                         callbacks=watch.callbacks).train(resume=resume_path)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            run.event("interrupted", level="error")
            run.finish("killed")
        else:
            run.event(f"{type(exc).__name__}: {exc}".splitlines()[0], level="error")
            run.finish("failed")
        raise
    final = {f"final/{k}": v for k, v in {**result.train, **result.val}.items()}
    if final:
        run.log(final, step=result.steps)
    # the store knows finished / failed / killed: a diverged run is recorded as failed (its
    # events say why)
    run.finish("failed" if result.status == "diverged" else result.status)
    return result

