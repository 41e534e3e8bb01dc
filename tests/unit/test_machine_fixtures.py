"""Doctor on whole machines: each fixture in tests/fixtures/machines is replayed through
FixtureSource, and doctor must find exactly the findings the fixture expects, from the facts the
machine really has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from lmdev.diagnose.report import Report, doctor
from lmdev.probe.source import FixtureSource
from lmdev.probe.types import GiB

ROOT = Path(__file__).resolve().parents[2]
MACHINES = ROOT / "tests" / "fixtures" / "machines"
FIXTURES = sorted(MACHINES.glob("*.json"))
_REPORTS: dict[str, Report] = {}


def report(name: str) -> Report:
    """Doctor's report on a fixture, computed once per test session (they are pure data)."""
    if name not in _REPORTS:
        _REPORTS[name] = doctor(FixtureSource.load(MACHINES / name))
    return _REPORTS[name]


def ids(r: Report) -> set[str]:
    return {f.id for f in r.findings}


def finding(r: Report, id: str):
    [f] = [f for f in r.findings if f.id == id]
    return f


def test_every_machine_the_issue_names_has_a_fixture():
    names = {p.name for p in FIXTURES}
    assert {"this-cpu-box.json", "h100-8x-nvlink.json", "rtx4090-cpu-torch.json",
            "wsl2-rtx3080.json", "laptop-no-gpu.json", "apple-m2-max.json"} <= names


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_doctor_finds_exactly_what_the_fixture_expects(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data.get("description"), "every fixture says what machine it is"
    assert "expected_findings" in data, f"{path.name} has no expected_findings"
    r = report(path.name)
    assert ids(r) == set(data["expected_findings"]), [f"{f.id}: {f.title}" for f in r.findings]
    # every finding is complete, and a fixture is a healthy recording: nothing failed to read
    for f in r.findings:
        assert f.title and f.evidence and f.fix, f
    if "probe.failed" not in data["expected_findings"]:
        assert r.facts.probe_errors == []
    assert r.exit_code == (1 if any(f.severity == "error" for f in r.findings) else 0)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_report_matches_the_published_schema(path):
    schema = json.loads((ROOT / "docs" / "schemas" / "doctor.schema.json").read_text(encoding="utf-8"))
    jsonschema.validate(report(path.name).to_dict(), schema)


# --------------------------------------------------------------------------- this machine


def test_this_cpu_box():
    r = report("this-cpu-box.json")
    h, acc, sw = r.facts.host, r.facts.accelerators, r.facts.software
    assert (h.os, h.cpu.architecture, h.container) == ("linux", "x86_64", "docker")
    assert h.virtual_machine == "hypervisor"  # a VM without DMI: only the cpuinfo flag tells
    assert (h.cpu.cores, h.cpu.threads) == (2, 2)
    assert {"avx512f", "amx_bf16", "amx_tile"} <= set(h.cpu.features)
    assert h.memory.total_bytes == 24684092 * 1024
    assert h.memory.cgroup_limit_bytes is None  # cgroup v1 "unlimited" is 2**63 rounded to pages
    assert h.cpu.quota_cores is None  # cfs_quota_us -1
    assert acc.gpus == [] and acc.source is None
    assert sw.torch.version == "2.14.1" and sw.torch.cuda == "13.0" and not sw.torch.cpu_only
    assert sw.cuda_toolkit.cuda_version == "13.0"


# --------------------------------------------------------------------------- 8x H100


def test_h100_server_gpus():
    r = report("h100-8x-nvlink.json")
    acc = r.facts.accelerators
    assert acc.source == "nvml"
    assert (acc.driver_version, acc.cuda_driver_version) == ("550.90.07", "12.4")
    assert len(acc.gpus) == 8
    assert [g.index for g in acc.gpus] == list(range(8))
    for g in acc.gpus:
        assert (g.vendor, g.name) == ("nvidia", "NVIDIA H100 80GB HBM3")
        assert g.memory_total_bytes == 81559 * 1024**2  # nvidia-smi's "81559MiB"
        assert g.compute_capability == "9.0"
        assert g.nvlinks_active == 18
        assert g.persistence_mode is True and g.mig_enabled is False
        assert g.power_limit_w == 700.0
        assert (g.pcie_gen_max, g.pcie_width_max) == (5, 16)
    assert len({g.uuid for g in acc.gpus}) == 8
    busy = acc.gpus[3]
    assert busy.utilization_percent == 97 and busy.power_w == pytest.approx(698.913)
    assert busy.throttle_reasons == ["sw_power_cap"]
    assert [(p.pid, p.name, p.used_memory_bytes) for p in busy.processes] == [
        (48213, "python", 36163289088)]
    assert acc.gpus[0].throttle_reasons == ["gpu_idle"] and acc.gpus[0].processes == []


def test_h100_server_topology_is_nvswitch_everywhere():
    topo = report("h100-8x-nvlink.json").facts.accelerators.topology
    assert len(topo) == 8 and all(len(row) == 8 for row in topo)
    for i in range(8):
        for j in range(8):
            assert topo[i][j] == ("X" if i == j else "NV18"), (i, j)


def test_h100_server_host_and_software():
    r = report("h100-8x-nvlink.json")
    h, sw = r.facts.host, r.facts.software
    assert h.os_name == "Ubuntu 22.04.4 LTS"
    assert h.cpu.model == "Intel(R) Xeon(R) Platinum 8480+"
    assert (h.cpu.cores, h.cpu.threads) == (112, 224)  # 2 sockets x 56 cores x 2 threads
    assert {"avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile"} <= set(h.cpu.features)
    assert h.container is None and h.virtual_machine is None and not h.wsl
    assert h.memory.total_bytes > 1.9 * 1024 * GiB
    disks = {d.purpose: d for d in h.disks}
    assert disks["huggingface_cache"].path == "/raid/hf-cache"
    assert disks["huggingface_cache"].total_bytes == 30721622327296  # the RAID, not the root disk
    assert disks["project"].total_bytes == 1888990191616
    assert sw.torch.cuda == "12.1" and sw.packages["nvidia-nccl-cu12"] == "2.20.5"
    assert sw.system_nccl == "/usr/lib/x86_64-linux-gnu/libnccl.so.2"
    assert (sw.cuda_toolkit.cuda_version, sw.cuda_toolkit.cuda_home) == ("12.4", "/usr/local/cuda")


def test_h100_server_findings_name_the_busy_gpu():
    r = report("h100-8x-nvlink.json")
    f = finding(r, "gpu.memory_in_use")
    assert f.severity == "warning" and f.title.startswith("GPU 3 ")
    assert "python (pid 48213" in f.evidence
    assert finding(r, "cuda.nvcc_mismatch").severity == "info"  # 12.4 vs 12.1: same major
    assert r.exit_code == 0


# --------------------------------------------------------------------------- RTX 4090, CPU torch


def test_rtx4090_with_cpu_torch():
    r = report("rtx4090-cpu-torch.json")
    acc, h, sw = r.facts.accelerators, r.facts.host, r.facts.software
    [g] = acc.gpus
    assert (g.name, g.compute_capability, g.memory_total_bytes) == (
        "NVIDIA GeForce RTX 4090", "8.9", 24564 * 1024**2)
    assert g.persistence_mode is False and g.nvlinks_active is None and g.mig_enabled is None
    assert (acc.driver_version, acc.cuda_driver_version, acc.topology) == ("560.35.03", "12.6", None)
    assert h.cpu.model == "AMD Ryzen 9 7950X 16-Core Processor"
    assert (h.cpu.cores, h.cpu.threads) == (16, 32)
    assert h.cpu.features == ["avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni"]
    assert sw.torch.cpu_only and sw.torch.cuda is None
    assert sw.cuda_toolkit.cuda_version == "11.8"
    assert sw.pynvml_providers == ["nvidia-ml-py", "pynvml"]
    error = finding(r, "torch.cpu_build_on_gpu")
    assert error.severity == "error" and "RTX 4090" in error.evidence
    assert "download.pytorch.org/whl/cu126" in error.fix  # the newest wheel a 560 driver runs
    assert r.exit_code == 1


# --------------------------------------------------------------------------- WSL2


def test_wsl2_machine():
    r = report("wsl2-rtx3080.json")
    h, acc, sw = r.facts.host, r.facts.accelerators, r.facts.software
    assert h.wsl is True
    assert h.virtual_machine is None  # WSL is not reported as a VM too
    assert h.container is None
    assert (h.cpu.cores, h.cpu.threads) == (8, 16)
    assert 15 * GiB < h.memory.total_bytes < 16 * GiB
    assert acc.source == "nvml"  # WSL has no PCI path to the GPU; NVML comes from Windows
    [g] = acc.gpus
    assert (g.name, g.compute_capability, g.memory_total_bytes) == ("NVIDIA GeForce RTX 3080", "8.6", 10 * GiB)
    assert (acc.driver_version, acc.cuda_driver_version) == ("560.94", "12.6")
    assert sw.keras_backend == "torch"  # KERAS_BACKEND wins over ~/.keras/keras.json
    assert sw.env["WSL_DISTRO_NAME"] == "Ubuntu-22.04"
    assert "15.6 GiB" in finding(r, "host.wsl_memory").title


# --------------------------------------------------------------------------- laptop


def test_laptop_without_gpu():
    r = report("laptop-no-gpu.json")
    h, acc = r.facts.host, r.facts.accelerators
    assert acc.gpus == [] and acc.source is None  # the Intel iGPU is not an accelerator
    assert (h.cpu.cores, h.cpu.threads) == (4, 8)
    assert h.cpu.features == ["avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni"]
    assert h.memory.total_bytes < 8 * GiB
    assert finding(r, "disk.low_space").severity == "warning"  # 9.3 GiB: low, not critical
    assert r.exit_code == 0


# --------------------------------------------------------------------------- Apple silicon


def test_apple_m2_max():
    r = report("apple-m2-max.json")
    h, acc, sw = r.facts.host, r.facts.accelerators, r.facts.software
    assert (h.os, h.os_name, h.cpu.architecture) == ("darwin", "macOS 14.6.1", "arm64")
    assert (h.cpu.model, h.cpu.cores, h.cpu.threads) == ("Apple M2 Max", 12, 12)
    assert h.cpu.features == ["neon", "bf16", "i8mm"]  # no SME before M4
    assert h.memory.total_bytes == 64 * GiB
    assert h.memory.available_bytes == (95143 + 1156103 + 40012) * 16384
    assert h.memory.swap_total_bytes == 2048 * 1024**2
    assert acc.source == "sysctl"
    [g] = acc.gpus
    assert (g.vendor, g.name, g.memory_total_bytes) == ("apple", "Apple M2 Max GPU (MPS)", 64 * GiB)
    assert sw.torch.cpu_only and sw.torch.cuda is None
    assert {d.purpose: d.path for d in h.disks}["pip_cache"] == "/Users/ana/Library/Caches/pip"
    assert r.findings == [] and r.status == "ok"


# --------------------------------------------------------------------------- A100 in Docker


def test_a100_container():
    r = report("a100-docker-cu128.json")
    h, acc, sw = r.facts.host, r.facts.accelerators, r.facts.software
    assert (h.container, h.virtual_machine) == ("docker", "kvm")
    assert h.shm_bytes == 64 * 1024**2
    assert h.cpu.quota_cores == 8.0 and h.cpu.threads == 30
    assert h.memory.cgroup_limit_bytes == 64 * GiB
    [g] = acc.gpus
    assert (g.name, g.compute_capability, g.nvlinks_active) == ("NVIDIA A100-SXM4-40GB", "8.0", 0)
    assert sw.torch.version == "2.8.0" and sw.torch.cuda == "12.8"
    # a newer CUDA minor than the driver runs through minor-version compatibility: a warning
    assert finding(r, "torch.cuda_newer_than_driver").severity == "warning"
    assert r.exit_code == 0


# --------------------------------------------------------------------------- the CLI


def _lmdev() -> list[str]:
    exe = Path(sys.executable).with_name("lmdev")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "lmdev"]


@pytest.mark.parametrize("name, code", [("rtx4090-cpu-torch.json", 1), ("apple-m2-max.json", 0)])
def test_cli_diagnoses_a_fixture(name, code):
    proc = subprocess.run(_lmdev() + ["doctor", "--from", str(MACHINES / name), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    doc = json.loads(proc.stdout)  # one JSON document and nothing else on stdout
    expected = json.loads((MACHINES / name).read_text(encoding="utf-8"))["expected_findings"]
    assert {f["id"] for f in doc["findings"]} == set(expected)
    assert doc["summary"]["status"] == ("errors" if code else "ok")
    assert doc["facts"]["host"]["hostname"] == FixtureSource.load(MACHINES / name).hostname
