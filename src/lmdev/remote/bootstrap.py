"""Ship lmdev to a remote without internet, and check its version on every connect.

The remote gets a user-owned folder (``Remote.root``, default ``~/.lmdev-remote``) with its own
venv made by the remote's Python (``python3 -m venv --without-pip``; no sudo). lmdev's wheel and
an ``lmdev setup bundle`` tar of its dependencies (uv and pip among them) arrive over SFTP from
``bundle.make_bundle``; uv, taken out of its wheel, installs them with ``--offline --no-index
--require-hashes`` (no pip or uv configuration of the remote is read). With
``Remote.site_packages`` the venv may also import an existing site-packages of the remote (for a
torch that is already there); nothing is ever installed into it.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmdev.errors import LmdevError
from lmdev.remote import bundle as bundle_mod
from lmdev.remote.hosts import Remote
from lmdev.remote.ssh import Connection

MARK = "@lmdev "
MIN_PYTHON = (3, 10)
_PROBE = ("import json,os,platform,shutil,sys;h=os.path.expanduser('~');"
          "print(json.dumps({'version':list(sys.version_info[:3]),'machine':platform.machine(),"
          "'libc':list(platform.libc_ver()),'home':h,'free':shutil.disk_usage(h).free}))")
_NO_INDEX = {"PIP_CONFIG_FILE": "/dev/null", "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
             "PIP_NO_CACHE_DIR": "1", "PIP_NO_INPUT": "1"}


@dataclass
class RemoteEnv:
    """lmdev as installed on a remote (what ``agent info`` says)."""

    root: str
    python: str  # the venv's interpreter, absolute
    info: dict[str, Any]
    bootstrapped: bool = False  # True when this connect installed or updated lmdev

    @property
    def version(self) -> str:
        return str(self.info.get("lmdev_version"))


def home_relative(path: str) -> str:
    """A path for a shell that has done ``cd`` (to the home folder): ``~/x`` -> ``x``."""
    if path == "~":
        return "."
    return path.removeprefix("~/")


def parse_result(stdout: str) -> Any:
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            data = json.loads(line[len(MARK):])
            if "result" in data:
                return data["result"]
    raise ValueError("no result line")


def agent_command(root: str, *args: str) -> str:
    return f"cd && {shlex.quote(home_relative(root) + '/venv/bin/python')} -m lmdev.remote.agent {shlex.join(args)}"


def _info(conn: Connection, root: str) -> dict[str, Any] | None:
    r = conn.run(agent_command(root, "info"), timeout=60)
    if r.code != 0:
        return None
    try:
        return parse_result(r.stdout)
    except ValueError:
        return None


def probe(conn: Connection, remote: Remote) -> dict[str, Any]:
    """The remote's Python: version, platform, home, free disk. Refuses Python < 3.10."""
    py = shlex.quote(home_relative(remote.python))
    r = conn.run(f"cd && {py} -c {shlex.quote(_PROBE)}", timeout=60)
    if r.code == 127 or "not found" in r.stderr or "No such file" in r.stderr:
        raise LmdevError(f"{remote.name} has no Python at {remote.python!r}",
                         "install Python 3.10+ there, or name one with `lmdev remote add ... --python PATH`")
    try:
        data = json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise LmdevError(f"{remote.python} on {remote.name} did not answer like Python 3 ({r.stderr.strip()[:200]})",
                         "name a Python 3.10+ with `lmdev remote add ... --python PATH`") from None
    if tuple(data["version"][:2]) < MIN_PYTHON:
        found = ".".join(map(str, data["version"]))
        raise LmdevError(f"{remote.name} has Python {found} at {remote.python}; lmdev needs 3.10 or newer",
                         "install a newer Python there and pass it with `lmdev remote add ... --python PATH`")
    return data


_UNPACK = ("import sys,tarfile;t=tarfile.open(sys.argv[1]);"
           "t.extractall(sys.argv[2],**({'filter':'data'} if hasattr(tarfile,'data_filter') else {}))")
# uv's executable, taken out of its wheel in the bundle: it installs the rest (many times faster than pip)
_UV = ("import glob,os,sys,zipfile;w=glob.glob(sys.argv[1]+'/wheels/uv-*.whl')[0];z=zipfile.ZipFile(w);"
       "n=[m for m in z.namelist() if m.endswith('.data/scripts/uv')][0];o=sys.argv[1]+'/uv';"
       "open(o,'wb').write(z.read(n));os.chmod(o,0o755)")


