"""What ``lmdev remote`` does, as plain functions over a connection (the CLI only renders)."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError
from lmdev.fsutil import sha256_file
from lmdev.remote import bootstrap, hosts, ssh
from lmdev.remote.bootstrap import MARK, RemoteEnv, agent_command, parse_result
from lmdev.remote.hosts import Remote
from lmdev.remote.ssh import Connection

_SKIP_DIRS = {".git", ".lmdev", "__pycache__", ".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache"}


@contextmanager
def session(name: str, accept_new: bool = False) -> Iterator[tuple[Connection, RemoteEnv]]:
    """A connection to the named remote with lmdev on it, the same version as here."""
    remote = hosts.get(name)
    conn = ssh.connect(remote, accept_new=accept_new)
    try:
        yield conn, bootstrap.ensure(conn)
    finally:
        conn.close()


def agent(conn: Connection, env: RemoteEnv, *args: str, input: Any = None, timeout: float = 600) -> Any:
    """Run an agent command on the remote and return its result."""
    r = conn.run(agent_command(env.root, *args), input=None if input is None else json.dumps(input),
                 timeout=timeout)
    try:
        return parse_result(r.stdout)
    except ValueError:
        text = (r.stderr.strip() or r.stdout.strip()).splitlines()
        raise LmdevError(f"lmdev on {conn.remote.name} failed: {text[-1] if text else f'exit status {r.code}'}",
                         "run `lmdev remote check NAME`, or look at the remote with ssh") from None


def lmdev_on(conn: Connection, env: RemoteEnv, args: list[str]) -> ssh.Result:
    """Run ``lmdev ARGS`` with the remote's lmdev and store (LMDEV_HOME under its root)."""
    cmd = (f"cd && LMDEV_HOME={shlex.quote(env.root + '/home')} NO_COLOR=1 COLUMNS=120 "
           f"{shlex.quote(env.python)} -m lmdev {shlex.join(args)}")
    from lmdev.secure import audit  # the audit record of this remote command
    audit.record("remote.exec", remote=conn.remote.name, target=conn.remote.target, command=cmd)
    return conn.run(cmd, timeout=3600)


# -- add / check ---------------------------------------------------------------------------------

def add(remote: Remote, accept_new: bool, replace: bool = False) -> dict[str, Any]:
    """Connect once (host key, authentication, Python 3.10+), then remember the remote."""
    hosts.check_name(remote.name)
    reg = hosts.load()
    if remote.name in reg.remotes and not replace:
        raise LmdevError(f"a remote named {remote.name} exists already",
                         f"remove it with `lmdev remote rm {remote.name}`, or pick another name")
    with ssh.connect(remote, accept_new=accept_new) as conn:
        facts = bootstrap.probe(conn, remote)
    reg.remotes[remote.name] = remote
    hosts.save(reg)
    return {"name": remote.name, "target": remote.target, "jump": remote.jump, "host_key": conn.host_key,
            "python": ".".join(map(str, facts["version"])), "machine": facts["machine"]}


def check(name: str, accept_new: bool = False) -> dict[str, Any]:
    """Reachable, authenticated, lmdev installed and the same as here (installing it if not)."""
    from lmdev import __version__

    t0 = time.monotonic()
    remote = hosts.get(name)
    with ssh.connect(remote, accept_new=accept_new) as conn:
        connect_s = time.monotonic() - t0
        env = bootstrap.ensure(conn)
        t1 = time.monotonic()
        conn.run("true", timeout=30)
        rtt = time.monotonic() - t1
    return {"name": name, "target": remote.target, "reachable": True, "connect_seconds": round(connect_s, 3),
            "round_trip_seconds": round(rtt, 4), "lmdev_version": env.version, "local_version": __version__,
            "fingerprint": env.info.get("fingerprint"), "bootstrapped": env.bootstrapped,
            "python": env.info.get("python"), "hostname": env.info.get("hostname"), "root": env.root,
            "lock_digest": env.info.get("lock_digest")}


# -- project sync --------------------------------------------------------------------------------

def project_files(folder: Path) -> list[str]:
    """The project's files, relative: git's view (tracked + untracked, .gitignore honoured)
    when the folder is in a git work tree, else every file outside the usual build folders."""
    try:
        r = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=folder,
                           capture_output=True, timeout=30, check=False)
        if r.returncode == 0:
            names = [n for n in r.stdout.decode().split("\0") if n]
            return sorted(n for n in names if (folder / n).is_file())
    except (OSError, subprocess.SubprocessError):
        pass
    out = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.is_file() and not p.is_symlink() and not (set(rel.parts[:-1]) & _SKIP_DIRS):
            out.append(str(rel))
    return sorted(out)


