"""`lmdev setup` end to end with the real installers (uv, and pip) on small generated wheels served
from PEP 503 indexes (file:// and http://127.0.0.1): install, no-op, --frozen, a tampered wheel,
the torch family's index pinning, bundles with the indexes gone, export, init."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from lmdev.setup.installer import installed
from lmdev.setup.lock import read_lock
from tests.conftest import run_lmdev
from tests.unit.setup.fakeindex import make_wheel, serve, torch_index, write_index

pytestmark = pytest.mark.integration


def isolated_env(tmp: Path) -> dict[str, str]:
    """No pip configuration of this machine, no active venv, a private user config folder."""
    return {"PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "", "PIP_INDEX_URL": "", "PIP_CONSTRAINT": "",
            "PIP_EXTRA_INDEX_URL": "", "VIRTUAL_ENV": "", "XDG_CONFIG_HOME": str(tmp / "config")}


@pytest.fixture
def indexes(tmp_path):
    torch_simple = torch_index(tmp_path / "torchidx", "cpu")
    general = write_index(tmp_path / "pypi", [make_wheel(tmp_path / "b", "filelock", "3.0.0"),
                                              make_wheel(tmp_path / "b", "torch", "2.9.1+cu128")])
    return tmp_path, torch_simple, general


def project(root: Path, torch_simple: str, general: str, name: str = "proj") -> Path:
    proj = root / name
    proj.mkdir()
    (proj / "pyproject.toml").write_text(
        f'[tool.lmdev.setup]\ntorch-index = "{torch_simple}"\nindex-url = "{general}"\n')
    return proj


def drifted_venv(root: Path, general: Path) -> Path:
    """Another environment, drifted from the lock: filelock of the lock's version but installed from
    a path, and a stray package the lock does not list."""
    import subprocess

    from lmdev.setup.installer import uv_binary

    v2 = root / "v2"
    subprocess.run([uv_binary(), "venv", "-q", "--no-config", str(v2)], check=True)
    stray = make_wheel(root / "stray", "stray-pkg", "1.0")
    filelock = next((general / "filelock").glob("*.whl"))
    subprocess.run([uv_binary(), "pip", "install", "-q", "--no-config", "--python", str(v2 / "bin/python"),
                    str(stray), str(filelock)], check=True)
    return v2


def setup(proj: Path, *args: str, env: dict[str, str]):
    return run_lmdev("setup", *args, cwd=proj, env=env, timeout=300)


def test_install_noop_frozen_and_tampered_wheel(indexes):
    root, torch_simple, general = indexes
    env = isolated_env(root)
    proj = project(root, torch_simple.as_uri(), general.as_uri())
    first = setup(proj, "--no-verify", "--json", env=env)
    assert first.returncode == 0, first.stderr
    doc = json.loads(first.stdout)
    assert doc["environments"][0]["action"] == "installed"
    have = installed(proj / ".venv")
    assert have["torch"] == "2.9.1+cpu" and have["torchvision"] == "0.24.0+cpu" and have["filelock"] == "3.0.0"
    lock = read_lock(proj / "pylock.toml")
    assert all(f["hashes"]["sha256"] for f in lock.files()) and lock.tool["backends"] == {"torch": "cpu"}
    assert json.loads((proj / "setup-plan.json").read_text())["plan"]["environments"][0]["backends"] == {"torch": "cpu"}

    again = setup(proj, "--no-verify", "--json", env=env)
    assert json.loads(again.stdout)["environments"][0]["action"] == "no-op"

    frozen = setup(proj, "--frozen", "--no-verify", "--venv", str(root / "v2"), env=env)
    assert frozen.returncode == 0, frozen.stderr
    assert installed(root / "v2") == have  # the lock reproduces the environment exactly

    wheel = torch_simple / "torch" / "torch-2.9.1+cpu-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"\0")  # the index now serves a different file
    tampered = setup(proj, "--frozen", "--no-verify", "--venv", str(root / "v3"), env=env)
    assert tampered.returncode == 2, tampered.stderr
    assert "sha256" in tampered.stderr and "Traceback" not in tampered.stderr
    assert "torch" not in installed(root / "v3")


def test_torch_family_never_comes_from_another_index(tmp_path):
    # the torch index (over http) has torchvision but no torch; the general index has a torch
    build = tmp_path / "build"
    write_index(tmp_path / "torchidx", [make_wheel(build, "torchvision", "0.24.0+cpu", ["torch==2.9.1+cpu"])])
    general = write_index(tmp_path / "pypi", [make_wheel(build, "torch", "2.9.1+cpu"),
                                              make_wheel(build, "filelock", "3.0.0")])
    env = isolated_env(tmp_path)
    with serve(tmp_path / "torchidx") as url:
        proj = project(tmp_path, f"{url}/simple", general.as_uri())
        r = setup(proj, "--no-verify", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "refusing a build from another index" in r.stderr
    assert not (proj / ".venv").exists()  # the venv this run created is removed again
    assert not (proj / "pylock.toml").exists()


def test_http_index_with_pip_installer(indexes):
    root, _, general = indexes
    env = isolated_env(root)
    with serve(root / "torchidx") as url:
        proj = project(root, f"{url}/simple", general.as_uri())
        r = setup(proj, "--installer", "pip", "--no-verify", env=env)
        assert r.returncode == 0, r.stderr
    assert installed(proj / ".venv")["torch"] == "2.9.1+cpu"


def test_bundle_installs_with_the_indexes_gone(indexes):
    root, torch_simple, general = indexes
    env = isolated_env(root)
    proj = project(root, torch_simple.as_uri(), general.as_uri())
    assert setup(proj, "--no-verify", env=env).returncode == 0
    out = root / "offline.tar"
    b = setup(proj, "bundle", str(out), env=env)
    assert b.returncode == 0, b.stderr
    want = installed(proj / ".venv")
    for folder in ("torchidx", "pypi", "b"):  # nothing left to download from
        for p in sorted((root / folder).rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
    other = root / "elsewhere"
    other.mkdir()
    r = run_lmdev("setup", "--from-bundle", str(out), "--no-verify", "--venv", str(root / "v4"), cwd=other, env=env)
    assert r.returncode == 0, r.stderr
    assert installed(root / "v4") == want
    assert (other / "pylock.toml").is_file() and (other / "setup-plan.json").is_file()
    # the same through the Python API that `lmdev remote` uses
    from lmdev.setup.bundle import install_bundle

    res = install_bundle(out, root / "api-venv", verify=False)
    assert res.environments[0].action == "from-bundle" and installed(root / "api-venv") == want

    # a bundle whose wheel was changed is refused before anything is installed
    bad = root / "bad.tar"
    with tarfile.open(out) as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name.startswith("wheels/torch-"):
                data += b"\0"
                m.size = len(data)
            import io
            dst.addfile(m, io.BytesIO(data))
    r = run_lmdev("setup", "--from-bundle", str(bad), "--no-verify", "--venv", str(root / "v5"), cwd=other, env=env)
    assert r.returncode == 2 and "sha256" in r.stderr
    assert not (root / "v5").exists()


def test_export_lock_from_another_python_and_missing_lock(indexes):
    root, torch_simple, general = indexes
    env = isolated_env(root)
    proj = project(root, torch_simple.as_uri(), general.as_uri())
    assert run_lmdev("setup", "--frozen", cwd=proj, env=env).returncode == 2  # no lock yet
    assert setup(proj, "--no-verify", env=env).returncode == 0
    req = setup(proj, "export", "--requirements", env=env)
    assert req.returncode == 0 and "torch==2.9.1+cpu" in req.stdout and "--hash=sha256:" in req.stdout
    docker = setup(proj, "export", "--dockerfile", env=env)
    assert docker.stdout.startswith("# generated") and "FROM ubuntu:22.04" in docker.stdout
    lock = proj / "pylock.toml"
    lock.write_text(lock.read_text().replace('python = "3.', 'python = "3.9'))  # "3.911"-style: another Python
    r = setup(proj, "--frozen", "--no-verify", env=env)
    assert r.returncode == 2 and "was made for Python 3.9" in r.stderr


def test_init_writes_a_project_and_sets_it_up(indexes):
    root, torch_simple, general = indexes
    env = isolated_env(root)
    (root / "config" / "lmdev").mkdir(parents=True)
    (root / "config" / "lmdev" / "setup.toml").write_text(f'index-url = "{general.as_uri()}"\n')  # user config
    r = run_lmdev("init", str(root / "newproj"), "torch", "--torch-index", torch_simple.as_uri(), "--no-verify",
                  cwd=root, env=env)
    assert r.returncode == 0, r.stderr
    p = root / "newproj"
    for name in ("pyproject.toml", "train.yaml", "train.py", ".gitignore", "README.md", "pylock.toml"):
        assert (p / name).is_file(), name
    assert ".venv/" in (p / ".gitignore").read_text() and ".lmdev/" in (p / ".gitignore").read_text()
    assert installed(p / ".venv")["torch"] == "2.9.1+cpu"
    again = run_lmdev("init", str(p), cwd=root, env=env)
    assert again.returncode == 2 and "exists" in again.stderr


def test_repair_removes_a_pynvml_impostor_after_showing_it(indexes):
    from lmdev.setup.installer import uv_binary

    root, torch_simple, general = indexes
    env = isolated_env(root)
    proj = project(root, torch_simple.as_uri(), general.as_uri())
    assert setup(proj, "--no-verify", env=env).returncode == 0
    wheels = root / "nvml"
    make_wheel(wheels, "nvidia-ml-py", "12.560.30", extra_files={"pynvml.py": "# NVML bindings\n"})
    make_wheel(wheels, "pynvml", "11.5.0")  # the deprecated package: its pynvml/ shadows the module
    import subprocess

    subprocess.run([uv_binary(), "pip", "install", "--quiet", "--no-config", "--python", str(proj / ".venv/bin/python"),
                    "--no-index", "--find-links", str(wheels), "nvidia-ml-py", "pynvml"], check=True)
    asks = setup(proj, "--repair", "--no-verify", env=env)
    assert asks.returncode == 2 and "--yes" in asks.stderr  # no terminal to ask in
    assert "pynvml" in installed(proj / ".venv")
    r = setup(proj, "--repair", "--yes", "--no-verify", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nvml.pynvml_clash" in r.stdout and "remove pynvml" in r.stdout
    have = installed(proj / ".venv")
    assert "pynvml" not in have and have["nvidia-ml-py"] == "12.560.30" and have["torch"] == "2.9.1+cpu"
    assert "Nothing to repair" in setup(proj, "--repair", "--no-verify", env=env).stdout


def test_lock_for_another_machine_and_its_bundle(indexes):
    root, torch_simple, general = indexes
    env = isolated_env(root)
    proj = project(root, torch_simple.as_uri(), general.as_uri())
    (proj / "pyproject.toml").write_text(
        f'[tool.lmdev.setup]\ntorch-index = "{torch_simple.as_uri()}"\nindex-url = "{general.as_uri()}"\n')
    r = setup(proj, "--for", "cpu", "--platform", "aarch64-manylinux_2_28", "--python", "3.12", env=env)
    assert r.returncode == 0, r.stderr
    lock = read_lock(proj / "pylock.cpu.toml")
    assert lock.tool["platform"] == "aarch64-manylinux_2_28" and lock.tool["python"] == "3.12"
    assert not (proj / ".venv").exists()  # nothing installed here
    assert setup(proj, "--platform", "x", env=env).returncode == 2
    b = setup(proj, "bundle", str(root / "cpu.tar"), "--for", "cpu", "--platform", "aarch64-manylinux_2_28",
              "--python", "3.12", env=env)
    assert b.returncode == 0, b.stderr
    with tarfile.open(root / "cpu.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))
        plan = json.load(tar.extractfile("setup-plan.json"))["plan"]
    assert manifest["environments"]["main"]["platform"] == "aarch64-manylinux_2_28"
    assert plan["machine"]["backend"] == "cpu" and len(manifest["files"]) == 3


def test_a_failed_setup_leaves_the_previous_environment_and_lock(indexes):
    root, torch_simple, general = indexes
    env = isolated_env(root)
    proj = project(root, torch_simple.as_uri(), general.as_uri())
    assert setup(proj, "--no-verify", env=env).returncode == 0
    lock_before = (proj / "pylock.toml").read_text()
    # a newer torch appears on the torch index, but the file served is not the one the page lists
    new = make_wheel(root / "b2", "torch", "2.10.0+cpu", ["filelock"])
    tv = make_wheel(root / "b2", "torchvision", "0.25.0+cpu", ["torch==2.10.0+cpu"])
    write_index(root / "torchidx", [new, tv])
    served = torch_simple / "torch" / new.name
    served.write_bytes(served.read_bytes() + b"\0")
    write_index(root / "pypi", [make_wheel(root / "b2", "lightning", "2.5.0", ["torch"])])
    r = setup(proj, "torch", "lightning", "--no-verify", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "sha256" in r.stderr
    assert (proj / "pylock.toml").read_text() == lock_before
    assert installed(proj / ".venv")["torch"] == "2.9.1+cpu" and "lightning" not in installed(proj / ".venv")
    assert not list(proj.glob("pylock.lmdev-staging-*"))


def test_frozen_makes_the_environment_exactly_the_lock_and_names_what_differed(indexes):
    from lmdev.setup.lock import read_lock as read
    from lmdev.setup.state import compare, installed_dists

    root, torch_simple, general = indexes
    env = isolated_env(root)
    proj = project(root, torch_simple.as_uri(), general.as_uri())
    assert setup(proj, "--no-verify", env=env).returncode == 0
    v2 = drifted_venv(root, general)
    assert installed_dists(v2)["filelock"].direct_url  # recorded as a direct install
    frozen = setup(proj, "--frozen", "--no-verify", "--venv", str(v2), "--json", env=env)
    assert frozen.returncode == 0, frozen.stderr
    doc = json.loads(frozen.stdout)["environments"][0]
    named = {d["package"]: d for d in doc["differences"]}  # each difference named
    assert named["filelock"]["kind"] == "source" and "filelock: installed file://" in named["filelock"]["text"]
    assert named["stray-pkg"]["text"] == "stray-pkg 1.0: installed, not in the lock"
    assert named["torch"]["kind"] == "missing"
    changes = {c["package"]: c for c in doc["changes"]}
    assert changes["stray-pkg"]["after"] is None and changes["torch"]["after"] == "2.9.1+cpu"
    assert compare(read(proj / "pylock.toml"), installed_dists(v2)) == []  # exactly the lock now
    again = setup(proj, "--frozen", "--no-verify", "--venv", str(v2), "--json", env=env)
    assert json.loads(again.stdout)["environments"][0]["action"] == "no-op"


def test_a_lock_that_fits_the_plan_is_installed_without_resolving_until_upgrade(indexes):
    root, torch_simple, general = indexes
    env = isolated_env(root)
    proj = project(root, torch_simple.as_uri(), general.as_uri())
    assert setup(proj, "--no-verify", env=env).returncode == 0
    # a newer torch appears on the index: the lock still pins 2.9.1 until --upgrade
    torch_index(root / "torchidx", "cpu", versions=("2.9.1", "2.10.0"))
    fresh = setup(proj, "--no-verify", "--venv", str(root / "v3"), "--json", env=env)
    assert fresh.returncode == 0, fresh.stderr
    doc = json.loads(fresh.stdout)["environments"][0]
    assert doc["from_lock"] and installed(root / "v3")["torch"] == "2.9.1+cpu"
    up = setup(proj, "--no-verify", "--venv", str(root / "v3"), "--upgrade", "--json", env=env)
    assert up.returncode == 0, up.stderr
    assert not json.loads(up.stdout)["environments"][0]["from_lock"]
    assert installed(root / "v3")["torch"] == "2.10.0+cpu" and read_lock(proj / "pylock.toml").pins()["torch"] == "2.10.0+cpu"


def test_a_satisfied_environment_reuses_the_verification_saved_for_its_very_lock(indexes):
    import hashlib

    root, torch_simple, general = indexes
    env = isolated_env(root)
    proj = project(root, torch_simple.as_uri(), general.as_uri())
    assert setup(proj, "--no-verify", env=env).returncode == 0
    # what a passing verification of this lock leaves in setup-plan.json (the fake torch cannot pass one)
    record = json.loads((proj / "setup-plan.json").read_text())
    sha = hashlib.sha256((proj / "pylock.toml").read_bytes()).hexdigest()
    step = {"framework": "torch", "name": "import", "ok": True, "seconds": 1.0, "detail": {}}
    record["verification"] = {"main": {"python": "py", "ok": True, "steps": [step], "lock-sha256": sha}}
    (proj / "setup-plan.json").write_text(json.dumps(record))
    again = setup(proj, env=env)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout and "verified earlier" in again.stdout
    # the record of another lock is not reused: the ladder runs (and fails on the fake torch)
    record["verification"]["main"]["lock-sha256"] = "0" * 64
    (proj / "setup-plan.json").write_text(json.dumps(record))
    ran = setup(proj, "--json", env=env)
    assert ran.returncode == 1 and not json.loads(ran.stdout)["environments"][0]["verified_before"]


def test_frozen_with_the_pip_installer_makes_the_environment_exactly_the_lock(indexes):
    import subprocess

    from lmdev.setup.installer import uv_binary
    from lmdev.setup.state import compare, installed_dists

    root, torch_simple, general = indexes
    env = isolated_env(root)
    proj = project(root, torch_simple.as_uri(), general.as_uri())
    assert setup(proj, "--no-verify", env=env).returncode == 0
    v2 = drifted_venv(root, general)
    frozen = setup(proj, "--frozen", "--installer", "pip", "--no-verify", "--venv", str(v2), "--json", env=env)
    assert frozen.returncode == 0, frozen.stderr
    doc = json.loads(frozen.stdout)["environments"][0]
    assert doc["action"] == "frozen" and {d["package"] for d in doc["differences"]} >= {"stray-pkg", "filelock", "torch"}
    lock = read_lock(proj / "pylock.toml")
    assert compare(lock, installed_dists(v2)) == []  # exactly the lock: versions, files, sources; no stray
    assert installed(v2) == installed(proj / ".venv")

    wheel = torch_simple / "torch" / "torch-2.9.1+cpu-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"\0")  # the index now serves a different file: pip refuses it too
    subprocess.run([uv_binary(), "venv", "-q", "--no-config", str(root / "v3")], check=True)  # (faster than venv)
    tampered = setup(proj, "--frozen", "--installer", "pip", "--no-verify", "--venv", str(root / "v3"), env=env)
    assert tampered.returncode == 2, tampered.stdout + tampered.stderr
    assert "sha256" in tampered.stderr and "Traceback" not in tampered.stderr
    assert "torch" not in installed(root / "v3")
