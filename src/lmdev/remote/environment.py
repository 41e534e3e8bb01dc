"""``lmdev remote setup``: ``lmdev setup`` on a remote, from its package index or from a bundle.

On the remote, setup works on lmdev's own venv (``ROOT/venv``: what ``remote train`` and ``cluster
train`` run in) and keeps its lock and plan in ``ROOT/env`` (the setup "project" there). When the
remote reaches its package indexes it runs ``lmdev setup STACK ...`` itself; when it does not (or
``--bundle``/``--offline`` is given) an offline bundle goes over SFTP and the remote runs ``lmdev
setup --from-bundle``: either the tar you name (made by ``lmdev setup bundle``), or one built here
for the remote's machine (its own dry-run plan's backend, Python and platform) with this machine's
index. The lock digest (:func:`lock_digest`) is what ``cluster check`` compares between nodes.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmdev.errors import LmdevError

if TYPE_CHECKING:  # the agent imports this module on the remote, where asyncssh is not installed
    from lmdev.remote.bootstrap import RemoteEnv
    from lmdev.remote.ssh import Connection, Result

Say = Callable[[str], None]


@dataclass
class SetupRequest:
    """What ``lmdev remote setup NAME [STACK ...]`` was asked."""

    stacks: list[str] = field(default_factory=list)
    bundle: Path | None = None  # an `lmdev setup bundle` tar made here: always ship this
    offline: bool = False  # ship a bundle built here even when the remote reaches an index
    project: Path = field(default_factory=Path.cwd)  # this machine's sources (pyproject) for a bundle
    verify: bool = True
    torch_index: str | None = None  # the remote's PyTorch index (as `lmdev setup --torch-index`)
    index_url: str | None = None  # the remote's general index (PIP_INDEX_URL there)


@dataclass
class SetupOutcome:
    source: str  # "index" or "bundle"
    index: dict[str, Any]  # what the remote reached (url -> bool)
    result: Result  # the remote `lmdev setup`'s exit status and output
    bundle: str | None = None  # the bundle's file name on the remote
    bundle_bytes: int = 0
    lock_digest: str | None = None


# -- the lock digest (both sides) ----------------------------------------------------------------

def lock_digest(folder: Path) -> str | None:
    """A digest of the packages every lock in ``folder`` pins (names, versions, file sha256s):
    equal on two machines when their environments hold the same files. None without a lock."""
    locks = sorted(p for p in folder.glob("pylock*.toml") if "lmdev-staging" not in p.name)
    if not locks:
        return None
    from lmdev.setup.lock import read_lock

    h = hashlib.sha256()
    for path in locks:
        pkgs = sorted((str(p["name"]).lower(), str(p["version"]),
                       sorted(w.get("hashes", {}).get("sha256", "") for w in p.get("wheels", [])))
                      for p in read_lock(path).packages)
        h.update(path.name.encode() + json.dumps(pkgs).encode())
    return h.hexdigest()[:16]


# -- the remote's indexes (runs on the remote, inside the agent) ---------------------------------

def _answers(url: str, timeout: float) -> bool:
    if "://" not in url:
        return Path(url).exists()
    if url.startswith("file://"):
        return Path(urllib.request.url2pathname(url[len("file://"):])).exists()
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # a server answered
    except (OSError, ValueError):
        return False


def index_check(project: Path, torch_index: str | None = None, index_url: str | None = None,
                timeout: float = 5.0) -> dict[str, Any]:
    """Whether this machine reaches the indexes ``lmdev setup`` would use here: one general source
    (index, extra index or find-links) and the PyTorch index."""
    import os

    from lmdev.setup.config import load_sources

    environ = dict(os.environ, **({"PIP_INDEX_URL": index_url} if index_url else {}))
    src = load_sources(project, environ, flags={"torch-index": torch_index})
    general = [] if src.no_index else [src.index_url or "https://pypi.org/simple/", *src.extra_index_urls]
    general += src.find_links
    torch = src.torch_index.replace("{backend}", "cpu")
    urls = {u: _answers(u, timeout) for u in [*general, torch]}
    ok = any(urls[u] for u in general) and urls[torch]
    return {"reachable": ok, "urls": urls}


# -- this side -----------------------------------------------------------------------------------

def _setup_command(env: RemoteEnv, args: list[str], req: SetupRequest) -> str:
    pre = f"PIP_INDEX_URL={shlex.quote(req.index_url)} " if req.index_url else ""
    return (f"cd {shlex.quote(env.root + '/env')} && {pre}LMDEV_HOME={shlex.quote(env.root + '/home')} "
            f"NO_COLOR=1 COLUMNS=120 {shlex.quote(env.python)} -m lmdev setup {shlex.join(args)}")


def _common_args(env: RemoteEnv, req: SetupRequest) -> list[str]:
    return ["--venv", f"{env.root}/venv", *([] if req.verify else ["--no-verify"]),
            *(["--torch-index", req.torch_index] if req.torch_index else [])]


def remote_plan(conn: Connection, env: RemoteEnv, req: SetupRequest) -> dict[str, Any]:
    """The plan ``lmdev setup --dry-run`` makes on the remote for its own machine."""
    r = conn.run(_setup_command(env, [*req.stacks, "--dry-run", "--json", *_common_args(env, req)], req),
                 timeout=300)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise _failed(conn, r) from None


def _failed(conn: Connection, r: Result) -> LmdevError:
    lines = (r.stderr.strip() or r.stdout.strip()).splitlines()
    last = lines[-1] if lines else f"exit status {r.code}"
    return LmdevError(f"lmdev setup on {conn.remote.name}: {last.removeprefix('lmdev: error: ')}",
                      "see the message above; `lmdev remote doctor NAME` shows the remote's facts")


def build_bundle_for(conn: Connection, env: RemoteEnv, req: SetupRequest, out_dir: Path) -> Path:
    """An offline bundle for the remote's machine, locked and packed here (this machine's index):
    the remote's own plan gives the backend and Python, its probe the platform."""
    from lmdev.remote import bootstrap
    from lmdev.remote.bundle import Target, uv_platform
    from lmdev.setup.bundle import build_bundle
    from lmdev.setup.engine import SetupOptions, run_setup

    plan = remote_plan(conn, env, req)
    backends = [b for e in plan["environments"] for b in e["backends"].values()]
    backend = backends[0] if backends else "cpu"
    facts = bootstrap.probe(conn, conn.remote)
    libc = tuple(facts["libc"]) if facts["libc"] and facts["libc"][0] else ("glibc", "2.17")
    platform = uv_platform(Target(tuple(facts["version"][:2]), facts["machine"], libc))  # type: ignore[arg-type]
    work = out_dir / "project"
    work.mkdir()
    if (req.project / "pyproject.toml").is_file():  # this machine's sources for the torch family etc.
        shutil.copyfile(req.project / "pyproject.toml", work / "pyproject.toml")
    opts = SetupOptions(stacks=req.stacks, project=work, python=plan["python"], for_profile=backend,
                        platform=platform, torch_index=None, verify=False)
    run_setup(opts)
    tar = out_dir / "bundle.tar"
    build_bundle(tar, work, profile=backend)
    return tar


