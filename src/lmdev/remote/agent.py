"""The remote side: ``python -m lmdev.remote.agent COMMAND`` run over SSH in lmdev's own venv.

Layout of the user-owned folder (ROOT, default ``~/.lmdev-remote``): ``venv/`` (made by the remote's
own Python, no sudo), ``wheels/`` (what bootstrap shipped), ``installed.json`` (the fingerprint of
the installed lmdev), ``home/`` (the remote run store, LMDEV_HOME), ``projects/<name>/`` (synced
code), ``jobs/<job>/`` (one detached job: ``job.json``, ``out.log``, ``rc``).

Structured lines on stdout start with ``@lmdev `` followed by one JSON object; every other line
is a log line. Nothing here imports torch unless the command needs it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MARK = "@lmdev "


def root() -> Path:
    return Path(sys.prefix).parent  # ROOT/venv is this interpreter's prefix


def store_home() -> Path:
    return root() / "home"


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(MARK + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from lmdev.fsutil import atomic_write_text

    atomic_write_text(path, json.dumps(data))


# -- info ----------------------------------------------------------------------------------------

def info() -> dict[str, Any]:
    import shutil

    import lmdev

    from lmdev.remote.environment import lock_digest

    installed = _read_json(root() / "installed.json")
    try:
        digest = lock_digest(root() / "env")
    except Exception:  # noqa: BLE001 - an unreadable lock is reported as none
        digest = "unreadable"
    shm = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else None
    return {"lmdev_version": lmdev.__version__, "fingerprint": installed.get("fingerprint"),
            "python": sys.version.split()[0], "hostname": socket.gethostname(), "time": time.time(),
            "root": str(root()), "store": str(store_home()), "shm_free": shm,
            "disk_free": shutil.disk_usage(root()).free, "cpus": os.cpu_count(), "lock_digest": digest}


# -- jobs ----------------------------------------------------------------------------------------

def jobs_dir() -> Path:
    return root() / "jobs"


def start(spec: dict[str, Any]) -> dict[str, Any]:
    """Start a detached job: a supervisor in its own session runs ``spec['argv']`` and records it."""
    job = spec.get("job") or time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    d = jobs_dir() / job
    d.mkdir(parents=True, exist_ok=False)
    _write_json(d / "job.json", {"job": job, "argv": spec["argv"], "cwd": spec.get("cwd") or str(root()),
                                 "env": spec.get("env") or {}, "kind": spec.get("kind", "train"),
                                 "started": time.time()})
    if spec.get("slurm"):
        return _start_slurm(d, spec)
    with open(d / "supervisor.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "lmdev.remote.agent", "supervise", job],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                         close_fds=True, cwd=str(root()))
    return {"job": job}


def _job_env(spec: dict[str, Any]) -> dict[str, str]:
    return {"LMDEV_HOME": str(store_home()), "PYTHONUNBUFFERED": "1", **spec.get("env", {})}


def _start_slurm(d: Path, spec: dict[str, Any]) -> dict[str, Any]:
    from lmdev.remote import slurm

    job = _read_json(d / "job.json")
    job.update(kind="slurm", slurm_bin=spec.get("slurm_bin"), sbatch=spec.get("sbatch") or {})
    argv = [sys.executable if a == "{python}" else a for a in spec["argv"]]
    job["slurm_id"] = slurm.submit(d, job, argv, _job_env(spec))
    _write_json(d / "job.json", job)
    return {"job": d.name, "slurm_id": job["slurm_id"]}


def _slurm_update(d: Path, spec: dict[str, Any]) -> str | None:
    """Ask Slurm about a job; write its exit code once it has ended. Returns Slurm's state."""
    from lmdev.fsutil import atomic_write_text
    from lmdev.remote import slurm

    if not spec.get("pid") and (d / "pid").is_file():
        try:
            spec["pid"] = int((d / "pid").read_text().strip())
            _write_json(d / "job.json", spec)
        except ValueError:
            pass
    st, code = slurm.state(spec)
    if code is not None and not (d / "rc").is_file():
        atomic_write_text(d / "rc", str(code))
    return st