@dataclass
class SyncResult:
    remote_dir: str
    files: int
    sent: list[str] = field(default_factory=list)


def sync(conn: Connection, env: RemoteEnv, folder: Path) -> SyncResult:
    """Send the files of ``folder`` that differ on the remote (by size and sha256)."""
    folder = folder.resolve()
    remote_dir = f"{env.root}/projects/{folder.name}"
    there = agent(conn, env, "manifest", remote_dir)
    names = project_files(folder)
    send = []
    for n in names:
        p = folder / n
        have = there.get(n)
        if have is None or have[0] != p.stat().st_size or have[1] != sha256_file(p):
            send.append(n)
    conn.put([(folder / n, f"{remote_dir}/{n}") for n in send])
    return SyncResult(remote_dir, len(names), send)


def default_sync_dir(config: Path) -> Path:
    try:
        r = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=config.parent, capture_output=True,
                           text=True, timeout=10, check=False)
        if r.returncode == 0 and r.stdout.strip():
            return Path(r.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return config.parent


# -- jobs ----------------------------------------------------------------------------------------

@dataclass
class JobSpec:
    """A detached job: its command (``{python}`` is the remote venv's), folder and kind."""

    argv: list[str]
    cwd: str
    kind: str = "train"
    job: str | None = None  # an id chosen by the caller (the same on every node of a cluster)
    sbatch: dict[str, str] | None = None  # submit through Slurm with these #SBATCH options


def start_job(conn: Connection, env: RemoteEnv, spec: JobSpec) -> str:
    """Start a detached job (through Slurm's sbatch when ``spec.sbatch`` is set); returns its id."""
    data: dict[str, Any] = {"argv": spec.argv, "cwd": spec.cwd, "kind": spec.kind,
                            **({"job": spec.job} if spec.job else {})}
    if spec.sbatch is not None:
        data.update(slurm=True, sbatch=spec.sbatch, slurm_bin=conn.remote.slurm_bin)
    from lmdev.secure import audit  # the audit record of this remote job
    audit.record("remote.exec", remote=conn.remote.name, target=conn.remote.target, command=shlex.join(spec.argv),
                 cwd=spec.cwd, kind=spec.kind, slurm=spec.sbatch is not None)
    return str(agent(conn, env, "start", input=data)["job"])


def train_argv(config_rel: str, overrides: list[str], name: str | None) -> list[str]:
    argv = ["{python}", "-m", "lmdev", "train", config_rel]
    for o in overrides:
        argv += ["--set", o]
    return argv + (["--name", name] if name else [])


@dataclass
class Follow:
    on_line: Callable[[str], None]
    on_progress: Callable[[dict[str, Any]], None]
    offset: int = 0
    end: dict[str, Any] | None = None

    def feed(self, line: str) -> None:
        if not line.startswith(MARK):
            self.on_line(line)
            return
        try:
            data = json.loads(line[len(MARK):])
        except ValueError:
            self.on_line(line)
            return
        if "offset" in data:
            self.offset = int(data["offset"])
        if "progress" in data:
            self.on_progress(data["progress"])
        if "end" in data:
            self.end = data["end"]


def follow(conn: Connection, env: RemoteEnv, job: str, f: Follow) -> dict[str, Any]:
    """Stream a job's log and progress until it ends; returns its final state."""
    hint = f"the job goes on; pick it up with `lmdev remote attach {conn.remote.name} {job}`"
    try:
        code = conn.stream(agent_command(env.root, "follow", job, "--offset", str(f.offset)), f.feed)
    except LmdevError as exc:
        raise LmdevError(exc.message, hint) from None
    if f.end is None:
        raise LmdevError(f"following {job} on {conn.remote.name} stopped (exit status {code})", hint)
    return f.end


# -- pull ----------------------------------------------------------------------------------------

def pull(conn: Connection, env: RemoteEnv, run_ids: list[str], checkpoints: bool = False) -> list[Any]:
    """Merge the remote's runs (or ``run_ids``) into the local store; returns what each added."""
    from lmdev.remote import transfer
    from lmdev.track.store import Store

    name = conn.remote.name
    with Store() as store:
        cursors = {r.id: transfer.cursor(store, r) for r in transfer.pulled_runs(store, name)}
        payload = agent(conn, env, "export", input={"cursors": cursors, "runs": run_ids,
                                                     "checkpoints": checkpoints}, timeout=3600)
        results = [transfer.merge_run(store, name, data) for data in payload["runs"]]
        if checkpoints:
            for res in results:
                missing = transfer.missing_files(store, res)
                conn.get(missing)
                res.fetched = len(missing)
    return results
