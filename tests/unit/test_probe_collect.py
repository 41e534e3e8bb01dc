"""collect() never crashes: a collector that fails (permission denied, NVML missing or of the
wrong version, package metadata unreadable) becomes a probe error, an info finding in doctor, and
the rest of the facts stand. Also: collect() on this very machine, and record -> replay."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from lmdev.diagnose.report import doctor
from lmdev.probe.collect import collect
from lmdev.probe.source import FixtureSource, LocalSource, RecordingSource

H100 = Path(__file__).resolve().parents[1] / "fixtures" / "machines" / "h100-8x-nvlink.json"


def h100(cls: type[FixtureSource] = FixtureSource) -> FixtureSource:
    base = FixtureSource.load(H100)
    return cls(**{k: getattr(base, k) for k in FixtureSource.__dataclass_fields__})


class Denied(FixtureSource):
    """/proc and /sys refuse to be read (a hardened host, an unprivileged sandbox)."""

    def read_text(self, path: str):
        if path.startswith(("/proc/", "/sys/")):
            raise PermissionError(13, "Permission denied", path)
        return super().read_text(path)


class BrokenNvml(FixtureSource):
    def nvml(self):
        raise RuntimeError("NVML library of the wrong version: nvmlDeviceGetCount_v2 not found")


class BrokenMetadata(FixtureSource):
    def distributions(self):
        raise PermissionError(13, "Permission denied", "/opt/venv/lib/python3.10/site-packages")


class BrokenDisks(FixtureSource):
    def disk_usage(self, path: str):
        raise OSError(5, "Input/output error", path)


def collectors(facts) -> list[str]:
    return [e.collector for e in facts.probe_errors]


def test_permission_denied_on_proc_and_sys():
    facts = collect(h100(Denied))
    assert {"wsl", "container", "vm", "cpu", "memory", "pci"} <= set(collectors(facts))
    assert all("PermissionError" in e.message for e in facts.probe_errors)
    h = facts.host
    assert (h.cpu.threads, h.memory.total_bytes, h.container) == (None, None, None)
    assert h.cpu.architecture == "x86_64" and h.os_name == "Ubuntu 22.04.4 LTS"  # /etc is readable
    # NVML does not read /proc or /sys: the GPUs stand, only the process names are unknown
    assert facts.accelerators.source == "nvml" and len(facts.accelerators.gpus) == 8
    assert [p.name for p in facts.accelerators.gpus[3].processes] == [None]
    assert facts.software.torch.cuda == "12.1"
    assert len(facts.host.disks) == 4


def test_permission_denied_becomes_info_findings_and_the_report_stands():
    report = doctor(h100(Denied))
    failed = [f for f in report.findings if f.id == "probe.failed"]
    assert failed and all(f.severity == "info" for f in failed)
    assert any("Permission denied" in f.evidence for f in failed)
    assert "gpu.memory_in_use" in {f.id for f in report.findings}  # the rest of the report stands
    assert report.to_dict()["summary"]["infos"] >= len(failed)


def test_nvml_that_raises_falls_back_to_proc():
    facts = collect(h100(BrokenNvml))
    nvml = [e for e in facts.probe_errors if e.collector == "nvml"]
    assert len(nvml) == 1 and "wrong version" in nvml[0].message
    # nvidia-smi is on PATH but cannot be run here
    assert [e.message for e in facts.probe_errors if e.collector == "nvidia-smi"] == [
        "nvidia-smi failed: could not be run"]
    acc = facts.accelerators
    # /proc/driver/nvidia still names the GPUs
    assert acc.source == "proc" and acc.driver_version == "550.90.07"
    assert [g.name for g in acc.gpus] == ["NVIDIA H100 80GB HBM3"] * 8
    assert acc.gpus[3].pci_bus_id == "0000:5d:00.0"
    assert facts.host.cpu.threads == 224 and facts.software.torch is not None


def test_nvml_init_failing_is_an_error_only_where_nvidia_hardware_is():
    src = h100()
    src.nvml_snapshot = {"init_error": "Driver/library version mismatch"}
    assert "nvml" in collectors(collect(src))
    laptop = FixtureSource(os="linux", nvml_snapshot={"init_error": "NVML Shared Library Not Found"})
    assert collect(laptop).probe_errors == []


def test_package_metadata_that_raises():
    facts = collect(h100(BrokenMetadata))
    assert collectors(facts) == ["packages"]
    sw = facts.software
    assert sw.packages == {} and sw.torch is None
    assert sw.cuda_toolkit.cuda_version == "12.4"  # the rest of the software facts stand
    assert sw.env["HF_HOME"] == "/raid/hf-cache"
    assert len(facts.accelerators.gpus) == 8 and facts.host.cpu.cores == 112


def test_disk_usage_that_raises():
    facts = collect(h100(BrokenDisks))
    assert set(collectors(facts)) == {"shm", "disks"}
    assert facts.host.shm_bytes is None and facts.host.disks == []
    assert facts.host.memory.total_bytes is not None


def test_a_whole_collector_that_raises_is_contained(monkeypatch):
    import lmdev.probe.collect as collect_module

    def boom(src, errors=None):
        raise ValueError("unexpected layout")

    monkeypatch.setattr(collect_module, "collect_software", boom)
    facts = collect(h100())
    assert collectors(facts) == ["software"]
    assert facts.probe_errors[0].message == "ValueError: unexpected layout"
    assert facts.software.packages == {} and len(facts.accelerators.gpus) == 8


# --------------------------------------------------------------------------- the real machine


def test_collect_on_this_machine():
    facts = collect(LocalSource())
    h = facts.host
    assert h.os == platform.system().lower() == "linux"
    assert h.cpu.threads is not None and h.cpu.threads >= 1
    assert h.memory.total_bytes and h.memory.total_bytes > 0
    assert h.python.version == platform.python_version()
    assert h.disks and h.disks[0].purpose == "project" and h.disks[0].path == os.getcwd()
    assert h.disks[0].total_bytes and h.disks[0].total_bytes > 0


def test_record_and_replay_give_the_same_facts():
    recorder = RecordingSource(LocalSource())
    live = collect(recorder)
    replay = collect(FixtureSource.from_dict(recorder.fixture("this machine")))
    assert replay.to_dict() == live.to_dict()


def test_fixture_keys_starting_with_an_underscore_are_comments():
    src = FixtureSource.from_dict({"_note": "why this fixture expects what it does", "os": "darwin",
                                   "description": "d", "expected_findings": []})
    assert src.os == "darwin"


def test_local_commands_that_are_missing_or_hang():
    src = LocalSource()
    missing = src.run(["lmdev-no-such-command-7f3a"])
    assert (missing.returncode, missing.not_found) == (None, True)
    hung = src.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert (hung.returncode, hung.timed_out) == (None, True)
    ok = src.run([sys.executable, "-c", "print('hi')"])
    assert (ok.returncode, ok.stdout) == (0, "hi\n")
    assert src.read_text("/nonexistent/lmdev/file") is None
    assert src.disk_usage("/nonexistent/lmdev/dir") is None
