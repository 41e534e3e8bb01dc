"""``lmdev cluster``: several remotes as one distributed environment.

``check`` asks every node at once: reachable, the same lmdev (version and code fingerprint), the
same environment lock (``lmdev remote setup``), clock skew against this machine, /dev/shm, a free
rendezvous port on the first node, and a real all-reduce across all nodes with its bandwidth.
``train`` sends the project to every node and runs torchrun there with node ranks and a static
rendezvous on the first node; the run is recorded by rank 0 and pulled into the local store, with
every node's log beside it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError
from lmdev.remote import bootstrap, hosts, ops, ssh
from lmdev.remote.bootstrap import RemoteEnv
from lmdev.remote.hosts import Cluster, Remote
from lmdev.remote.ssh import Connection

MAX_SKEW_S = 2.0
MIN_SHM_BYTES = 512 * 2**20


@dataclass
class Node:
    remote: Remote
    conn: Connection
    env: RemoteEnv


@dataclass
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""
    node: str | None = None


@dataclass
class CheckReport:
    cluster: str
    nodes: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    allreduce: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)


def create(name: str, host_names: list[str], master_addr: str | None, port: int) -> Cluster:
    hosts.check_name(name)
    reg = hosts.load()
    missing = [h for h in host_names if h not in reg.remotes]
    if missing:
        raise LmdevError(f"unknown remote(s): {', '.join(missing)}", "add each with `lmdev remote add NAME HOST`")
    if len(set(host_names)) != len(host_names) or not host_names:
        raise LmdevError("a cluster needs one or more distinct remotes", "e.g. --hosts gpu1,gpu2")
    c = Cluster(name=name, hosts=host_names, master_addr=master_addr, port=port)
    reg.clusters[name] = c
    hosts.save(reg)
    return c


def master_addr(c: Cluster, first: Remote) -> str:
    """The address the other nodes reach the first node at."""
    return c.master_addr or first.host


def _open(remote: Remote) -> Node:
    conn = ssh.connect(remote)
    try:
        return Node(remote, conn, bootstrap.ensure(conn))
    except BaseException:
        conn.close()
        raise


@contextmanager
def nodes_of(name: str) -> Iterator[tuple[Cluster, list[Node]]]:
    """Connections to every node, opened in parallel (each checked and bootstrapped)."""
    c, remotes = hosts.get_cluster(name)
    with ExitStack() as stack, ThreadPoolExecutor(len(remotes)) as pool:
        futures = [pool.submit(_open, r) for r in remotes]
        nodes = []
        errors = []
        for r, f in zip(remotes, futures):
            try:
                nodes.append(f.result())
                stack.callback(nodes[-1].conn.close)
            except LmdevError as exc:
                errors.append(f"{r.name}: {exc.message}")
        if errors:
            raise LmdevError(f"cluster {name}: {len(errors)} node(s) not usable: " + "; ".join(errors),
                             "fix each with `lmdev remote check NODE`")
        yield c, nodes


def _parallel(nodes: list[Node], fn: Callable[[int, Node], Any]) -> list[Any]:
    with ThreadPoolExecutor(len(nodes)) as pool:
        return [f.result() for f in [pool.submit(fn, i, n) for i, n in enumerate(nodes)]]


def _node_findings(rep: CheckReport, nodes: list[Node], infos: list[dict[str, Any]], skews: list[float]) -> None:
    from lmdev.remote.bundle import fingerprint

    here = fingerprint()
    for n, info, skew in zip(nodes, infos, skews):
        name = n.remote.name
        rep.nodes.append({"name": name, "hostname": info["hostname"], "lmdev_version": info["lmdev_version"],
                          "fingerprint": info["fingerprint"], "python": info["python"],
                          "clock_skew_seconds": round(skew, 4), "shm_free": info["shm_free"],
                          "lock_digest": info.get("lock_digest")})
        rep.findings.append(Finding("reachable", True, f"{n.remote.target} answers", node=name))
        same = info["fingerprint"] == here
        rep.findings.append(Finding("same lmdev", same, f"{info['lmdev_version']} ({info['fingerprint']}), "
                                    f"here {here}", "run `lmdev remote check NODE` to update it", name))
        rep.findings.append(Finding("clock skew", abs(skew) <= MAX_SKEW_S, f"{skew:+.3f} s against this machine",
                                    "run an NTP client (chrony, systemd-timesyncd) on every node", name))
        shm = info["shm_free"]
        rep.findings.append(Finding("/dev/shm", shm is not None and shm >= MIN_SHM_BYTES,
                                    "missing" if shm is None else f"{shm / 2**30:.1f} GiB free",
                                    "give /dev/shm at least 512 MiB (docker: --shm-size=1g)", name))


def lock_findings(digests: dict[str, str | None]) -> list[Finding]:
    """Every node's environment lock (``lmdev remote setup``) must be the same: the most common
    digest (the first node's on a tie) is the reference; each node that differs is named."""
    from collections import Counter

    names = list(digests)
    if not names:
        return []
    counts = Counter(digests.values())
    ref = max(counts, key=lambda d: (counts[d], d == digests[names[0]]))
    if len(counts) == 1:
        detail = (f"every node has lock {ref}" if ref else
                  "no node has an environment lock yet (set them up with `lmdev remote setup NODE`)")
        return [Finding("same environment", True, detail)]
    holders = [n for n in names if digests[n] == ref]
    out = []
    for n in names:
        if digests[n] != ref:
            have = f"lock {digests[n]}" if digests[n] else "no lock"
            want = f"lock {ref}" if ref else "no lock"
            out.append(Finding("same environment", False, f"{have}, while {', '.join(holders)} "
                               f"{'has' if len(holders) == 1 else 'have'} {want}",
                               f"lmdev remote setup {n} (with the same stacks or --bundle TAR as the others)", n))
    return out


def _info_and_skew(_i: int, n: Node) -> tuple[dict[str, Any], float]:
    info = ops.agent(n.conn, n.env, "info")
    best: tuple[float, float] | None = None
    for _ in range(3):  # the remote clock read by the shell, against the midpoint of the round trip
        t0 = time.time()
        there = float(n.conn.run("date +%s.%N", timeout=30).stdout.strip() or "nan")
        t1 = time.time()
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, there - (t0 + t1) / 2)
    return info, best[1] if best else 0.0


