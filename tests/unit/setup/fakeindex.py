"""Small generated wheels and PEP 503 indexes for setup's tests and benchmark.

A wheel here is a real, installable wheel (a package with ``__version__``, METADATA with its
requirements, RECORD with hashes); an index is a folder ``simple/<project>/index.html`` linking
its files with ``#sha256=`` fragments, served as ``file://`` or over http://127.0.0.1.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(folder: Path, name: str, version: str, requires: list[str] | None = None,
               module_code: str = "", extra_files: dict[str, str] | None = None) -> Path:
    """Write ``name-version-py3-none-any.whl`` into ``folder`` and return its path."""
    dist = name.replace("-", "_")
    files = {
        **{p: text.encode() for p, text in (extra_files or {}).items()},
        f"{dist}/__init__.py": f"__version__ = {version!r}\n{module_code}".encode(),
        f"{dist}-{version}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires or [])).encode(),
        f"{dist}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: lmdev-tests\n"
                                            b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = f"{dist}-{version}.dist-info/RECORD"
    lines = [f"{p},sha256={_b64(d)},{len(d)}" for p, d in files.items()] + [f"{record},,"]
    files[record] = ("\n".join(lines) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in files.items():
            zi = zipfile.ZipInfo(p, date_time=(2020, 1, 1, 0, 0, 0))
            zf.writestr(zi, d)
    return path


def write_index(root: Path, wheels: list[Path]) -> Path:
    """Lay ``wheels`` out as a PEP 503 index under ``root/simple`` and return that folder."""
    simple = root / "simple"
    by_project: dict[str, list[Path]] = {}
    for w in wheels:
        project = w.name.split("-")[0].replace("_", "-").lower()
        by_project.setdefault(project, []).append(w)
    for project, files in by_project.items():
        d = simple / project
        d.mkdir(parents=True, exist_ok=True)
        links = []
        for w in files:
            target = d / w.name
            if target != w:
                target.write_bytes(w.read_bytes())
            sha = hashlib.sha256(target.read_bytes()).hexdigest()
            links.append(f'<a href="{w.name}#sha256={sha}">{w.name}</a><br>')
        (d / "index.html").write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    projects = sorted(p.name for p in simple.iterdir() if p.is_dir())
    (simple / "index.html").write_text("<html><body>" + "".join(f'<a href="{p}/">{p}</a>' for p in projects)
                                       + "</body></html>\n")
    return simple


TORCH_CODE = "class version:\n    cuda = None\n"


def torch_index(root: Path, label: str, versions: tuple[str, ...] = ("2.9.1",), cudnn: str | None = None) -> Path:
    """A fake PyTorch backend index: torch+label, torchvision+label (pinning torch exactly)."""
    wheels = []
    for v in versions:
        req = [f"nvidia-cudnn-cu12=={cudnn}"] if cudnn else []
        wheels.append(make_wheel(root / "build", "torch", f"{v}+{label}", req + ["filelock"]))
        tv = "0." + str(int(v.split(".")[1]) + 15) + ".0"
        wheels.append(make_wheel(root / "build", "torchvision", f"{tv}+{label}", [f"torch=={v}+{label}"]))
    return write_index(root, wheels)


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on http://127.0.0.1:PORT in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def setup_project(base: Path) -> Path:
    """A project folder whose ``[tool.lmdev.setup]`` names two fake file:// indexes under ``base``: a
    CPU torch index and a general one holding filelock (what the fake torch requires)."""
    torch_simple = torch_index(base / "torchidx", "cpu")
    general = write_index(base / "pypi", [make_wheel(base / "b", "filelock", "3.0.0")])
    proj = base / "proj"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(f'[tool.lmdev.setup]\ntorch-index = "{torch_simple.as_uri()}"\n'
                                         f'index-url = "{general.as_uri()}"\n')
    return proj
