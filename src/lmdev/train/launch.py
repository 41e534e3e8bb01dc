"""Launching ``lmdev train`` on several workers, and what a worker is told by its launcher: the
torchrun command line, each worker's share of the cores, its rank and restart count. Plain
data, no torch import (``lmdev plan`` prints the command too). The one place lmdev's training
reads the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, TORCHELASTIC_*, OMP_NUM_THREADS)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lmdev.errors import LmdevError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass
class WorkerPlace:
    """Where this process is among the workers of a launch (one worker: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    restart: int = 0  # how often torchrun restarted the workers (--max-restarts)
    launched: bool = False  # started by torchrun (even as a world of one)


def worker_place(environ: Mapping[str, str]) -> WorkerPlace:
    """This worker's place, from the variables torchrun sets."""
    def number(name: str, default: int) -> int:
        value = environ.get(name, "").strip()
        return int(value) if value.isdigit() else default

    world = number("WORLD_SIZE", 1)
    return WorkerPlace(rank=number("RANK", 0), world=world, local_rank=number("LOCAL_RANK", 0),
                       restart=number("TORCHELASTIC_RESTART_COUNT", 0),
                       launched="TORCHELASTIC_RUN_ID" in environ or world > 1)


def torchrun_command(config_args: list[str], nproc: int, nnodes: int = 1, node_rank: int = 0,
                     master_addr: str | None = None, master_port: int | None = None,
                     rdzv_endpoint: str | None = None, max_restarts: int = 0,
                     join_timeout: float = 300.0, python: str | None = None,
                     rdzv_id: str | None = None) -> list[str]:
    """The torchrun command line that runs ``lmdev train`` on ``nproc`` workers of this node.
    ``rdzv_id`` names the launch (see :func:`rendezvous_id`); ``--standalone`` makes its own."""
    cmd = [python or sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           f"--max-restarts={max_restarts}"]
    standalone = nnodes == 1 and not rdzv_endpoint and not master_addr
    launch_id = None if standalone else (rdzv_id or rendezvous_id(nnodes, os.environ))
    if launch_id:
        cmd.append(f"--rdzv-id={launch_id}")
    if standalone:
        cmd.append("--standalone")
    elif rdzv_endpoint:
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                f"--rdzv-conf=join_timeout={int(join_timeout)}"]
    else:
        cmd += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--master-addr={master_addr or '127.0.0.1'}",
                f"--master-port={master_port or 29500}", f"--rdzv-conf=timeout={int(join_timeout)}"]
    return cmd + ["-m", "lmdev", "train", *config_args]


RDZV_ID_VARIABLE = "LMDEV_RDZV_ID"


def rendezvous_id(nnodes: int, environ: Mapping[str, str]) -> str | None:
    """The id of one launch, which every node of it must share (torchrun's default, "none", is
    shared by every launch at the same address: a second training would join the first's run):
    LMDEV_RDZV_ID, else the Slurm job's id, else on one node a fresh random one. None for
    several nodes without either: they cannot agree on one by themselves
    (:func:`check_rendezvous_id` refuses that launch)."""
    given = environ.get(RDZV_ID_VARIABLE, "").strip()
    if given:
        return given
    if environ.get("SLURM_JOB_ID", "").strip():
        return f"slurm-{environ['SLURM_JOB_ID'].strip()}"
    if nnodes == 1:
        import uuid

        return uuid.uuid4().hex[:16]
    return None


def check_rendezvous_id(nnodes: int, environ: Mapping[str, str]) -> None:
    """A launch over several nodes needs an id they share (:func:`rendezvous_id`)."""
    if rendezvous_id(nnodes, environ) is None:
        raise LmdevError(f"a launch over {nnodes} nodes needs an id that every node shares",
                         f"set {RDZV_ID_VARIABLE} to the same new value on every node "
                         f"(e.g. {RDZV_ID_VARIABLE}=$(date +%Y%m%d-%H%M)), then launch again")


def port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def launch_plan(config_path: str, batch_size: int, grad_accum: int, nproc: int, nnodes: int = 1) -> dict[str, Any]:
    """The per-rank batch and the commands that run ``config_path`` on nproc x nnodes workers."""
    world = nproc * nnodes
    per_rank = batch_size // world if batch_size % world == 0 else None
    return {
        "workers": world,
        "per_rank_batch": per_rank,
        "micro_batch": per_rank // grad_accum if per_rank and per_rank % grad_accum == 0 else None,
        "lmdev": ["lmdev", "train", config_path, "--nproc", str(nproc)]
        + (["--nnodes", str(nnodes)] if nnodes > 1 else []),
        "torchrun": torchrun_command([config_path], nproc, nnodes, master_addr="MASTER_ADDR" if nnodes > 1 else None,
                                     python="python", rdzv_id="RUN_ID" if nnodes > 1 else None),
    }


def check_global_batch(batch_size: int, world: int, accum: int) -> None:
    if batch_size % (world * accum):
        raise LmdevError(
            f"data.batch_size {batch_size} (the global batch) does not split evenly over "
            f"{world} worker(s) x {accum} accumulation step(s)",
            f"use a batch size divisible by {world * accum}")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def threads_per_worker(cpus: int, workers: int) -> int:
    """Each of ``workers`` ranks on a machine of ``cpus`` CPUs gets cpus / workers threads (at
    least one): more, and the ranks' OpenMP pools fight over the cores (a run was measured ~100x
    slower on a loaded 2-core machine)."""
    return max(1, cpus // max(1, workers))


def worker_thread_env(environ: Mapping[str, str], workers: int, cpus: int | None = None) -> dict[str, str]:
    """The environment for the workers of this machine: OMP_NUM_THREADS and MKL_NUM_THREADS set
    to the threads per worker, except a value the user set explicitly (kept as it is). The
    workers call ``torch.set_num_threads`` with OMP_NUM_THREADS (``apply_worker_threads``)."""
    n = str(threads_per_worker(cpus if cpus is not None else usable_cpus(), workers))
    env = dict(environ)
    for name in THREAD_VARIABLES:
        if not env.get(name, "").strip():
            env[name] = n
    return env


def worker_threads(environ: Mapping[str, str]) -> int | None:
    """The thread count a worker is told by OMP_NUM_THREADS (None: unset or not a positive integer)."""
    value = environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