def setup(conn: Connection, env: RemoteEnv, req: SetupRequest, as_json: bool, say: Say) -> SetupOutcome:
    """Run ``lmdev setup`` on the remote (see the module's docstring)."""
    from lmdev.fsutil import sha256_file
    from lmdev.remote.ops import agent

    if req.bundle is not None and not req.bundle.is_file():
        raise LmdevError(f"no bundle at {req.bundle}", "make one with `lmdev setup bundle OUT.tar`")
    flags = [*(["--torch-index", req.torch_index] if req.torch_index else []),
             *(["--index-url", req.index_url] if req.index_url else [])]
    ship = req.bundle is not None or req.offline  # a bundle in any case: no need to ask about indexes
    check = {"reachable": None, "urls": {}} if ship else agent(conn, env, "index", f"{env.root}/env", *flags)
    out = ["--json"] if as_json else []
    if not ship and check["reachable"]:
        say(f"{conn.remote.name} reaches its package index: running lmdev setup there")
        r = conn.run(_setup_command(env, [*req.stacks, *out, *_common_args(env, req)], req), timeout=3600)
        outcome = SetupOutcome("index", check, r)
    else:
        with tempfile.TemporaryDirectory(prefix="lmdev-remote-setup-") as tmp:
            if req.bundle is None:
                why = "--offline" if req.offline else f"{conn.remote.name} reaches no package index"
                say(f"{why}: building a bundle for it here")
            tar = req.bundle or build_bundle_for(conn, env, req, Path(tmp))
            name = f"setup-{sha256_file(tar)[:16]}.tar"
            size = tar.stat().st_size
            say(f"sending {tar.name} ({size / 1e6:.1f} MB) to {conn.remote.name}")
            conn.put([(tar, f"{env.root}/bundles/{name}")])
        args = ["--from-bundle", f"{env.root}/bundles/{name}", *out, *_common_args(env, req)]
        r = conn.run(_setup_command(env, args, req), timeout=3600)
        outcome = SetupOutcome("bundle", check, r, name, size)
    if outcome.result.code not in (0, 1) or "Traceback (most recent call last)" in outcome.result.stderr:
        raise _failed(conn, outcome.result)
    outcome.lock_digest = agent(conn, env, "info").get("lock_digest")
    return outcome
