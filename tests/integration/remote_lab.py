"""A lab of real OpenSSH servers on 127.0.0.1 for the remote tests (never any other address).

Each "host" is its own ``sshd -D`` on a free loopback port with its own host key and its own
Unix user (so its own home folder); ``jump`` is a host in front of ``n2``. The client (these
tests) gets its own HOME with a generated key, an empty known_hosts and an ~/.ssh/config that
names ``n3`` as an alias. The remote sessions see ``PIP_CONFIG_FILE=/dev/null`` and a dead
``PIP_INDEX_URL``: the remote has no package index.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
# user, and whether its lmdev venv may import the test venv's site-packages (torch)
HOSTS = {"n1": True, "n2": True, "n3": False, "jump": False}
USER_PREFIX = "lmdevt"
# the test venv's site-packages (torch): the remote venvs of n1 and n2 may import it
SITE = sysconfig.get_paths()["purelib"]
SYSTEM_PYTHON = "/usr/bin/python3"  # what `python3` is for the test users


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Lab:
    dir: Path
    client_home: Path
    key: Path
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    site_packages: str = SITE

    def user(self, host: str) -> str:
        return f"{USER_PREFIX}{host}"

    def target(self, host: str) -> str:
        return f"{self.user(host)}@127.0.0.1:{self.ports[host]}"

    def home_of(self, host: str) -> Path:
        return Path(pwd.getpwnam(self.user(host)).pw_dir)

    def env(self, lmdev_home: Path) -> dict[str, str]:
        return {"HOME": str(self.client_home), "LMDEV_HOME": str(lmdev_home),
                "XDG_CACHE_HOME": str(self.dir / "cache")}

    def session_pids(self, host: str) -> list[int]:
        """Pids of the sshd processes serving this host's user (its live connections)."""
        import psutil

        out = []
        for p in psutil.process_iter(["pid", "name", "username", "cmdline"]):
            if p.info["name"] == "sshd" and p.info["username"] == self.user(host):
                out.append(p.info["pid"])
        return out

    def stop(self) -> None:
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


# Stub Slurm commands (real shell scripts; no real Slurm is involved): sbatch runs the job right
# here in its own session with SLURM_JOB_ID, SLURM_NNODES (from #SBATCH --nodes) and a node list of
# 127.0.0.1; srun runs its command once per node with SLURM_NODEID set; every state change is
# appended to ~/.slurm-stub/log (the job's state is ~/.slurm-stub/ID.state).
_SLURM_STUBS = {
    "sbatch": r"""#!/bin/sh
for a in "$@"; do script="$a"; done
D="$HOME/.slurm-stub"; mkdir -p "$D"
id=$(( $(cat "$D/next" 2>/dev/null || echo 1000) + 1 )); echo $id > "$D/next"
out=$(sed -n 's/^#SBATCH --output=//p' "$script")
echo PENDING > "$D/$id.state"; echo "$id PENDING" >> "$D/log"
setsid sh -c '
  D="$1"; id="$2"; script="$3"; out="$4"
  echo $$ > "$D/$id.pid"; sleep 0.5
  [ -f "$D/$id.cancelled" ] && exit 0
  echo RUNNING > "$D/$id.state"; echo "$id RUNNING" >> "$D/log"
  nodes=$(sed -n "s/^#SBATCH --nodes=//p" "$script"); nodes=${nodes%%-*}
  SLURM_JOB_ID=$id SLURM_NNODES=${nodes:-1} SLURM_JOB_NODELIST=127.0.0.1 sh "$script" >> "$out" 2>&1 &
  echo $! > "$D/$id.jobpid"; wait $!; rc=$?
  if [ -f "$D/$id.cancelled" ]; then s=CANCELLED; elif [ $rc = 0 ]; then s=COMPLETED; else s=FAILED; fi
  echo $rc > "$D/$id.rc"; echo $s > "$D/$id.state"; echo "$id $s" >> "$D/log"
' stub "$D" "$id" "$script" "$out" </dev/null >/dev/null 2>&1 &
echo $id
""",
    "squeue": r"""#!/bin/sh
D="$HOME/.slurm-stub"; while [ $# -gt 0 ]; do [ "$1" = -j ] && id="$2"; shift; done
s=$(cat "$D/$id.state" 2>/dev/null); case "$s" in PENDING|RUNNING) echo "$s";; esac
""",
    "sacct": r"""#!/bin/sh
D="$HOME/.slurm-stub"; while [ $# -gt 0 ]; do [ "$1" = -j ] && id="$2"; shift; done
[ -f "$D/$id.state" ] && echo "$(cat "$D/$id.state")|$(cat "$D/$id.rc" 2>/dev/null || echo 0):0"
""",
    # srun: the step's command once per "node" (all of them here), each with its SLURM_NODEID
    "srun": r"""#!/bin/sh
while [ $# -gt 0 ]; do case "$1" in -*) shift;; *) break;; esac; done
D="$HOME/.slurm-stub"; echo "$SLURM_JOB_ID srun-x$SLURM_NNODES" >> "$D/log"
pids=""; i=0
while [ $i -lt "${SLURM_NNODES:-1}" ]; do
  SLURM_NODEID=$i SLURM_PROCID=$i "$@" & pids="$pids $!"; i=$((i + 1))
done
rc=0; for p in $pids; do wait $p || rc=$?; done; exit $rc
""",
    "scontrol": r"""#!/bin/sh
[ "$1 $2" = "show hostnames" ] && echo "$3" | tr ',' '\n'
""",
    "scancel": r"""#!/bin/sh
D="$HOME/.slurm-stub"; id="$1"; touch "$D/$id.cancelled"
if [ "$(cat "$D/$id.state")" = PENDING ]; then echo CANCELLED > "$D/$id.state"; echo "$id CANCELLED" >> "$D/log"; fi
[ -f "$D/$id.jobpid" ] && kill -TERM "$(cat "$D/$id.jobpid")" 2>/dev/null
exit 0
""",
}