def install_script(remote: Remote, wheel_name: str, deps_name: str, fingerprint: str) -> str:
    """The shell script that installs lmdev from what was sent: the deps bundle (an ``lmdev setup
    bundle`` tar; uv from it installs every wheel with its sha256 checked) and lmdev's wheel; no
    index, no sudo, nothing outside ``Remote.root``."""
    r = shlex.quote(home_relative(remote.root))
    py = shlex.quote(home_relative(remote.python))
    link = (f'echo {shlex.quote(remote.site_packages)} > "$SP/_lmdev_linked.pth"' if remote.site_packages
            else 'rm -f "$SP/_lmdev_linked.pth"')
    installed = shlex.quote(json.dumps({"fingerprint": fingerprint, "wheel": wheel_name}))
    mark = shlex.quote(deps_name + (f" linked:{remote.site_packages}" if remote.site_packages else ""))
    env = " ".join(f"{k}={v}" for k, v in _NO_INDEX.items())
    uv = 'pip install --quiet --no-config --offline --no-index --python "$R/venv/bin/python"'
    return f"""set -e
cd
export {env}
R={r}
export UV_CACHE_DIR="$R/cache/uv" UV_LINK_MODE=copy UV_NO_PROGRESS=1
mkdir -p "$R/home" "$R/jobs" "$R/projects" "$R/env"
[ -x "$R/venv/bin/python" ] || {py} -m venv --without-pip "$R/venv"
SP=$("$R/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
{link}
if [ "$(cat "$R/deps.txt" 2>/dev/null)" != {mark} ] || [ ! -x "$R/venv/bin/uv" ]; then
  B="$R/bundles/unpacked"
  rm -rf "$B" && mkdir -p "$B"
  "$R/venv/bin/python" -c {shlex.quote(_UNPACK)} "$R/bundles/{deps_name}" "$B"
  "$R/venv/bin/python" -c {shlex.quote(_UV)} "$B"
  "$B/uv" {uv} --find-links "$B/wheels" --require-hashes --no-deps -r "$B/requirements.main.txt"
  rm -rf "$B"
  find "$R/bundles" -maxdepth 1 -name 'deps-*.tar' ! -name {shlex.quote(deps_name)} -delete
  printf '%s' {mark} > "$R/deps.txt"
fi
"$R/venv/bin/uv" {uv} --no-deps --reinstall "$R/wheels/{wheel_name}"
"$R/venv/bin/python" -c 'import sys; from lmdev.track.store import Store; Store(sys.argv[1]).close()' "$R/home"
printf '%s' {installed} > "$R/installed.json.tmp"
mv "$R/installed.json.tmp" "$R/installed.json"
"""


def install(conn: Connection, remote: Remote, make_bundle: Callable[[bundle_mod.Target], bundle_mod.Bundle]
            = bundle_mod.make_bundle) -> None:
    """Probe the remote, build the bundle for it, send what it lacks, install it offline."""
    facts = probe(conn, remote)
    libc = tuple(facts["libc"]) if facts["libc"] and facts["libc"][0] else ("glibc", "2.17")
    target = bundle_mod.Target(tuple(facts["version"][:2]), facts["machine"], libc)  # type: ignore[arg-type]
    b = make_bundle(target)
    need = (b.wheel.stat().st_size + b.deps.stat().st_size) * 4
    if facts["free"] < need:
        raise LmdevError(f"the disk of {remote.name} is full: {facts['free'] / 1e6:.0f} MB free in "
                         f"{facts['home']}, lmdev needs about {need / 1e6:.0f} MB",
                         "free space there, or choose another folder with `lmdev remote add ... --root DIR`")
    root_abs = remote.root.replace("~", facts["home"], 1) if remote.root.startswith("~") else remote.root
    have = conn.run(f"ls -1 {shlex.quote(root_abs)}/bundles 2>/dev/null", timeout=60).stdout.split()
    send = [(b.wheel, f"{root_abs}/wheels/{b.wheel.name}")]
    if b.deps.name not in have:
        send.append((b.deps, f"{root_abs}/bundles/{b.deps.name}"))
    conn.put(send)
    from lmdev.secure import audit  # the audit record of this bootstrap
    audit.record("remote.bootstrap", remote=remote.name, target=remote.target, fingerprint=b.fingerprint,
                 files=[p.name for p, _ in send], bundle=b.deps.name)
    r = conn.run("sh -s", input=install_script(remote, b.wheel.name, b.deps.name, b.fingerprint), timeout=900)
    if r.code != 0:
        text = (r.stderr or r.stdout).strip()
        if "No space left" in text:
            raise LmdevError(f"the disk of {remote.name} is full (installing lmdev failed)",
                             "free space there (df -h) and run the command again")
        raise LmdevError(f"installing lmdev on {remote.name} failed: {text[-500:]}",
                         "see the message above; the remote needs a working `python3 -m venv`")


def ensure(conn: Connection, make_bundle: Callable[[bundle_mod.Target], bundle_mod.Bundle]
           = bundle_mod.make_bundle) -> RemoteEnv:
    """lmdev on the remote, the same as here: checked on every connect, installed or fixed when not."""
    remote = conn.remote
    want = bundle_mod.fingerprint()
    info = _info(conn, remote.root)
    bootstrapped = False
    if info is None or info.get("fingerprint") != want:
        install(conn, remote, make_bundle)
        bootstrapped = True
        info = _info(conn, remote.root)
        if info is None or info.get("fingerprint") != want:
            raise LmdevError(f"lmdev on {remote.name} still differs from this one after installing "
                             f"(there: {None if info is None else info.get('fingerprint')}, here: {want})",
                             f"remove {remote.root} on the remote and try again")
    return RemoteEnv(root=info["root"], python=f"{info['root']}/venv/bin/python", info=info,
                     bootstrapped=bootstrapped)
