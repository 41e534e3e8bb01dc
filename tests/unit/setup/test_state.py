"""What an environment holds compared with a lock, exactly: version (local part included), the
wheel file (tags, build number), the source (direct URL), missing and extra packages."""

from __future__ import annotations

import json
from pathlib import Path

from lmdev.setup.lock import Lock
from lmdev.setup.state import compare, installed_dists, wheel_tags


def dist(prefix: Path, name: str, version: str, tags: tuple[str, ...] = ("py3-none-any",),
         build: str | None = None, direct_url: str | None = None) -> None:
    info = prefix / "lib" / "python3.11" / "site-packages" / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "WHEEL").write_text("Wheel-Version: 1.0\n" + "".join(f"Tag: {t}\n" for t in tags)
                                + (f"Build: {build}\n" if build else ""))
    if direct_url:
        (info / "direct_url.json").write_text(json.dumps({"url": direct_url, "archive_info": {}}))


def pkg(name: str, version: str, *files: str) -> dict:
    return {"name": name, "version": version,
            "wheels": [{"url": f"https://idx/{f}", "hashes": {"sha256": "0" * 64}} for f in files]}


LOCK = Lock([pkg("torch", "2.9.1+cpu", "torch-2.9.1+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"),
             pkg("filelock", "3.0.0", "filelock-3.0.0-py3-none-any.whl"),
             pkg("numpy", "2.0.0", "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")],
            "==3.11.*")


def matching(prefix: Path) -> None:
    dist(prefix, "torch", "2.9.1+cpu", ("cp311-cp311-manylinux_2_28_x86_64",))
    dist(prefix, "filelock", "3.0.0")
    dist(prefix, "numpy", "2.0.0", ("cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"))


def test_an_environment_that_holds_the_lock_has_no_difference(tmp_path):
    matching(tmp_path)
    dist(tmp_path, "pip", "25.0")  # pip's own tools are not differences (pip freeze leaves them out)
    assert compare(LOCK, installed_dists(tmp_path)) == []


def test_each_difference_is_named(tmp_path):
    dist(tmp_path, "torch", "2.9.1+cu128", ("cp311-cp311-manylinux_2_28_x86_64",))  # local version differs
    dist(tmp_path, "filelock", "3.0.0", direct_url="file:///home/me/filelock")  # same version, other source
    dist(tmp_path, "requests", "2.32.0")  # not in the lock
    diffs = {d.package: d for d in compare(LOCK, installed_dists(tmp_path))}
    assert set(diffs) == {"torch", "filelock", "numpy", "requests"}
    assert diffs["torch"].kind == "version" and "2.9.1+cu128" in diffs["torch"].describe()
    assert "2.9.1+cpu" in diffs["torch"].describe()
    assert diffs["filelock"].kind == "source" and "/home/me/filelock" in diffs["filelock"].describe()
    assert diffs["numpy"].kind == "missing" and "not installed" in diffs["numpy"].describe()
    assert diffs["requests"].kind == "extra"
    # a plain setup tolerates packages the lock does not list; --frozen does not
    assert "requests" not in {d.package for d in compare(LOCK, installed_dists(tmp_path), exact=False)}


def test_the_same_version_from_another_wheel_file_is_a_difference(tmp_path):
    matching(tmp_path)
    info = next((tmp_path / "lib/python3.11/site-packages").glob("torch-*.dist-info"))
    (info / "WHEEL").write_text("Wheel-Version: 1.0\nTag: cp311-cp311-manylinux_2_28_x86_64\nBuild: 1\n")
    [diff] = compare(LOCK, installed_dists(tmp_path))
    assert diff.kind == "file" and "build 1" in diff.describe()
    assert "torch-2.9.1+cpu-cp311-cp311-manylinux_2_28_x86_64.whl" in diff.describe()


def test_wheel_file_names_expand_to_their_tags():
    tags, build = wheel_tags("numpy-2.0.0-1-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert tags == {"cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64"} and build == "1"
    assert wheel_tags("numpy-2.0.0.tar.gz") == (frozenset(), None)
