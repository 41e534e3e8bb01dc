"""What bootstrap ships: platform tags, requirements, the fingerprint, the install script."""

import pytest

from lmdev.errors import LmdevError
from lmdev.fsutil import sha256_file
from lmdev.remote import bootstrap, bundle
from lmdev.remote.hosts import Remote


def test_the_lock_targets_manylinux_up_to_the_remote_glibc():
    assert bundle.uv_platform(bundle.Target((3, 11), "x86_64", ("glibc", "2.28"))) == "x86_64-manylinux_2_28"
    assert bundle.uv_platform(bundle.Target((3, 12), "aarch64", ("glibc", "2.36"))) == "aarch64-manylinux_2_36"
    with pytest.raises(LmdevError, match="glibc"):
        bundle.uv_platform(bundle.Target((3, 12), "aarch64", ("musl", "1.2")))
    with pytest.raises(LmdevError, match="2.17"):
        bundle.uv_platform(bundle.Target((3, 12), "x86_64", ("glibc", "2.12")))


def test_the_deps_bundle_is_a_setup_bundle_of_a_lock_with_every_sha256(tmp_path, monkeypatch):
    """lmdev's dependencies for a remote are an `lmdev setup bundle` tar (one code path)."""
    from lmdev.setup import installer as inst
    from lmdev.setup.bundle import open_bundle
    from lmdev.setup.lock import Lock
    from tests.unit.setup.fakeindex import make_wheel

    wheels = [make_wheel(tmp_path / "w", "rich", "13.0.0"), make_wheel(tmp_path / "w", "pip", "24.0")]
    seen = {}

    def fake_resolve(installer, target, reqs, sources):
        seen.update(installer=installer, platform=target.platform, version=target.version, reqs=reqs)
        return Lock([{"name": w.name.split("-")[0], "version": w.name.split("-")[1],
                      "wheels": [{"url": w.as_uri(), "hashes": {"sha256": sha256_file(w)}}]} for w in wheels], "")

    monkeypatch.setattr(inst, "resolve", fake_resolve)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tar = bundle.deps_bundle(bundle.Target((3, 11), "x86_64", ("glibc", "2.36")), ["rich>=13"])
    assert seen == {"installer": "uv", "platform": "x86_64-manylinux_2_36", "version": "3.11", "reqs": ["rich>=13", "pip"]}
    manifest = open_bundle(tar, tmp_path / "open")
    assert sorted(manifest["files"]) == sorted(w.name for w in wheels)
    req = (tmp_path / "open" / "requirements.main.txt").read_text()
    assert "rich==13.0.0 --hash=sha256:" in req and "pip==24.0 --hash=sha256:" in req
    assert bundle.deps_bundle(bundle.Target((3, 11), "x86_64", ("glibc", "2.36")), ["rich>=13"]) == tar  # cached


def test_requirements_are_lmdevs_runtime_dependencies_and_the_dashboard():
    names = {r.split(">")[0].split("=")[0].split("<")[0] for r in bundle.requirements()}
    assert {"rich", "pydantic", "numpy", "fastapi", "uvicorn"} <= names
    assert "torch" not in names and "pytest" not in names


def test_fingerprint_changes_with_the_code(tmp_path, monkeypatch):
    pkg = tmp_path / "lmdev"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    monkeypatch.setattr(bundle, "package_dir", lambda: pkg)
    first = bundle.fingerprint()
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "a.pyc").write_bytes(b"junk")
    assert bundle.fingerprint() == first  # caches do not count
    (pkg / "a.py").write_text("x = 2\n")
    assert bundle.fingerprint() != first


def test_install_script_is_offline_and_never_touches_a_linked_site_packages():
    r = Remote("n", "h", site_packages="/opt/env/lib/python3.11/site-packages")
    script = bootstrap.install_script(r, "lmdev-0.1.0-py3-none-any.whl", "deps-x.tar", "abc")
    assert "PIP_NO_INDEX=1" in script and "PIP_CONFIG_FILE=/dev/null" in script
    assert script.count("--no-index") == 2 and "--offline" in script and "--no-config" in script
    assert "sudo" not in script and "--require-hashes" in script
    assert "-m venv --without-pip" in script and "_lmdev_linked.pth" in script
    assert "/opt/env/lib/python3.11/site-packages" in script.split("_lmdev_linked.pth")[0].splitlines()[-1]


def test_home_relative_paths():
    assert bootstrap.home_relative("~/.lmdev-remote") == ".lmdev-remote"
    assert bootstrap.home_relative("/srv/lmdev") == "/srv/lmdev"
    assert bootstrap.home_relative("~") == "."
