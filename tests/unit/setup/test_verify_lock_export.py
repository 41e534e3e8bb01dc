"""Verification's checks that need no framework, the lock writer, and the exports."""

from __future__ import annotations

from lmdev.setup.export import base_image, dockerfile, requirements, sbatch
from lmdev.setup.lock import Lock, read_lock, write_lock
from lmdev.setup.plan import make_plan
from lmdev.setup.profile import PROFILES
from lmdev.setup.verify import diagnose, preflight


def test_preflight_names_duplicate_nccl_and_shadowed_cudnn(tmp_path):
    dup = preflight({"nvidia-nccl-cu12": "2.21", "nvidia-nccl-cu13": "2.27"}, {})
    assert not dup.ok and "duplicate NCCL" in dup.cause and dup.fix == "lmdev setup --repair"
    (tmp_path / "libcudnn.so.8").write_text("")
    shadow = preflight({"nvidia-cudnn-cu12": "9.10"}, {"LD_LIBRARY_PATH": f"/nonexistent:{tmp_path}"})
    assert not shadow.ok and "LD_LIBRARY_PATH" in shadow.cause and "unset LD_LIBRARY_PATH" in shadow.fix
    assert preflight({"nvidia-cudnn-cu12": "9.10"}, {}).ok
    assert preflight({}, {"LD_LIBRARY_PATH": str(tmp_path)}).ok  # no cuDNN wheel to shadow


def test_failures_are_named_with_cause_and_fix():
    cause, fix = diagnose("torch", "operation", "RuntimeError: CUDA error: no kernel image is available", True)
    assert "no kernel image" in cause and fix == "lmdev setup --repair"
    cause, _ = diagnose("torch", "build", "RuntimeError: The NVIDIA driver on your system is too old "
                        "(found version 11040). CUDA driver version is insufficient", True)
    assert "driver is too old" in cause
    cause, fix = diagnose("keras", "backend", "ModuleNotFoundError: No module named 'jax'", False)
    assert "Keras backend" in cause and "--repair" in fix


def test_lock_round_trips_with_hashes_and_lmdev_table(tmp_path):
    lock = Lock([{"name": "Torch", "version": "2.9.1+cu126",
                  "wheels": [{"url": "https://x/torch-2.9.1%2Bcu126-cp312-cp312-manylinux_2_28_x86_64.whl",
                              "size": 5, "hashes": {"sha256": "ab" * 32}}]}],
                "==3.12.*", {"environment": "main", "backends": {"torch": "cu126"}, "python": "3.12"})
    path = write_lock(tmp_path / "pylock.toml", lock)
    text = path.read_text()
    assert text.startswith('lock-version = "1.0"\ncreated-by = "lmdev"')
    back = read_lock(path)
    assert back.packages == lock.packages and back.tool == lock.tool and back.requires_python == "==3.12.*"
    assert back.pins() == {"torch": "2.9.1+cu126"}


def test_exports_fit_the_backend():
    plan = make_plan(PROFILES["gtx1080ti"], ["torch"])
    assert base_image("cu126") == "nvidia/cuda:12.6.3-runtime-ubuntu22.04"
    assert base_image("rocm6.4") == "rocm/dev-ubuntu-22.04:6.4" and base_image("cpu") == "ubuntu:22.04"
    assert "FROM nvidia/cuda:12.6.3-runtime-ubuntu22.04" in dockerfile(plan)
    assert "#SBATCH --gres=gpu:1" in sbatch(plan)
    lock = Lock([{"name": "torch", "version": "2.9.1+cu126", "wheels": [{"url": "u", "hashes": {"sha256": "cd" * 32}}]}], "")
    assert requirements(lock).splitlines()[1:] == ["torch==2.9.1+cu126 \\", f"    --hash=sha256:{'cd' * 32}"]


def test_frozen_refuses_a_python_the_lock_was_not_made_for(tmp_path):
    import json

    import pytest

    from lmdev.errors import LmdevError
    from lmdev.setup.engine import SetupOptions, run_frozen

    plan = make_plan(PROFILES["cpu-only"], ["torch"])
    (tmp_path / "setup-plan.json").write_text(json.dumps({"plan": plan.to_dict(), "verification": {}}))
    write_lock(tmp_path / "pylock.toml", Lock([], "==3.11.*", {"environment": "main", "python": "3.11"}))
    venv = tmp_path / "v"
    with pytest.raises(LmdevError, match=r"made for Python 3\.11; --python asks for 3\.10") as err:
        run_frozen(SetupOptions(project=tmp_path, venv=venv, python="3.10", frozen=True, verify=False))
    assert "lmdev setup --python 3.10" in (err.value.hint or "")
    assert not venv.exists()  # refused before any environment was made