def supervise(job: str) -> int:
    """Run one job to its end (detached from any SSH session), then write its exit code."""
    d = jobs_dir() / job
    spec = _read_json(d / "job.json")
    env = dict(os.environ, **_job_env(spec))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    argv = [sys.executable if a == "{python}" else a for a in spec["argv"]]
    with open(d / "out.log", "ab") as out:
        proc = subprocess.Popen(argv, cwd=spec["cwd"], env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
        spec.update(pid=proc.pid, supervisor=os.getpid())
        _write_json(d / "job.json", spec)

        def forward(signum: int, _frame: Any) -> None:
            proc.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        while proc.poll() is None:  # note the run id while the workers are alive to be asked
            if not spec.get("run_id"):
                try:
                    rid = _run_of(spec)
                except Exception:  # noqa: BLE001 - the store may not exist yet
                    rid = None
                if rid:
                    spec["run_id"] = rid
                    _write_json(d / "job.json", spec)
            time.sleep(0.5)
        code = proc.returncode
    if not spec.get("run_id"):
        spec["run_id"] = _run_of(spec, {proc.pid})
        _write_json(d / "job.json", spec)
    from lmdev.fsutil import atomic_write_text

    atomic_write_text(d / "rc", str(code))
    return 0


def _family(pid: int | None) -> set[int]:
    """``pid`` and its descendants (torchrun's workers record their own pids)."""
    if not pid:
        return set()
    import psutil

    try:
        proc = psutil.Process(pid)
        return {pid, *(c.pid for c in proc.children(recursive=True))}
    except psutil.Error:
        return {pid}


def _run_of(spec: dict[str, Any], pids: set[int] | None = None) -> str | None:
    """The run a job's process (or one of its workers) recorded in the remote store."""
    if spec.get("run_id"):
        return str(spec["run_id"])
    home = store_home()
    pids = pids if pids is not None else _family(spec.get("pid"))
    if not (home / "lmdev.db").exists() or not pids:
        return None
    from lmdev.track.store import Store

    with Store(home) as s:
        for r in s.list_runs(limit=50):
            if r.start_time >= spec.get("started", 0) - 5 and r.pid in pids:
                return r.id
    return None


def find_job(ref: str) -> Path:
    """A job by its id, id prefix or its run's id."""
    d = jobs_dir()
    if (d / ref / "job.json").is_file():
        return d / ref
    cands = sorted(d.glob(f"{ref}*")) if d.is_dir() else []
    if len(cands) == 1:
        return cands[0]
    for j in sorted(d.iterdir()) if d.is_dir() else []:
        rid = _read_json(j / "job.json").get("run_id")
        if rid and (rid == ref or rid.startswith(ref)):
            return j
    from lmdev.errors import LmdevError

    raise LmdevError(f"no job or run {ref!r} on this remote", "see `lmdev remote jobs NAME`")


def job_state(d: Path) -> dict[str, Any]:
    spec = _read_json(d / "job.json")
    slurm_state = _slurm_update(d, spec) if spec.get("slurm_id") and not (d / "rc").is_file() else None
    if not spec.get("run_id"):
        rid = _run_of(spec)
        if rid:
            spec["run_id"] = rid
            _write_json(d / "job.json", spec)
    rc = (d / "rc").read_text().strip() if (d / "rc").is_file() else None
    return {"job": d.name, "run_id": spec.get("run_id"), "pid": spec.get("pid"),
            "kind": spec.get("kind"), "started": spec.get("started"),
            "exit_code": int(rc) if rc not in (None, "") else None,
            "state": "running" if rc is None else "finished" if rc == "0" else
            "stopped" if (d / "stop").exists() else "failed",
            **({"slurm_id": spec["slurm_id"], "slurm_state": slurm_state} if spec.get("slurm_id") else {})}


def _progress(run_id: str | None) -> dict[str, Any] | None:
    if not run_id or not (store_home() / "lmdev.db").exists():
        return None
    from lmdev.track.store import Store

    with Store(store_home()) as s:
        run = s.get_run(run_id)
        metrics = {m.key: m.last for m in s.summaries(run)}
        step = max((m.last_step for m in s.summaries(run)), default=0)
    return {"run_id": run_id, "status": run.status, "step": step,
            "max_steps": (run.config.get("train") or {}).get("max_steps"), "metrics": metrics}


def follow(ref: str, offset: int = 0, interval: float = 1.0) -> int:
    """Stream a job's log from ``offset`` and a progress line each ``interval``, until it ends."""
    d = find_job(ref)
    log = d / "out.log"
    last = 0.0
    while True:
        state = job_state(d)
        if log.exists():
            with open(log, "rb") as f:
                f.seek(offset)
                data = f.read()
            cut = data.rfind(b"\n") + 1 if state["exit_code"] is None else len(data)
            if cut:
                sys.stdout.write(data[:cut].decode("utf-8", "replace"))
                offset += cut
                emit({"offset": offset})
        if time.monotonic() - last >= interval or state["exit_code"] is not None:
            last = time.monotonic()
            try:
                prog = _progress(state["run_id"])
            except Exception:  # noqa: BLE001 - the store may be mid-write; try again next time
                prog = None
            if prog:
                emit({"progress": prog})
        if state["exit_code"] is not None:
            emit({"end": job_state(d)})
            return 0
        time.sleep(2.0 if "slurm_id" in state else 0.2)  # Slurm is asked at most every 2 s


def stop(ref: str, timeout: float = 30.0) -> dict[str, Any]:
    d = find_job(ref)
    spec = _read_json(d / "job.json")
    if (d / "rc").is_file():
        return job_state(d)
    pid = spec.get("pid")
    (d / "stop").write_text(str(time.time()))
    if spec.get("slurm_id"):
        from lmdev.remote import slurm

        slurm.cancel(spec)
        deadline = time.monotonic() + timeout
        while job_state(d)["exit_code"] is None and time.monotonic() < deadline:
            time.sleep(0.5)
        return job_state(d)
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)  # lmdev train saves a checkpoint and stops
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while not (d / "rc").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not (d / "rc").is_file() and pid:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return job_state(d)


