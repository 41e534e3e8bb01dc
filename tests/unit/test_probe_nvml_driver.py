"""The NVIDIA probe skips pynvml (its import and NVML's start) on a machine with no NVIDIA driver,
and still asks NVML where a driver is there (WSL included, which has no /proc/driver/nvidia)."""

from __future__ import annotations

import importlib.abc
import subprocess
import sys
from pathlib import Path

import pytest

from lmdev.probe import source as source_mod
from lmdev.probe.gpu import collect_nvidia
from lmdev.probe.source import LocalSource, nvidia_driver_present


def touch(path: Path, data: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_a_bare_linux_root_has_no_driver(tmp_path: Path):
    touch(tmp_path / "etc" / "ld.so.cache", b"ld.so-1.7.0 libc.so.6 /lib/x86_64-linux-gnu/libc.so.6")
    assert not nvidia_driver_present("linux", "", str(tmp_path))


@pytest.mark.parametrize("where", ["proc/driver/nvidia/version", "dev/nvidiactl",
                                   "usr/lib/wsl/lib/libnvidia-ml.so.1",  # WSL: no /proc/driver/nvidia
                                   "usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"])
def test_a_driver_is_found_where_nvidia_puts_it(tmp_path: Path, where: str):
    touch(tmp_path / where)
    assert nvidia_driver_present("linux", "", str(tmp_path))


def test_the_loaders_cache_and_ld_library_path_count(tmp_path: Path):
    touch(tmp_path / "etc" / "ld.so.cache", b"\x00libnvidia-ml.so.1\x00/opt/drv/libnvidia-ml.so.1\x00")
    assert nvidia_driver_present("linux", "", str(tmp_path))
    bare = tmp_path / "bare"
    touch(tmp_path / "drv" / "libnvidia-ml.so.1")
    assert nvidia_driver_present("linux", f"/nowhere:{tmp_path / 'drv'}", str(bare))


def test_macos_never_and_windows_asks_nvml(tmp_path: Path):
    assert not nvidia_driver_present("darwin", "", str(tmp_path))
    assert nvidia_driver_present("windows", "", str(tmp_path))


class _Watch(importlib.abc.MetaPathFinder):
    """Records every attempt to import pynvml (and lets the import go on as usual)."""

    def __init__(self) -> None:
        self.seen = 0

    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name == "pynvml":
            self.seen += 1
        return None


@pytest.mark.parametrize("driver", [False, True])
def test_pynvml_is_imported_only_where_a_driver_is(monkeypatch: pytest.MonkeyPatch, driver: bool):
    watch = _Watch()
    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setattr(sys, "meta_path", [watch, *sys.meta_path])
    monkeypatch.setattr(source_mod, "nvidia_driver_present", lambda *a, **k: driver)
    src = LocalSource()
    monkeypatch.setattr(src, "which", lambda name: None)  # no nvidia-smi either way
    monkeypatch.setattr(src, "exists", lambda path: False)
    errors: list = []
    collect_nvidia(src, errors)
    assert (watch.seen > 0) is driver
    assert errors == []  # nothing hinted at NVIDIA hardware: a missing NVML is no finding


def test_a_driverless_machine_reports_the_card_without_nvml(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(source_mod, "nvidia_driver_present", lambda *a, **k: False)
    errors: list = []
    src = LocalSource()
    monkeypatch.setattr(src, "which", lambda name: None)
    monkeypatch.setattr(src, "exists", lambda path: False)
    collect_nvidia(src, errors, hardware_seen=True)  # a card on the PCI bus, no driver
    assert [e.collector for e in errors] == ["nvml"]
    assert "no NVIDIA driver" in errors[0].message


@pytest.mark.integration
def test_setups_facts_leave_pynvml_alone_on_this_driverless_machine():
    if nvidia_driver_present(LocalSource().os, ""):
        pytest.skip("this machine has an NVIDIA driver")
    code = ("import sys; from lmdev.setup.engine import machine_facts; machine_facts(); "
            "from lmdev.probe.collect import collect; collect(); print('pynvml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
