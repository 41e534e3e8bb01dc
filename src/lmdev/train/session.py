"""A training session: the run in the store around ``fit``: create it, resolve ``--resume``,
record the outcome (finished, killed by a signal, failed)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from lmdev.errors import LmdevError
from lmdev.train.config import TrainConfig
from lmdev.train.trainer import SignalLatch, Trainer, TrainResult
from lmdev.train.trainer import TrainProgress as Progress


def resolve_resume(ref: str, name: str, home: str | Path | None = None) -> tuple[Path, str | None]:
    """What ``--resume REF`` points at: (checkpoint folder or checkpoint, the run id if any).

    REF is a checkpoint path, a run id (prefix) or name; empty means the newest run named
    ``name`` that saved a checkpoint."""
    from lmdev.track.store import Store, run_dir
    from lmdev.train.checkpoint import list_checkpoints

    if ref and Path(ref).exists():
        return Path(ref), None
    store = Store.existing(home)
    try:
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
    return folder, info.id


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
    base_dir: Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    telemetry: bool = True,
    announce: Callable[[str], None] | None = None,
    home: str | Path | None = None,
) -> TrainResult:
    require_store(home)
    latch = SignalLatch.install()  # from here until the run is recorded, a signal never kills mid-write
    try:
        return _session(cfg, resume, base_dir, on_progress, telemetry, announce, home)
    finally:
        latch.restore()


def _session(cfg: TrainConfig, resume: str | None, base_dir: Path | None,
             on_progress: Callable[[Progress], None] | None, telemetry: bool,
             announce: Callable[[str], None] | None, home: str | Path | None) -> TrainResult:
    import lmdev.track as track
    from lmdev.train.preflight import preflight

    preflight(cfg, base_dir)  # a config that cannot train leaves nothing behind: no failed run
    resume_path, parent = (None, None)
    if resume is not None:
        resume_path, parent = resolve_resume(resume, cfg.name, home)
    run = track.init(name=cfg.name, config=cfg.model_dump(mode="json"), parent=parent, home=home,
                     telemetry=telemetry, tags=["lmdev-train"])
    if run.dir is None:  # the store went away between the check and the run's creation
        run.finish("failed")
        raise LmdevError("the run store cannot be written, so this run has nowhere to keep its checkpoints",
                         "set LMDEV_HOME to a writable folder (see lmdev doctor)")
    if resume_path is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0 and run.dir:
        # torchrun restarted this worker (--max-restarts): carry on from the run's own checkpoint
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
        result = Trainer(cfg, run=run, base_dir=base_dir, on_progress=on_progress).train(resume=resume_path)
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