# -- files ---------------------------------------------------------------------------------------

def manifest(folder: str) -> dict[str, list[Any]]:
    base = Path(folder)
    out: dict[str, list[Any]] = {}
    if not base.is_dir():
        return out
    for p in base.rglob("*"):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(base))] = [p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()]
    return out


# -- runs ----------------------------------------------------------------------------------------

def export(cursors: dict[str, Any], run_ids: list[str], checkpoints: bool) -> dict[str, Any]:
    """Runs of the remote store with what each has past the caller's cursors."""
    from lmdev.remote.transfer import export_runs

    return export_runs(store_home(), cursors, run_ids, checkpoints)


# -- cluster -------------------------------------------------------------------------------------

def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lmdev.remote.agent")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("info")
    sub.add_parser("start")
    sub.add_parser("supervise").add_argument("job")
    f = sub.add_parser("follow")
    f.add_argument("ref")
    f.add_argument("--offset", type=int, default=0)
    sub.add_parser("stop").add_argument("ref")
    sub.add_parser("jobs")
    sub.add_parser("state").add_argument("ref")
    sub.add_parser("manifest").add_argument("folder")
    sub.add_parser("export")
    sub.add_parser("port-free").add_argument("port", type=int)
    ix = sub.add_parser("index")
    ix.add_argument("project")
    ix.add_argument("--torch-index")
    ix.add_argument("--index-url")
    a = sub.add_parser("allreduce")
    for name in ("rank", "world", "port", "iters"):
        a.add_argument(f"--{name}", type=int, required=True)
    a.add_argument("--addr", required=True)
    a.add_argument("--mbytes", type=float, default=16.0)
    args = p.parse_args(argv)
    from lmdev.errors import LmdevError

    try:
        return _dispatch(args)
    except LmdevError as exc:
        print(f"lmdev: error: {exc}", file=sys.stderr)
        return 2


def _allreduce(args: argparse.Namespace) -> dict[str, Any]:
    from lmdev.remote.collective import gloo_allreduce

    return gloo_allreduce(args.rank, args.world, f"{args.addr}:{args.port}", args.mbytes, args.iters)


def _index(args: argparse.Namespace) -> dict[str, Any]:
    from lmdev.remote.environment import index_check

    return index_check(Path(args.project), args.torch_index, args.index_url)


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "supervise":
        return supervise(args.job)
    if args.cmd == "follow":
        return follow(args.ref, args.offset)
    stdin = json.loads(sys.stdin.read() or "{}") if args.cmd in ("start", "export") else {}
    result: Any = {
        "info": lambda: info(),
        "start": lambda: start(stdin),
        "stop": lambda: stop(args.ref),
        "state": lambda: job_state(find_job(args.ref)),
        "jobs": lambda: [job_state(j) for j in sorted(jobs_dir().iterdir())] if jobs_dir().is_dir() else [],
        "manifest": lambda: manifest(args.folder),
        "export": lambda: export(stdin.get("cursors", {}), stdin.get("runs", []), stdin.get("checkpoints", False)),
        "port-free": lambda: {"free": port_free(args.port)},
        "index": lambda: _index(args),
        "allreduce": lambda: _allreduce(args),
    }[args.cmd]()
    emit({"result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
