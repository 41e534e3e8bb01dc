"""Slurm through a login node (runs on the remote, inside the agent).

A job becomes an sbatch script (the job's command, its folder, the remote store as LMDEV_HOME,
``#SBATCH`` lines from ``--sbatch KEY=VALUE``; with ``--sbatch nodes=N`` the command runs under
``srun`` once per node as ``lmdev train --nnodes N --node-rank $SLURM_NODEID``); ``squeue`` says whether it is pending or running,
``sacct`` how it ended; ``scancel`` stops it. The script writes its shell's pid before ``exec``
so the run it records can be found by pid like a plain job's.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError

ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING"}
_KEY = re.compile(r"^[a-z][a-z0-9-]*$")


def _cmd(spec: dict[str, Any], name: str) -> str:
    folder = spec.get("slurm_bin")
    return os.path.join(folder, name) if folder else name


def nodes(spec: dict[str, Any]) -> int:
    """The node count asked with ``--sbatch nodes=N`` (1 when not asked)."""
    value = str((spec.get("sbatch") or {}).get("nodes", "1")).split("-")[0]
    if not value.isdigit() or int(value) < 1:
        raise LmdevError(f"bad --sbatch nodes={value!r}", "give a number of nodes, e.g. --sbatch nodes=2")
    return int(value)


def multinode_command(spec: dict[str, Any], argv: list[str]) -> list[str]:
    """The script's last lines for ``nodes`` > 1: ``srun`` starts one ``lmdev train`` per node (one
    task each), which launches torchrun there with the node's rank; node 0 of the allocation is the
    rendezvous, on a port derived from the job id."""
    inner = (shlex.join(argv) + ' --nnodes "$SLURM_NNODES" --node-rank "$SLURM_NODEID" '
             '--master-addr "$LMDEV_MASTER_ADDR" --master-port "$LMDEV_MASTER_PORT"')
    return [f'LMDEV_MASTER_ADDR=$({shlex.quote(_cmd(spec, "scontrol"))} show hostnames "$SLURM_JOB_NODELIST" '
            "| head -n 1)",
            'LMDEV_MASTER_PORT=$((20000 + ${SLURM_JOB_ID:-0} % 20000))',
            "export LMDEV_MASTER_ADDR LMDEV_MASTER_PORT",
            "exec " + shlex.join([_cmd(spec, "srun"), "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                                  "sh", "-c", "exec " + inner])]


def script(job_dir: Path, spec: dict[str, Any], argv: list[str], env: dict[str, str]) -> str:
    """The sbatch script: #SBATCH options, the project folder, the remote store, then the job
    (through ``srun`` on every node when ``--sbatch nodes=N`` asks for more than one)."""
    options = dict(spec.get("sbatch") or {})
    lines = ["#!/bin/sh", f"#SBATCH --job-name=lmdev-{job_dir.name}", f"#SBATCH --output={job_dir}/out.log",
             "#SBATCH --open-mode=append"]
    many = nodes(spec) > 1
    if many:
        options.setdefault("ntasks-per-node", "1")
    for key, value in sorted(options.items()):
        if not _KEY.match(key) or "\n" in str(value):
            raise LmdevError(f"bad --sbatch option {key}={value!r}", "write --sbatch KEY=VALUE, e.g. partition=gpu")
        lines.append(f"#SBATCH --{key}={value}")
    lines += [f"cd {shlex.quote(spec['cwd'])} || exit 1"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
    lines += [f"echo $$ > {shlex.quote(str(job_dir / 'pid'))}"]
    lines += multinode_command(spec, argv) if many else ["exec " + shlex.join(argv)]
    return "\n".join(lines) + "\n"


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise LmdevError(f"{argv[0]} is not on this remote's PATH",
                         "is this a Slurm login node? name the folder with `lmdev remote add ... --slurm-bin DIR`") \
            from None


def submit(job_dir: Path, spec: dict[str, Any], argv: list[str], env: dict[str, str]) -> str:
    path = job_dir / "job.sbatch"
    path.write_text(script(job_dir, spec, argv, env))
    r = _run([_cmd(spec, "sbatch"), "--parsable", str(path)])
    if r.returncode != 0 or not r.stdout.strip():
        raise LmdevError(f"sbatch refused the job: {(r.stderr or r.stdout).strip()[-300:]}",
                         f"look at the script {path} and your --sbatch options")
    return r.stdout.strip().split(";")[0]


def state(spec: dict[str, Any]) -> tuple[str, int | None]:
    """(Slurm state, exit code once the job has ended)."""
    jid = str(spec["slurm_id"])
    q = _run([_cmd(spec, "squeue"), "-h", "-j", jid, "-o", "%T"])
    now = q.stdout.strip().split("\n")[0].strip() if q.returncode == 0 else ""
    if now in ACTIVE:
        return now, None
    a = _run([_cmd(spec, "sacct"), "-j", jid, "-n", "-P", "-X", "-o", "State,ExitCode"])
    line = a.stdout.strip().split("\n")[0] if a.returncode == 0 else ""
    if "|" not in line:
        return now or "UNKNOWN", None  # not in the accounting yet
    st, code = line.split("|", 1)
    st = st.split()[0] if st else "UNKNOWN"
    if st in ACTIVE:
        return st, None
    rc = int(code.split(":")[0] or 0) if code.split(":")[0].isdigit() else 1
    if st == "CANCELLED":
        rc = rc or 143
    elif st != "COMPLETED":
        rc = rc or 1
    return st, rc


def cancel(spec: dict[str, Any]) -> None:
    r = _run([_cmd(spec, "scancel"), str(spec["slurm_id"])])
    if r.returncode != 0:
        raise LmdevError(f"scancel {spec['slurm_id']} failed: {r.stderr.strip()[-300:]}")
