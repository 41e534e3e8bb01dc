"""`lmdev setup` end to end with real wheels: the real PyTorch CPU build and its torchvision that this
machine's package source carries, served as the torch index over http://127.0.0.1; everything else
from the machine's own pip configuration (its local indexes, never the public one). Install into a
fresh venv, a second run that changes nothing, and --frozen into another venv reproducing the first
exactly. The verification ladder on a real torch is tests/integration/test_setup_verify.py's (each
rung imports torch afresh: about 25 s a rung on the loaded 2-core development machine)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import urllib.parse
from pathlib import Path

import pytest

from lmdev.setup.config import load_sources
from lmdev.setup.lock import read_lock
from lmdev.setup.state import compare, installed_dists
from tests.conftest import run_lmdev
from tests.unit.setup.fakeindex import serve

pytestmark = pytest.mark.integration
PY = f"cp{sys.version_info.major}{sys.version_info.minor}"


def _local_files(sources, project: str) -> list[Path]:
    """Wheels of ``project`` in the file:// indexes and find-links folders of the pip configuration."""
    found: list[Path] = []
    for link in sources.find_links:
        folder = Path(urllib.parse.urlparse(link).path if link.startswith("file://") else link)
        if folder.is_dir():
            found += sorted(folder.glob(f"{project}-*.whl"))
    for index in [sources.index_url or "", *sources.extra_index_urls]:
        page = Path(urllib.parse.urlparse(index).path) / project / "index.html" if index.startswith("file://") else None
        if page and page.is_file():
            for href in re.findall(r'href="([^"#]+)', page.read_text(errors="replace")):
                path = (page.parent / urllib.parse.unquote(href)).resolve()
                if path.is_file():
                    found.append(path)
    return found


def local_index() -> str:
    """The first file:// index of this machine's pip configuration."""
    sources = load_sources(Path.cwd(), environ=os.environ)
    for index in [sources.index_url or "", *sources.extra_index_urls]:
        if index.startswith("file://"):
            return index
    pytest.skip("this machine's pip configuration has no local (file://) index")


def real_torch_pair() -> tuple[Path, Path]:
    """A real torch CPU wheel for this Python and the torchvision release that pairs with it."""
    sources = load_sources(Path.cwd(), environ=os.environ)
    for torch in _local_files(sources, "torch"):
        m = re.match(rf"torch-2\.(\d+)\.\d+\+cpu-{PY}-{PY}-manylinux", torch.name)
        if not m:
            continue
        tv = [w for w in _local_files(sources, "torchvision")
              if w.name.startswith(f"torchvision-0.{int(m.group(1)) + 15}.") and f"-{PY}-" in w.name
              and "manylinux" in w.name]
        if tv:
            return torch, tv[0]
    pytest.skip("no PyTorch CPU wheel (with its torchvision) in this machine's package sources")


def torch_index(root: Path, wheels: list[Path]) -> Path:
    """A PEP 503 index of ``wheels`` (linked, not copied), each with its sha256."""
    for w in wheels:
        folder = root / "simple" / w.name.split("-")[0]
        folder.mkdir(parents=True)
        (folder / w.name).symlink_to(w)
        sha = hashlib.sha256(w.read_bytes()).hexdigest()
        (folder / "index.html").write_text(f'<html><body><a href="{w.name}#sha256={sha}">{w.name}</a></body></html>\n')
    return root


def test_real_torch_cpu_install_noop_and_frozen(tmp_path):
    torch, tv = real_torch_pair()
    env = {"VIRTUAL_ENV": "", "XDG_CONFIG_HOME": str(tmp_path / "config")}  # the machine's pip configuration
    with serve(torch_index(tmp_path / "torchidx", [torch, tv])) as base:
        proj = tmp_path / "proj"
        proj.mkdir()
        (proj / "pyproject.toml").write_text(f'[tool.lmdev.setup]\ntorch-index = "{base}/simple"\n'
                                             f'index-url = "{local_index()}"\n')
        first = run_lmdev("setup", "--no-verify", "--json", cwd=proj, env=env, timeout=600)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr
        assert json.loads(first.stdout)["environments"][0]["action"] == "installed"
        have = installed_dists(proj / ".venv")
        assert have["torch"].version == torch.name.split("-")[1] and have["torchvision"].version == tv.name.split("-")[1]
        lock = read_lock(proj / "pylock.toml")
        assert all(f["hashes"]["sha256"] for f in lock.files())
        assert {f["url"].split("/simple/")[0] for f in lock.files() if f["package"] in ("torch", "torchvision")} == {base}

        again = run_lmdev("setup", "--no-verify", cwd=proj, env=env, timeout=300)
        assert again.returncode == 0 and "nothing to do" in again.stdout

        frozen = run_lmdev("setup", "--frozen", "--no-verify", "--venv", str(tmp_path / "v2"), "--json",
                           cwd=proj, env=env, timeout=600)
        assert frozen.returncode == 0, frozen.stderr
    assert compare(lock, installed_dists(tmp_path / "v2")) == []
    assert {n: d.version for n, d in installed_dists(tmp_path / "v2").items()} == \
        {n: d.version for n, d in installed_dists(proj / ".venv").items()}
