"""``lmdev run SCRIPT.py [ARGS]``: run any Python training script inside a run.

The script runs in a child Python process with autolog on (Keras, Lightning, transformers are
recorded as they train) and the run active (``lmdev.log`` works). This process samples the
system (the child's RSS and CPU, the host, the GPUs), tees the child's stdout and stderr to the
terminal and to ``runs/<id>/stdout.log`` and ``stderr.log`` (recorded as artifacts), and records
the exit status: ``finished`` (exit 0), ``failed`` (non-zero exit), ``killed`` (ended by a
signal). If this process is itself killed, the run is later found ``killed``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from lmdev.errors import LmdevError
from lmdev.redact import RedactingWriter, redact_argv
from lmdev.track import api


@dataclass
class ScriptResult:
    run_id: str
    status: str
    exit_code: int


class _Sink(Protocol):
    """Where a tee writes: a binary stream or a redacting log file."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


def _tee(src: IO[bytes], outs: list[_Sink], tail: deque[bytes] | None = None) -> None:
    for chunk in iter(lambda: src.read1(65536), b""):  # type: ignore[attr-defined]
        for out in outs:
            try:
                out.write(chunk)
                out.flush()
            except (OSError, ValueError):
                pass
        if tail is not None:
            tail.append(chunk)


def run_script(script: str, args: list[str] | tuple[str, ...] = (), *, name: str | None = None,
               project: str = "default", home: str | os.PathLike[str] | None = None,
               telemetry: bool = True, telemetry_interval: float = 2.0, autolog: bool = True,
               stdout: IO[bytes] | None = None, stderr: IO[bytes] | None = None) -> ScriptResult:
    """Run ``python SCRIPT ARGS`` as a recorded run; returns its id, status and exit code."""
    path = Path(script)
    try:
        found = path.is_file()
    except OSError:  # a name too long for the file system, ...
        found = False
    if not found:
        raise LmdevError(f"no such script: {script!r}", "give the path of a Python file")
    from lmdev.track.store import home as home_dir

    store_home = home_dir(home).absolute()
    run = api.init(name or path.stem, project=project, home=store_home, telemetry=False,
                   config={"script": str(path), "args": redact_argv(list(args))})
    run.set_command([sys.executable, str(path), *args])
    env = dict(os.environ, LMDEV_RUN_ID=run.id, LMDEV_HOME=str(store_home), PYTHONUNBUFFERED="1",
               LMDEV_TELEMETRY="0", LMDEV_AUTOLOG="1" if autolog else "0")
    logs = run.dir
    files: list[Any] = []  # RedactingWriter over each log file
    if logs is not None:
        try:
            logs.mkdir(parents=True, exist_ok=True)
            files = [RedactingWriter(open(logs / name, "wb")) for name in ("stdout.log", "stderr.log")]
        except OSError:
            files = []
    child = subprocess.Popen([sys.executable, "-m", "lmdev.integrations._child", str(path), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    sampler = None
    if telemetry:
        from lmdev.track.telemetry import Sampler

        sampler = Sampler(run.record_system, interval=telemetry_interval, pid=child.pid).start()
    tail: deque[bytes] = deque(maxlen=64)
    out_targets: list[_Sink] = [stdout or sys.stdout.buffer, *files[:1]]
    err_targets: list[_Sink] = [stderr or sys.stderr.buffer, *files[1:]]
    threads = [threading.Thread(target=_tee, args=(child.stdout, out_targets), daemon=True),
               threading.Thread(target=_tee, args=(child.stderr, err_targets, tail), daemon=True)]
    for t in threads:
        t.start()
    interrupted = False
    while True:
        try:
            rc = child.wait()
            break
        except KeyboardInterrupt:  # the child got the same Ctrl-C; wait for it to stop
            interrupted = True
            try:
                child.send_signal(signal.SIGINT)
            except OSError:
                pass
    for t in threads:
        t.join(timeout=10)
    for f in files:
        f.close()
    if sampler is not None:
        sampler.stop()
        run.record_system(sampler.sample())  # at least one sample, however short the script
    for f in files:
        run.log_artifact(f.name, kind="log")
    if rc == 0:
        status = "finished"
        run.event("script exited with status 0")
    elif rc < 0 or interrupted:
        status = "killed"
        sig = signal.Signals(-rc).name if rc < 0 and -rc in signal.Signals._value2member_map_ else rc
        run.event(f"script ended by signal {sig}" if rc < 0 else "script interrupted", level="error")
    else:
        status = "failed"
        last = b"".join(tail).decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        run.event(f"script exited with status {rc}: {last[0][:500]}", level="error")
    run.finish(status, exit_code=rc)
    return ScriptResult(run.id, status, rc)


