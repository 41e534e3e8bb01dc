"""Named remotes and clusters, stored in ``$LMDEV_HOME/remotes.json`` (never a password)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmdev.errors import LmdevError
from lmdev.fsutil import atomic_write_text
from lmdev.track.store import home

FILE_NAME = "remotes.json"
DEFAULT_ROOT = "~/.lmdev-remote"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Remote:
    """One SSH host. ``host`` may be an address or a ``Host`` name from ~/.ssh/config."""

    name: str
    host: str
    user: str | None = None
    port: int | None = None
    key: str | None = None
    jump: str | None = None  # [user@]host[:port] or the name of another remote
    root: str = DEFAULT_ROOT  # the user-owned folder lmdev lives in on the remote
    python: str = "python3"  # the interpreter the remote venv is made from
    site_packages: str | None = None  # an existing site-packages the venv may import (e.g. torch)
    slurm_bin: str | None = None  # where sbatch/squeue/sacct/scancel are, when not on the PATH

    @property
    def target(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}"


@dataclass
class Cluster:
    name: str
    hosts: list[str]
    master_addr: str | None = None
    port: int = 29500


@dataclass
class Registry:
    remotes: dict[str, Remote] = field(default_factory=dict)
    clusters: dict[str, Cluster] = field(default_factory=dict)


def parse_target(text: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` -> (user, host, port); ``[::1]:22`` style brackets accepted."""
    user = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
    port = None
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if m:
        host, port_text = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise LmdevError(f"bad port in {text!r}", "write [USER@]HOST[:PORT], e.g. me@gpu1:2222")
        port = int(port_text)
    if not host or (user is not None and not user):
        raise LmdevError(f"bad SSH target {text!r}", "write [USER@]HOST[:PORT], e.g. me@gpu1:2222")
    return user, host, port


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise LmdevError(f"bad name {name!r}", "use letters, digits, '.', '_' and '-' (at most 64)")
    return name


def _path(home_dir: Path | None) -> Path:
    return home(home_dir) / FILE_NAME


def load(home_dir: Path | None = None) -> Registry:
    path = _path(home_dir)
    if not path.exists():
        return Registry()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Registry(
            remotes={k: Remote(**v) for k, v in data.get("remotes", {}).items()},
            clusters={k: Cluster(**v) for k, v in data.get("clusters", {}).items()},
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise LmdevError(f"{path} is not a remotes file ({exc})",
                         f"fix it by hand or move it aside (mv {path} {path}.bad)") from None


def save(reg: Registry, home_dir: Path | None = None) -> Path:
    path = _path(home_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"remotes": {k: asdict(v) for k, v in sorted(reg.remotes.items())},
                            "clusters": {k: asdict(v) for k, v in sorted(reg.clusters.items())}}
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def get(name: str, home_dir: Path | None = None) -> Remote:
    reg = load(home_dir)
    if name not in reg.remotes:
        known = ", ".join(sorted(reg.remotes)) or "none yet"
        raise LmdevError(f"no remote named {name!r} (known: {known})",
                         "add it with `lmdev remote add NAME [USER@]HOST[:PORT]`")
    return reg.remotes[name]


def get_cluster(name: str, home_dir: Path | None = None) -> tuple[Cluster, list[Remote]]:
    reg = load(home_dir)
    if name not in reg.clusters:
        known = ", ".join(sorted(reg.clusters)) or "none yet"
        raise LmdevError(f"no cluster named {name!r} (known: {known})",
                         "create it with `lmdev cluster create NAME --hosts a,b`")
    c = reg.clusters[name]
    missing = [h for h in c.hosts if h not in reg.remotes]
    if missing:
        raise LmdevError(f"cluster {name} names remotes that no longer exist: {', '.join(missing)}",
                         "add them again with `lmdev remote add`, or recreate the cluster")
    return c, [reg.remotes[h] for h in c.hosts]
