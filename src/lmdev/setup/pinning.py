"""The torch family comes from its backend's index, and from nowhere else.

Installers that are given several indexes fall back to another one when the first lacks a build,
and install the wrong one silently (a CPU or CUDA 12.8 wheel from a PyPI mirror on a machine that
needed CUDA 12.6). After resolving, :func:`check_pinned` reads the pinned index's project page
(PEP 503 simple API, ``file://`` or ``http(s)://``) and refuses any torch-family file that page
does not list with the same sha256. A file the resolver found elsewhere (a find-links folder, a
mirror) that is byte for byte the one the pinned index lists is accepted, and the lock then names
the pinned index's URL for it, so the lock installs from that index everywhere.
"""

from __future__ import annotations

import html.parser
import os
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path

from lmdev.catalog.frameworks import TORCH_FAMILY
from lmdev.errors import LmdevError
from lmdev.setup.lock import Lock, normalise


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def _file_path(url: str) -> Path:
    """The local path of a file:// URL (urllib.request, slow to import, only where Windows needs it)."""
    if os.name == "nt":
        from urllib.request import url2pathname

        return Path(url2pathname(urllib.parse.urlparse(url).path))
    return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))


def _read(url: str, timeout: float) -> str | None:
    """The page at ``url``; None when the project is not on the index (404 / no such folder)."""
    if url.startswith("file://"):
        path = _file_path(url)
        page = path / "index.html" if path.is_dir() else path
        if not page.is_file():
            if path.parent.is_dir():
                return None
            raise LmdevError(f"index unreachable: {url}", "check the torch-index setting")
        return page.read_text(encoding="utf-8", errors="replace")
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise LmdevError(f"index answered {exc.code}: {url}", "check the torch-index setting") from None
    except (urllib.error.URLError, OSError) as exc:
        raise LmdevError(f"index unreachable: {url} ({getattr(exc, 'reason', exc)})",
                         "check the torch-index setting and the network, or use --from-bundle") from None


def index_files(index: str, project: str, timeout: float = 30) -> dict[str, str | None] | None:
    """Filename -> sha256 (None when the page gives none) of ``project`` on ``index``; None when
    the index does not have the project at all."""
    links = index_links(index, project, timeout)
    return None if links is None else {name: sha for name, (sha, _) in links.items()}


def index_links(index: str, project: str, timeout: float = 30) -> dict[str, tuple[str | None, str]] | None:
    """Filename -> (sha256 or None, the file's absolute URL) of ``project`` on ``index``; None when
    the index does not have the project at all."""
    url = index.rstrip("/") + "/" + normalise(project) + "/"
    text = _read(url, timeout)
    if text is None:
        return None
    parser = _Links()
    parser.feed(text)
    files: dict[str, tuple[str | None, str]] = {}
    for href in parser.hrefs:
        path, _, fragment = href.partition("#")
        name = urllib.parse.unquote(path.rstrip("/").rsplit("/", 1)[-1])
        files[name] = (fragment[len("sha256="):] if fragment.startswith("sha256=") else None,
                       urllib.parse.urljoin(url, path))
    return files


def _filename(entry: dict) -> str:
    return str(entry.get("name") or urllib.parse.unquote(str(entry.get("url") or entry.get("path", "")).rsplit("/", 1)[-1]))


Listing = dict[str, tuple[str | None, str]]


def prefetch(index: str, projects: list[str]) -> Callable[[], dict[str, Listing | None]]:
    """Read the project pages of ``index`` in a thread (while the resolver works); the function
    returned waits for them. A page that could not be read is left out (read again when needed)."""
    pages: dict[str, Listing | None] = {}

    def fetch() -> None:
        for project in projects:
            try:
                pages[normalise(project)] = index_links(index, project)
            except LmdevError:
                pass

    thread = threading.Thread(target=fetch, name="lmdev-pin-prefetch", daemon=True)
    thread.start()

    def wait() -> dict[str, Listing | None]:
        thread.join()
        return pages

    return wait


def check_pinned(lock: Lock, index: str, backend: str, pages: Mapping[str, Listing | None] | None = None) -> None:
    """Raise unless every torch-family file of ``lock`` is listed on ``index`` with its hash
    (``pages``: project pages of ``index`` already read, see :func:`prefetch`)."""
    for pkg in lock.packages:
        name = normalise(pkg["name"])
        if name not in TORCH_FAMILY:
            continue
        listed = pages[name] if pages is not None and name in pages else index_links(index, name)
        for entry in [*pkg.get("wheels", []), *([pkg["sdist"]] if pkg.get("sdist") else [])]:
            fname, sha = _filename(entry), entry.get("hashes", {}).get("sha256")
            where = entry.get("url") or entry.get("path")
            if listed is None or fname not in listed:
                raise LmdevError(
                    f"the {backend} index {index} has no {fname}: the resolver took {pkg['name']} "
                    f"{pkg['version']} from {where}; refusing a build from another index",
                    f"put the {backend} build of {pkg['name']} on that index, or set torch-index "
                    "([tool.lmdev.setup] in pyproject.toml, or --torch-index) to one that has it")
            listed_sha, listed_url = listed[fname]
            if listed_sha and sha and listed_sha != sha:
                raise LmdevError(f"{fname} from {where} differs from the one on the {backend} index {index}",
                                 "refusing a build from another index; check your mirrors")
            if not listed_sha and where != listed_url:
                raise LmdevError(f"the {backend} index {index} gives no sha256 for {fname}, and the resolver "
                                 f"took it from {where}: cannot tell it is the same build",
                                 "use an index that publishes hashes (PEP 503 #sha256=)")
            entry.pop("path", None)
            entry["url"] = listed_url  # the same file: the lock installs it from the pinned index
