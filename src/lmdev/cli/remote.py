"""``lmdev remote``: the same environment on an SSH host — add, check, doctor, train, pull, ui."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = "work on an SSH host: add, check, doctor, setup, plan, train, attach, stop, pull, ui"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "remote", help=HELP,
        description="Plain SSH with your keys: no root, no daemon, no internet on the remote. The "
        "first command to a host ships lmdev there (a wheel built here plus its dependencies, into "
        "~/.lmdev-remote); versions are checked on every connect. Docs: docs/commands/remote.md.")
    rs = p.add_subparsers(dest="remote_cmd", metavar="SUBCOMMAND", required=True)

    a = rs.add_parser("add", help="remember a host (checks its host key, login and Python)")
    a.add_argument("name", metavar="NAME")
    a.add_argument("target", metavar="[USER@]HOST[:PORT]", help="an address, or a Host name from ~/.ssh/config")
    a.add_argument("--key", metavar="PATH", help="the private key to log in with (default: ssh-agent, ~/.ssh/id_*)")
    a.add_argument("--jump", metavar="HOST", help="reach it through this jump host ([USER@]HOST[:PORT] or a remote's name)")
    a.add_argument("--accept-new", action="store_true", help="trust and record a host key seen for the first "
                   "time (a changed key is always refused)")
    a.add_argument("--python", default="python3", metavar="PATH",
                   help="the remote Python 3.10+ that lmdev's venv is made from (default: python3)")
    a.add_argument("--site-packages", metavar="DIR", help="an existing site-packages on the remote that "
                   "lmdev's venv may import (e.g. one with torch); nothing is installed into it")
    a.add_argument("--root", default="~/.lmdev-remote", metavar="DIR",
                   help="the user-owned folder lmdev lives in on the remote (default ~/.lmdev-remote)")
    a.add_argument("--slurm-bin", metavar="DIR", help="the folder of sbatch/squeue/sacct/scancel on a Slurm "
                   "login node, when it is not on the PATH of SSH commands")
    a.add_argument("--replace", action="store_true", help="replace a remote of the same name")
    a.add_argument("--json", action="store_true", help="print one JSON document")

    ls = rs.add_parser("list", help="the remotes and clusters you added")
    ls.add_argument("--json", action="store_true")
    rm = rs.add_parser("rm", help="forget a remote (nothing on the host is touched)")
    rm.add_argument("name", metavar="NAME")
    c = rs.add_parser("check", help="reach the host, log in, install or update lmdev there")
    c.add_argument("name", metavar="NAME")
    c.add_argument("--accept-new", action="store_true", help="trust a host key seen for the first time")
    c.add_argument("--json", action="store_true")

    d = rs.add_parser("doctor", help="lmdev doctor on the remote (same JSON schema)")
    d.add_argument("name", metavar="NAME")
    d.add_argument("--json", action="store_true")
    d.add_argument("--deep", action="store_true", help="also run the deep framework checks")
    se = rs.add_parser("setup", help="lmdev setup on the remote: from its index, or from an offline bundle",
                       description="Set up the frameworks in the remote's lmdev environment (what `remote "
                       "train` and `cluster train` run in). A remote that reaches its package index runs "
                       "`lmdev setup` itself; one that does not gets an offline bundle over SFTP (built here "
                       "for its machine, or the one you name) and runs `lmdev setup --from-bundle`.")
    se.add_argument("name", metavar="NAME")
    se.add_argument("stacks", nargs="*", metavar="STACK", help="torch (default), lightning, keras, tensorflow, jax, hf")
    se.add_argument("--bundle", type=Path, metavar="TAR", help="ship this bundle (from `lmdev setup bundle`) "
                    "instead of building one; used even when the remote has an index")
    se.add_argument("--offline", action="store_true", help="build and ship a bundle even when the remote "
                    "reaches its index")
    se.add_argument("--project", type=Path, default=Path("."), metavar="DIR", help="where this machine's "
                    "package sources are configured ([tool.lmdev.setup] in DIR/pyproject.toml) for building a "
                    "bundle (default: the current folder)")
    se.add_argument("--torch-index", metavar="URL", help="the PyTorch index the remote uses ({backend} is "
                    "replaced), as `lmdev setup --torch-index`")
    se.add_argument("--index-url", metavar="URL", help="the general package index the remote uses")
    se.add_argument("--no-verify", action="store_true", help="skip the verification after installing")
    se.add_argument("--json", action="store_true", help="print one JSON document")
    pl = rs.add_parser("plan", help="lmdev plan on the remote's hardware")
    pl.add_argument("name", metavar="NAME")
    pl.add_argument("plan_args", nargs=argparse.REMAINDER, metavar="MODEL ...", help="lmdev plan's arguments")

    t = rs.add_parser("train", help="send the project and train on the remote, detached from SSH")
    t.add_argument("name", metavar="NAME")
    t.add_argument("config", metavar="CONFIG")
    t.add_argument("--sync", metavar="DIR", help="the project folder to send (default: the git work tree "
                   "of CONFIG, else its folder); .gitignore is honoured, only changed files go")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--run-name", dest="run_name", metavar="NAME", help="the run's name")
    t.add_argument("--detach", action="store_true", help="return once training has started")
    t.add_argument("--pull", action="store_true", help="pull the run here when it ends")
    t.add_argument("--slurm", action="store_true", help="submit through Slurm (sbatch) on a login node; "
                   "Ctrl+C while following cancels it (scancel)")
    t.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="an #SBATCH option, e.g. --sbatch partition=gpu --sbatch time=02:00:00 (with --slurm); "
                   "--sbatch nodes=N runs `lmdev train` on N nodes under srun (torchrun on each)")
    at = rs.add_parser("attach", help="follow a remote job's progress and log again")
    at.add_argument("name", metavar="NAME")
    at.add_argument("run", metavar="RUN", help="the job id or run id (a prefix is enough)")
    st = rs.add_parser("stop", help="stop a remote job (it saves a checkpoint first)")
    st.add_argument("name", metavar="NAME")
    st.add_argument("run", metavar="RUN")
    j = rs.add_parser("jobs", help="the jobs started on a remote")
    j.add_argument("name", metavar="NAME")
    j.add_argument("--json", action="store_true")

    pu = rs.add_parser("pull", help="merge remote runs into the local store (idempotent)")
    pu.add_argument("name", metavar="NAME")
    pu.add_argument("runs", nargs="*", metavar="RUN", help="only these runs (default: all)")
    pu.add_argument("--checkpoints", action="store_true", help="also copy checkpoints and artifacts")
    pu.add_argument("--json", action="store_true")

    u = rs.add_parser("ui", help="the remote dashboard, forwarded to a local port over SSH")
    u.add_argument("name", metavar="NAME")
    u.add_argument("--port", type=int, default=0, help="local port (default: a free one)")
    return p


def run(args: argparse.Namespace) -> int:
    return int(_HANDLERS[args.remote_cmd](args) or 0)


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _add(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from lmdev.remote import ops
    from lmdev.remote.hosts import Remote, parse_target

    user, host, port = parse_target(args.target)
    remote = Remote(name=args.name, host=host, user=user, port=port,
                    key=str(Path(args.key).expanduser().resolve()) if args.key else None, jump=args.jump,
                    root=args.root, python=args.python, site_packages=args.site_packages,
                    slurm_bin=args.slurm_bin)
    info = ops.add(remote, accept_new=args.accept_new, replace=args.replace)
    if args.json:
        _print_json(info)
        return 0
    extra = " (host key recorded in ~/.ssh/known_hosts)" if info["host_key"] == "added" else ""
    _console().print(f"added [bold]{escape(args.name)}[/] = {escape(info['target'])}"
                     + (f" via {escape(info['jump'])}" if info["jump"] else "")
                     + f" · Python {info['python']} · {escape(info['machine'])}{escape(extra)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.markup import escape
    from rich.table import Table

    from lmdev.remote import hosts

    reg = hosts.load()
    if args.json:
        _print_json({"remotes": [asdict(r) for r in reg.remotes.values()],
                     "clusters": [asdict(c) for c in reg.clusters.values()]})
        return 0
    if not reg.remotes:
        print("no remotes yet: add one with `lmdev remote add NAME [USER@]HOST[:PORT]`")
        return 0
    table = Table("name", "target", "jump", "root", box=None)
    for r in reg.remotes.values():
        table.add_row(escape(r.name), escape(r.target), escape(r.jump or ""), escape(r.root))
    console = _console()
    console.print(table)
    for c in reg.clusters.values():
        console.print(f"cluster [bold]{escape(c.name)}[/]: {escape(', '.join(c.hosts))}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError
    from lmdev.remote import hosts

    reg = hosts.load()
    if args.name not in reg.remotes:
        hosts.get(args.name)  # the error naming the known remotes
    users = [c.name for c in reg.clusters.values() if args.name in c.hosts]
    if users:
        raise LmdevError(f"{args.name} is part of cluster(s) {', '.join(users)}",
                         "remove those first with `lmdev cluster rm NAME`")
    del reg.remotes[args.name]
    hosts.save(reg)
    print(f"removed {args.name} (nothing on the host was touched)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from lmdev.remote import ops

    info = ops.check(args.name, accept_new=args.accept_new)
    if args.json:
        _print_json(info)
        return 0
    what = "installed lmdev" if info["bootstrapped"] else "lmdev up to date"
    _console().print(f"[green]ok[/] {escape(args.name)} ({escape(info['target'])}) · {escape(info['hostname'])} · "
                     f"Python {info['python']} · {what} {info['lmdev_version']} ({info['fingerprint']}) · "
                     f"connect {info['connect_seconds']:.2f} s · round trip {info['round_trip_seconds'] * 1000:.1f} ms")
    return 0


def _passthrough(name: str, lmdev_args: list[str]) -> int:
    from lmdev.remote import ops

    with ops.session(name) as (conn, env):
        r = ops.lmdev_on(conn, env, lmdev_args)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r.code


def _doctor(args: argparse.Namespace) -> int:
    return _passthrough(args.name, ["doctor", *(["--json"] if args.json else []), *(["--deep"] if args.deep else [])])


def _plan(args: argparse.Namespace) -> int:
    return _passthrough(args.name, ["plan", *args.plan_args])


def _setup(args: argparse.Namespace) -> int:
    from lmdev.remote import ops
    from lmdev.remote.environment import SetupRequest, setup

    req = SetupRequest(list(args.stacks), args.bundle.resolve() if args.bundle else None, args.offline,
                       args.project.resolve(), not args.no_verify, args.torch_index, args.index_url)
    with ops.session(args.name) as (conn, env):
        out = setup(conn, env, req, args.json, say=lambda m: print(f"lmdev: {m}", file=sys.stderr, flush=True))
    if args.json:
        try:
            result = json.loads(out.result.stdout)
        except ValueError:
            from lmdev.errors import LmdevError

            tail = (out.result.stderr.strip() or out.result.stdout.strip() or "no output").splitlines()[-1]
            raise LmdevError(f"lmdev setup on {args.name} did not answer in JSON: {tail}",
                             "run it again without --json to see its output") from None
        _print_json({"remote": args.name, "source": out.source, "index": out.index, "bundle": out.bundle,
                     "bundle_bytes": out.bundle_bytes, "lock_digest": out.lock_digest, "setup": result})
    else:
        sys.stdout.write(out.result.stdout)
        sys.stderr.write(out.result.stderr)
        how = "from its index" if out.source == "index" else f"from the bundle {out.bundle}"
        print(f"lmdev: {args.name} set up {how}; lock {out.lock_digest}", file=sys.stderr)
    return out.result.code


def _progress_printer() -> Any:
    last: dict[str, Any] = {}

    def on_progress(p: dict[str, Any]) -> None:
        key = (p.get("step"), p.get("status"))
        if last.get("key") == key:
            return
        last["key"] = key
        m = p.get("metrics") or {}
        loss = m.get("train/loss")
        total = f"/{p['max_steps']}" if p.get("max_steps") else ""
        parts = [f"step {p.get('step')}{total}"] + ([f"loss {loss:.4f}"] if isinstance(loss, float) else [])
        print(f"[{p.get('run_id')}] {' · '.join(parts)} · {p.get('status')}", flush=True)

    return on_progress


def follow_printer() -> Any:
    """A job follower that prints the remote log lines and a progress line per new step."""
    from lmdev.remote import ops

    return ops.Follow(on_line=lambda line: print(line, flush=True), on_progress=_progress_printer())


def _follow(conn: Any, env: Any, job: str, cancel_on_interrupt: bool = False) -> int:
    from lmdev.remote import ops

    try:
        end = ops.follow(conn, env, job, follow_printer())
    except KeyboardInterrupt:
        if cancel_on_interrupt:
            state = ops.agent(conn, env, "stop", job, timeout=120)
            print(f"lmdev: cancelled {job} (Slurm state {state.get('slurm_state')})", file=sys.stderr)
            return 130
        print(f"lmdev: detached; {job} goes on. Pick it up with `lmdev remote attach {conn.remote.name} {job}`",
              file=sys.stderr)
        return 130
    print(f"lmdev: {job} {end['state']} (exit status {end['exit_code']}), run {end.get('run_id')}",
          file=sys.stderr)
    return 0 if end["exit_code"] == 0 else 1


@dataclass
class TrainRequest:
    """``lmdev remote train`` (and ``lmdev train --on REMOTE``)."""

    name: str
    config: str
    sync: str | None = None
    overrides: list[str] = field(default_factory=list)
    run_name: str | None = None
    detach: bool = False
    pull: bool = False
    sbatch: dict[str, str] | None = None  # through Slurm with these #SBATCH options


def train_remote(req: TrainRequest) -> int:
    """Send the project, start ``lmdev train`` detached on the remote, follow it unless ``detach``."""
    from lmdev.errors import LmdevError
    from lmdev.remote import ops

    name, config, sync, overrides, run_name = req.name, req.config, req.sync, req.overrides, req.run_name
    detach, pull, sbatch = req.detach, req.pull, req.sbatch

    cfg = Path(config).resolve()
    if not cfg.is_file():
        raise LmdevError(f"config {config} does not exist", "give the path of a training config")
    folder = Path(sync).resolve() if sync else ops.default_sync_dir(cfg)
    if not cfg.is_relative_to(folder):
        raise LmdevError(f"config {config} is not inside the project folder {folder}",
                         "pass --sync DIR with a folder that holds the config")
    with ops.session(name) as (conn, env):
        s = ops.sync(conn, env, folder)
        print(f"lmdev: sent {len(s.sent)} changed file(s) of {s.files} to {name}:{s.remote_dir}", file=sys.stderr)
        argv = ops.train_argv(str(cfg.relative_to(folder)), overrides, run_name)
        job = ops.start_job(conn, env, ops.JobSpec(argv, s.remote_dir, sbatch=sbatch))
        how = "submitted to Slurm" if sbatch is not None else "started"
        print(f"lmdev: {how} job {job} on {name} (it survives a dropped connection)", file=sys.stderr)
        if detach:
            print(job)
            return 0
        code = _follow(conn, env, job, cancel_on_interrupt=sbatch is not None)
        if pull and code != 130:
            _render_pull(ops.pull(conn, env, []), as_json=False)
    return code


def sbatch_options(slurm: bool, items: list[str]) -> dict[str, str] | None:
    """``--slurm`` and its ``--sbatch KEY=VALUE`` options (None: not through Slurm)."""
    from lmdev.errors import LmdevError

    if items and not slurm:
        raise LmdevError("--sbatch needs --slurm", "add --slurm to submit through Slurm")
    if not slurm:
        return None
    sbatch = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LmdevError(f"bad --sbatch {item!r}", "write --sbatch KEY=VALUE, e.g. partition=gpu")
        sbatch[key.lstrip("-")] = value
    return sbatch


def _train(args: argparse.Namespace) -> int:
    return train_remote(TrainRequest(args.name, args.config, args.sync, args.overrides, args.run_name, args.detach,
                                     args.pull, sbatch_options(args.slurm, args.sbatch)))


def _attach(args: argparse.Namespace) -> int:
    from lmdev.remote import ops

    with ops.session(args.name) as (conn, env):
        job = ops.agent(conn, env, "state", args.run)["job"]
        return _follow(conn, env, job)


def _stop(args: argparse.Namespace) -> int:
    from lmdev.remote import ops

    with ops.session(args.name) as (conn, env):
        state = ops.agent(conn, env, "stop", args.run, timeout=120)
    print(f"{state['job']}: {state['state']} (exit status {state['exit_code']}), run {state.get('run_id')}")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from lmdev.remote import ops

    with ops.session(args.name) as (conn, env):
        jobs = ops.agent(conn, env, "jobs")
    if args.json:
        _print_json(jobs)
        return 0
    table = Table("job", "kind", "state", "exit", "run", box=None)
    for j in jobs:
        table.add_row(escape(j["job"]), escape(str(j["kind"])), j["state"], str(j["exit_code"] if j["exit_code"]
                                                                               is not None else ""),
                      escape(j.get("run_id") or ""))
    _console().print(table)
    return 0


def _render_pull(results: list[Any], as_json: bool) -> None:
    from dataclasses import asdict

    if as_json:
        _print_json([{k: v for k, v in asdict(r).items() if k not in ("files", "remote_dir")} for r in results])
        return
    if not results:
        print("no runs on the remote yet")
    for r in results:
        added = f"+{r.points} points, +{r.system} system samples, +{r.events} events" + \
            (f", {r.fetched} file(s)" if r.fetched else "")
        print(f"{r.run_id} ({r.status}){' new' if r.new_run else ''}: {added}")


def _pull(args: argparse.Namespace) -> int:
    from lmdev.remote import ops

    with ops.session(args.name) as (conn, env):
        results = ops.pull(conn, env, args.runs, checkpoints=args.checkpoints)
    _render_pull(results, args.json)
    return 0


def _ui(args: argparse.Namespace) -> int:
    from lmdev.remote.tunnel import Tunnel

    tunnel = Tunnel(args.name, local_port=args.port, log=lambda m: print(m, file=sys.stderr, flush=True))
    try:
        url = tunnel.open()
        print(f"lmdev remote ui: {args.name}'s dashboard at {url}", flush=True)
        print("lmdev remote ui: press Ctrl+C to stop", file=sys.stderr, flush=True)
        tunnel.watch()
    except KeyboardInterrupt:
        pass
    finally:
        tunnel.close()
    return 0


_HANDLERS = {"add": _add, "list": _list, "rm": _rm, "check": _check, "doctor": _doctor, "setup": _setup, "plan": _plan,
             "train": _train, "attach": _attach, "stop": _stop, "jobs": _jobs, "pull": _pull, "ui": _ui}