def write_slurm_stubs(folder: Path) -> Path:
    folder.mkdir(mode=0o755, exist_ok=True)
    for name, text in _SLURM_STUBS.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def _ensure_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], check=True)
    # no password, but not a locked account (sshd without PAM refuses locked ones)
    subprocess.run(["usermod", "-p", "*", user], check=True)


def _config(lab: Lab, host: str, port: int) -> str:
    return f"""ListenAddress 127.0.0.1
Port {port}
HostKey {lab.dir}/{host}_host_key
PidFile {lab.dir}/{host}.pid
AuthorizedKeysFile {lab.dir}/authorized_keys
AllowUsers {lab.user(host)}
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
AllowTcpForwarding yes
Subsystem sftp internal-sftp
SetEnv PIP_CONFIG_FILE=/dev/null PIP_INDEX_URL=http://127.0.0.1:9/simple PIP_FIND_LINKS=
LogLevel ERROR
"""


def start_lab() -> Lab:
    d = Path(tempfile.mkdtemp(prefix="lmdev-sshd-"))
    d.chmod(0o755)
    client_home = d / "client"
    (client_home / ".ssh").mkdir(parents=True, mode=0o700)
    key = client_home / ".ssh" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    shutil.copy(f"{key}.pub", d / "authorized_keys")
    (d / "authorized_keys").chmod(0o644)
    Path("/run/sshd").mkdir(exist_ok=True)
    lab = Lab(dir=d, client_home=client_home, key=key)
    write_slurm_stubs(d / "slurm-bin")
    for host in HOSTS:
        _ensure_user(lab.user(host))
        for stale in (".lmdev-remote", ".slurm-stub"):
            shutil.rmtree(lab.home_of(host) / stale, ignore_errors=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / f"{host}_host_key")], check=True)
        port = free_port()
        (d / f"{host}.conf").write_text(_config(lab, host, port))
        lab.ports[host] = port
        lab.procs[host] = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / f"{host}.conf")],
                                           stdout=subprocess.DEVNULL, stderr=open(d / f"{host}.log", "w"))
    (client_home / ".ssh" / "config").write_text(
        f"Host node3\n  HostName 127.0.0.1\n  Port {lab.ports['n3']}\n  User {lab.user('n3')}\n"
        f"  IdentityFile {key}\n")
    deadline = time.monotonic() + 10
    for host, port in lab.ports.items():
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError as exc:
                if time.monotonic() > deadline:
                    lab.stop()
                    raise RuntimeError(f"sshd for {host} did not start: {(d / f'{host}.log').read_text()}") from exc
                time.sleep(0.05)
    return lab


def can_run() -> str | None:
    """Why the lab cannot run here (None when it can)."""
    if not os.path.exists(SSHD):
        return "openssh-server is not installed (apt-get install -y openssh-server)"
    if os.geteuid() != 0:
        return "the sshd lab needs root (it creates test users)"
    path = Path(SITE)
    if not all(p.stat().st_mode & 0o005 == 0o005 for p in [path, *path.parents]):
        return f"other users cannot read the test venv's {SITE} (the lab's hosts are other users)"
    try:
        ver = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{SYSTEM_PYTHON} is missing"
    if ver != str(tuple(sys.version_info[:2])):
        return f"{SYSTEM_PYTHON} is Python {ver}, the test venv {sys.version_info[:2]}: they cannot share torch"
    return None
