"""Where packages come from: the machine's pip configuration, translated, plus lmdev's own settings.

uv does not read pip's configuration, so a mirror or a ``file://`` index that pip knows about would
be ignored. :func:`load_sources` reads pip's files and ``PIP_*`` variables the way pip does
(global, then user, then site files, ``[global]`` then ``[install]``, environment last) and merges
lmdev's settings over them: a user file (``~/.config/lmdev/setup.toml``), the project's
``[tool.lmdev.setup]`` table in pyproject.toml, then command-line flags.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lmdev.config_files import tomllib

from lmdev.errors import LmdevError

DEFAULT_TORCH_INDEX = "https://download.pytorch.org/whl/{backend}"


@dataclass
class Sources:
    """Package sources for one setup run. ``index_url`` None means the installer's default (PyPI)."""

    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    no_index: bool = False
    torch_index: str = DEFAULT_TORCH_INDEX  # {backend} is replaced by cpu, cu128, rocm6.4, ...
    stacks: list[str] = field(default_factory=list)  # the project's stacks ([tool.lmdev.setup] stacks)
    origin: dict[str, str] = field(default_factory=dict)  # setting -> where it was read

    def uv_args(self) -> list[str]:
        """These sources as uv arguments (uv reads no pip configuration by itself)."""
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        elif self.index_url:
            args += ["--default-index", self.index_url]
        for url in self.extra_index_urls:
            args += ["--index", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for c in self.constraints:
            args += ["--constraint", c]
        return args

    def pip_args(self) -> list[str]:
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        elif self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for c in self.constraints:
            args += ["--constraint", c]
        return args

    def digest(self) -> str:
        """A short fingerprint of where packages come from (kept in the lock: a lock made from other
        sources is resolved again)."""
        import hashlib

        text = "\n".join([*self.uv_args(), self.torch_index])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_torch_index(self, url: str | None) -> Sources:
        """These sources with ``url`` (the torch family's pinned index) searched first."""
        if not url:
            return self
        extras = [url] + [u for u in self.extra_index_urls if u.rstrip("/") != url.rstrip("/")]
        return Sources(self.index_url, extras, list(self.find_links), list(self.constraints),
                       False, self.torch_index, list(self.stacks), dict(self.origin))


def pip_config_files(environ: Mapping[str, str]) -> list[Path]:
    """pip's configuration files in the order pip loads them (later ones win)."""
    if environ.get("PIP_CONFIG_FILE") == os.devnull:
        return []
    home = Path(environ.get("HOME", str(Path.home())))
    xdg_dirs = environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
    files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs if d] + [Path("/etc/pip.conf")]
    config_home = Path(environ.get("XDG_CONFIG_HOME", str(home / ".config")))
    files += [home / ".pip" / "pip.conf", config_home / "pip" / "pip.conf"]
    if environ.get("VIRTUAL_ENV"):
        files.append(Path(environ["VIRTUAL_ENV"]) / "pip.conf")
    if environ.get("PIP_CONFIG_FILE"):
        files.append(Path(environ["PIP_CONFIG_FILE"]))
    return [f for f in files if f.is_file()]


def read_pip_config(environ: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """pip's settings that choose packages: key -> (value, where it was read)."""
    out: dict[str, tuple[str, str]] = {}
    keys = ("index-url", "extra-index-url", "find-links", "constraint", "no-index")
    for path in pip_config_files(environ):
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise LmdevError(f"cannot read pip's configuration {path}: {exc}",
                             "fix the file, or set PIP_CONFIG_FILE=/dev/null to ignore it") from None
        for section in ("global", "install"):
            for key in keys:
                if parser.has_option(section, key):
                    out[key] = (parser.get(section, key), f"{path} [{section}]")
    for key in keys:
        var = "PIP_" + key.upper().replace("-", "_")
        if environ.get(var):
            out[key] = (environ[var], f"${var}")
    return out


def _split(value: str) -> list[str]:
    return [v for v in value.split() if v]


def _file_url(location: str, base: Path) -> str:
    if "://" in location:
        return location
    return str((base / location).resolve()) if not os.path.isabs(location) else location


def _lmdev_settings(project: Path, environ: Mapping[str, str]) -> list[tuple[dict, str]]:
    home = Path(environ.get("HOME", str(Path.home())))
    config_home = Path(environ.get("XDG_CONFIG_HOME", str(home / ".config")))
    found: list[tuple[dict, str]] = []
    user = config_home / "lmdev" / "setup.toml"
    pyproject = project / "pyproject.toml"
    for path, table in ((user, ()), (pyproject, ("tool", "lmdev", "setup"))):
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise LmdevError(f"cannot read {path}: {exc}", "fix the TOML syntax") from None
        for key in table:
            data = data.get(key, {}) if isinstance(data, dict) else {}
        if data:
            found.append((data, str(path)))
    return found


def load_sources(project: Path, environ: Mapping[str, str] | None = None,
                 flags: Mapping[str, object] | None = None) -> Sources:
    """The package sources for a setup run in ``project`` (see the module's docstring)."""
    environ = os.environ if environ is None else environ
    src = Sources()
    pip = read_pip_config(environ)
    if "index-url" in pip:
        src.index_url, src.origin["index-url"] = pip["index-url"]
    if "extra-index-url" in pip:
        src.extra_index_urls = _split(pip["extra-index-url"][0])
        src.origin["extra-index-url"] = pip["extra-index-url"][1]
    if "find-links" in pip:
        src.find_links = _split(pip["find-links"][0])
        src.origin["find-links"] = pip["find-links"][1]
    if "constraint" in pip:
        src.constraints = _split(pip["constraint"][0])
        src.origin["constraint"] = pip["constraint"][1]
    if "no-index" in pip:
        src.no_index = pip["no-index"][0].strip().lower() in ("1", "true", "yes", "on")
    for data, where in _lmdev_settings(project, environ):
        _apply(src, data, where, Path(where).parent)
    if flags:
        _apply(src, {k: v for k, v in flags.items() if v not in (None, [], False)}, "command line",
               Path.cwd())
    return src


def _apply(src: Sources, data: Mapping[str, object], where: str, base: Path) -> None:
    known = {"torch-index", "index-url", "extra-index-urls", "find-links", "constraints", "no-index", "stacks"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LmdevError(f"unknown setting {unknown[0]!r} in {where}",
                         "settings: " + ", ".join(sorted(known)))
    if "torch-index" in data:
        src.torch_index = str(data["torch-index"])
    if "index-url" in data:
        src.index_url = str(data["index-url"])
    if "extra-index-urls" in data:
        src.extra_index_urls = [str(u) for u in _as_list(data["extra-index-urls"])]
    if "find-links" in data:
        src.find_links = [_file_url(str(u), base) for u in _as_list(data["find-links"])]
    if "constraints" in data:
        src.constraints = [_file_url(str(u), base) for u in _as_list(data["constraints"])]
    if "no-index" in data:
        src.no_index = bool(data["no-index"])
    if "stacks" in data:
        src.stacks = [str(s) for s in _as_list(data["stacks"])]
    for key in data:
        src.origin[key] = where


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, (list, tuple)) else [value]