def check(name: str, mbytes: float = 16.0, iters: int = 5) -> CheckReport:
    rep = CheckReport(cluster=name)
    with nodes_of(name) as (c, nodes):
        pairs = _parallel(nodes, _info_and_skew)
        _node_findings(rep, nodes, [p[0] for p in pairs], [p[1] for p in pairs])
        rep.findings += lock_findings({n.remote.name: p[0].get("lock_digest") for n, p in zip(nodes, pairs)})
        addr = master_addr(c, nodes[0].remote)
        free = ops.agent(nodes[0].conn, nodes[0].env, "port-free", str(c.port))["free"]
        rep.findings.append(Finding("rendezvous port", free, f"{addr}:{c.port} is {'free' if free else 'in use'}",
                                    f"choose another with `lmdev cluster create {name} ... --port P`",
                                    nodes[0].remote.name))
        if not free:
            return rep
        world = len(nodes)

        def reduce(i: int, n: Node) -> Any:
            return ops.agent(n.conn, n.env, "allreduce", "--rank", str(i), "--world", str(world), "--addr", addr,
                             "--port", str(c.port), "--mbytes", str(mbytes), "--iters", str(iters), timeout=180)

        try:
            results = _parallel(nodes, reduce)
        except LmdevError as exc:
            rep.findings.append(Finding("all-reduce", False, exc.message,
                                        f"check that every node reaches {addr}:{c.port} (firewall) and has torch"))
            return rep
        slowest = max(results, key=lambda r: r["seconds"])
        rep.allreduce = {**slowest, "nodes": world}
        ok = all(r["sum_ok"] for r in results)
        rep.findings.append(Finding("all-reduce", ok, f"{slowest['backend']} over {world} node(s): "
                                    f"{slowest['bytes'] / 1e6:.0f} MB in {slowest['seconds'] * 1000:.1f} ms, bus "
                                    f"bandwidth {slowest['busbw_gbps']:.2f} GB/s" + ("" if ok else ", WRONG SUM"),
                                    "" if ok else "the nodes disagree: check their torch versions"))
    return rep


def new_job_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass
class Rendezvous:
    addr: str
    port: int
    world: int  # nodes
    job: str  # the rendezvous id: one run id per launch


@dataclass
class Launch:
    """What ``cluster train`` runs: a config inside a project folder, on nproc workers per node."""

    config: Path
    folder: Path
    overrides: list[str] = field(default_factory=list)
    nproc: int = 1


def node_argv(cfg_args: list[str], nproc: int, rank: int, rdzv: Rendezvous) -> list[str]:
    """torchrun on one node (the launcher of ``lmdev train --nnodes``), with the job as rendezvous id."""
    from lmdev.train.launch import torchrun_command

    cmd = torchrun_command(cfg_args, nproc, rdzv.world, rank, rdzv.addr, rdzv.port, python="{python}")
    at = cmd.index("-m", 3)  # after the launcher's own options
    return [*cmd[:at], f"--rdzv-id={rdzv.job}", *cmd[at:]]


@dataclass
class TrainResult:
    job: str
    states: list[dict[str, Any]]
    run_id: str | None
    pulled: list[Any] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)


def _wait_all(nodes: list[Node], job: str, timeout: float = 600) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        states = [ops.agent(n.conn, n.env, "state", job) for n in nodes]
        if all(s["exit_code"] is not None for s in states) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def train(name: str, launch: Launch, f: ops.Follow) -> TrainResult:
    """Run the config on every node of the cluster (torchrun, node ranks 0..N-1) and pull the run."""
    from lmdev.track.store import home, run_dir

    rel = str(launch.config.relative_to(launch.folder))
    with nodes_of(name) as (c, nodes):
        addr = master_addr(c, nodes[0].remote)
        if not ops.agent(nodes[0].conn, nodes[0].env, "port-free", str(c.port))["free"]:
            raise LmdevError(f"the rendezvous port {c.port} on {nodes[0].remote.name} is in use",
                             "recreate the cluster with another --port, or wait for the job that holds it")
        dirs = _parallel(nodes, lambda _i, n: ops.sync(n.conn, n.env, launch.folder).remote_dir)
        rdzv = Rendezvous(addr, c.port, len(nodes), new_job_id())
        job = rdzv.job
        cfg_args = [rel] + [x for o in launch.overrides for x in ("--set", o)]
        for i, n in enumerate(nodes):
            argv = node_argv(cfg_args, launch.nproc, i, rdzv)
            ops.start_job(n.conn, n.env, ops.JobSpec(argv, dirs[i], kind="cluster", job=job))
        end = ops.follow(nodes[0].conn, nodes[0].env, job, f)
        states = _wait_all(nodes, job)
        result = TrainResult(job, states, end.get("run_id"))
        if result.run_id:
            result.pulled = ops.pull(nodes[0].conn, nodes[0].env, [result.run_id])
            logs = run_dir(home(), result.run_id) / "logs"
            for n in nodes:
                local = logs / f"{n.remote.name}.log"
                n.conn.get([(f"{n.env.root}/jobs/{job}/out.log", local)])
                result.logs.append(local)
    return result
