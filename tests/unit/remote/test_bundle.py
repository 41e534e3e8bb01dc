"""What bootstrap ships: platform tags, requirements, the fingerprint, the install script."""

from lmdev.remote import bootstrap, bundle
from lmdev.remote.hosts import Remote


def test_platform_tags_cover_manylinux_up_to_the_remote_glibc():
    tags = bundle.platform_tags(bundle.Target((3, 11), "x86_64", ("glibc", "2.28")))
    assert "manylinux_2_28_x86_64" in tags and "manylinux2014_x86_64" in tags and "manylinux1_x86_64" in tags
    assert "manylinux_2_29_x86_64" not in tags and tags[-1] == "linux_x86_64"
    assert bundle.platform_tags(bundle.Target((3, 12), "aarch64", ("musl", "1.2"))) == ["linux_aarch64"]


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
    script = bootstrap.install_script(r, "lmdev-0.1.0-py3-none-any.whl", ["rich>=13"], "abc")
    assert "PIP_NO_INDEX=1" in script and "PIP_CONFIG_FILE=/dev/null" in script
    assert script.count("--no-index") == 3 and "sudo" not in script
    assert "-m venv --without-pip" in script and "_lmdev_linked.pth" in script
    assert "/opt/env/lib/python3.11/site-packages" in script.split("_lmdev_linked.pth")[0].splitlines()[-1]


def test_home_relative_paths():
    assert bootstrap.home_relative("~/.lmdev-remote") == ".lmdev-remote"
    assert bootstrap.home_relative("/srv/lmdev") == "/srv/lmdev"
    assert bootstrap.home_relative("~") == "."
