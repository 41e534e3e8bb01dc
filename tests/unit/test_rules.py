"""Every doctor rule against fabricated facts: where it fires (with the specific values in its
title, evidence and fix) and where it must stay silent (the healthy case and the near misses).

`RULE_CASES` maps every rule id to a builder of facts that fire it and one of facts that must
not; `test_every_rule_has_a_case` fails for a rule added to RULES without a case here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from lmdev.diagnose import diagnose
from lmdev.diagnose.rules import RULES
from lmdev.diagnose.types import SEVERITY_ORDER, Finding, Hit, Rule
from lmdev.probe.types import (
    GiB,
    AcceleratorFacts,
    CpuFacts,
    DeepCheck,
    DiskFacts,
    Facts,
    GpuFacts,
    GpuProcess,
    HostFacts,
    MemoryFacts,
    ProbeError,
    PythonFacts,
    SoftwareFacts,
    TorchBuild,
    ToolkitFacts,
)

MiB = 1024**2
TB = 2 * 1024 * GiB

# --------------------------------------------------------------------------- fabricated facts


def gpu(index: int = 0, **kw) -> GpuFacts:
    """A healthy, idle RTX 4090 as NVML reports it."""
    values = dict(
        vendor="nvidia",
        name="NVIDIA GeForce RTX 4090",
        uuid=f"GPU-0000000{index}-aaaa-bbbb-cccc-dddddddddddd",
        pci_bus_id=f"00000000:0{index + 1}:00.0",
        memory_total_bytes=24 * GiB,
        memory_used_bytes=512 * MiB,
        compute_capability="8.9",
        pcie_gen_current=4,
        pcie_gen_max=4,
        pcie_width_current=16,
        pcie_width_max=16,
        persistence_mode=True,
        mig_enabled=False,
        ecc_uncorrected_errors=0,
        utilization_percent=0,
        temperature_c=40,
        power_w=30.0,
        power_limit_w=450.0,
    )
    values.update(kw)
    return GpuFacts(index=index, **values)


def healthy(n_gpus: int = 1) -> Facts:
    """A healthy GPU workstation: RTX 4090(s), driver 560 (CUDA 12.6), torch 2.5.1+cu124 in a venv."""
    project = "/home/ada/proj"
    return Facts(
        host=HostFacts(
            hostname="ws",
            os="linux",
            os_name="Ubuntu 22.04.4 LTS",
            kernel="6.5.0-41-generic",
            python=PythonFacts(
                version="3.11.9",
                executable=f"{project}/.venv/bin/python",
                prefix=f"{project}/.venv",
                virtualenv=f"{project}/.venv",
            ),
            cpu=CpuFacts(model="AMD Ryzen 9 7950X", architecture="x86_64", cores=16, threads=32,
                         features=["avx2", "avx512f"]),
            memory=MemoryFacts(total_bytes=64 * GiB, available_bytes=50 * GiB,
                               swap_total_bytes=8 * GiB, swap_free_bytes=8 * GiB),
            shm_bytes=32 * GiB,
            disks=[
                DiskFacts("project", project, TB, TB // 2),
                DiskFacts("huggingface_cache", "/home/ada/.cache/huggingface", TB, TB // 2),
                DiskFacts("torch_cache", "/home/ada/.cache/torch", TB, TB // 2),
                DiskFacts("pip_cache", "/home/ada/.cache/pip", TB, TB // 2),
            ],
        ),
        accelerators=AcceleratorFacts(
            source="nvml",
            driver_version="560.35.03",
            cuda_driver_version="12.6",
            gpus=[gpu(i) for i in range(n_gpus)],
        ),
        software=SoftwareFacts(
            packages={
                "torch": "2.5.1+cu124",
                "torchvision": "0.20.1+cu124",
                "nvidia-nccl-cu12": "2.21.5",
                "nvidia-ml-py": "12.560.30",
            },
            torch=TorchBuild("2.5.1+cu124", cuda="12.4"),
            pynvml_providers=["nvidia-ml-py"],
        ),
    )


def cpu_box() -> Facts:
    """A laptop without any accelerator (and no GPU-side packages)."""
    f = healthy()
    f.accelerators = AcceleratorFacts()
    f.software.packages = {"torch": "2.5.1+cpu"}
    f.software.torch = TorchBuild("2.5.1+cpu", cpu_only=True)
    f.software.pynvml_providers = []
    return f


def with_gpus(*gpus: GpuFacts, **accel) -> Facts:
    f = healthy()
    f.accelerators.gpus = list(gpus)
    for k, v in accel.items():
        setattr(f.accelerators, k, v)
    return f


def with_torch(version: str, cuda: str | None, driver_cuda: str = "12.6", cc: str = "8.9",
               **torch_kw) -> Facts:
    f = with_gpus(gpu(0, compute_capability=cc), cuda_driver_version=driver_cuda)
    f.software.torch = TorchBuild(version, cuda=cuda, **torch_kw)
    f.software.packages = {"torch": version}
    return f


def with_packages(**packages: str) -> Facts:
    f = healthy()
    f.software.packages = {k.replace("_", "-"): v for k, v in packages.items()}
    return f


def with_env(n_gpus: int, **env: str) -> Facts:
    f = healthy(n_gpus)
    f.software.env = dict(env)
    return f


def with_disk_free(*frees: int) -> Facts:
    """One filesystem per value in ``frees`` (bytes free), each holding one cache."""
    f = healthy()
    purposes = ["project", "huggingface_cache", "torch_cache", "pip_cache"]
    f.host.disks = [DiskFacts(purposes[i], f"/fs{i}/{purposes[i]}", TB + i, free)
                    for i, free in enumerate(frees)]
    return f


def with_deep(*checks: DeepCheck, n_gpus: int = 1) -> Facts:
    f = healthy(n_gpus)
    f.deep = list(checks)
    return f


# --------------------------------------------------------------------------- helpers


def findings(facts: Facts, rule_id: str | None = None) -> list[Finding]:
    """diagnose(facts), optionally only one rule's findings."""
    out = diagnose(facts)
    return [x for x in out if rule_id is None or x.id == rule_id]


def one(facts: Facts, rule_id: str, severity: str) -> Finding:
    """The single finding ``rule_id`` produces for ``facts``, checked for shape and severity."""
    hits = findings(facts, rule_id)
    assert len(hits) == 1, f"{rule_id}: expected one finding, got {hits}"
    hit = hits[0]
    assert hit.severity == severity, hit
    assert hit.title and "\n" not in hit.title
    assert hit.evidence and hit.fix
    return hit


def silent(facts: Facts, rule_id: str) -> None:
    hits = findings(facts, rule_id)
    assert hits == [], f"{rule_id} must not fire: {hits}"


# --------------------------------------------------------------------------- the registry


def test_rule_ids_are_unique_and_well_formed():
    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for r in RULES:
        assert r.severity in SEVERITY_ORDER, r
        assert "." in r.id and r.id == r.id.strip().lower() and " " not in r.id, r.id
        assert r.summary and "\n" not in r.summary, r.id
        assert callable(r.check)


def test_healthy_workstation_has_no_errors_or_warnings():
    bad = [x for x in findings(healthy()) if x.severity in ("error", "warning")]
    assert bad == []


def test_healthy_workstation_is_fully_silent():
    # The near-miss cases below start from it, so it must not fire anything, info included.
    assert findings(healthy()) == []
    assert findings(healthy(2)) == []


def test_diagnose_orders_errors_then_warnings_then_info():
    f = healthy(2)
    f.host.wsl = True  # info
    f.software.env = {"CUDA_VISIBLE_DEVICES": "0"}  # info
    f.accelerators.gpus[1].ecc_uncorrected_errors = 2  # warning
    f.host.python.virtualenv = None  # warning
    f.software.packages["torchvision"] = "0.19.0+cu124"  # error
    f.probe_errors = [ProbeError("disks", "permission denied")]  # info
    out = findings(f)
    severities = [x.severity for x in out]
    assert {"error", "warning", "info"} <= set(severities)
    assert severities == sorted(severities, key=SEVERITY_ORDER.__getitem__)
    assert severities[0] == "error" and severities[-1] == "info"


def test_hit_severity_overrides_the_rule_default():
    def check(f: Facts):
        yield Hit("a", "b", "c")
        yield Hit("d", "e", "f", severity="info")

    got = Rule("x.y", "error", "summary", check).run(Facts())
    assert [(x.id, x.severity, x.title) for x in got] == [("x.y", "error", "a"), ("x.y", "info", "d")]


# --------------------------------------------------------------------------- accelerators


def test_no_accelerator():
    hit = one(cpu_box(), "accelerator.none", "info")
    assert "AMD Ryzen 9 7950X" in hit.evidence and "32 threads" in hit.evidence
    assert "lmdev plan" in hit.fix
    silent(healthy(), "accelerator.none")
    apple = cpu_box()
    apple.accelerators = AcceleratorFacts(source="sysctl", gpus=[GpuFacts(0, "apple", "Apple M3 Max")])
    silent(apple, "accelerator.none")


def pci_only() -> Facts:
    return with_gpus(GpuFacts(0, "nvidia", "NVIDIA GPU (PCI device 0x2684)", pci_bus_id="0000:01:00.0"),
                     source="pci", driver_version=None, cuda_driver_version=None)


def test_driver_missing():
    hit = one(pci_only(), "gpu.driver_missing", "error")
    assert "0000:01:00.0" in hit.evidence
    assert "nvidia-smi" in hit.fix and "ubuntu-drivers" in hit.fix
    silent(healthy(), "gpu.driver_missing")


def test_driver_missing_is_silent_on_a_tpu_machine():
    # The GPU probe also reports source "pci" for Google TPUs; they need no NVIDIA driver.
    tpu = with_gpus(GpuFacts(0, "google", "TPU v4"), source="pci", driver_version=None,
                    cuda_driver_version=None)
    silent(tpu, "gpu.driver_missing")


def test_pcie_width_lower_fires_even_when_idle():
    f = with_gpus(gpu(0), gpu(1, pcie_width_current=8))
    hit = one(f, "gpu.pcie_degraded", "warning")
    assert "GPU 1" in hit.title and "x8 of x16" in hit.title
    assert "00000000:02:00.0" in hit.evidence
    assert "nvidia-smi -q -d PCI" in hit.fix


@pytest.mark.parametrize("util", [0, None])
def test_pcie_gen_lower_while_idle_is_normal(util):
    silent(with_gpus(gpu(0, pcie_gen_current=1, utilization_percent=util)), "gpu.pcie_degraded")


def test_pcie_gen_lower_under_load_fires():
    hit = one(with_gpus(gpu(0, pcie_gen_current=3, utilization_percent=90)), "gpu.pcie_degraded", "warning")
    assert "Gen3" in hit.title and "Gen4" in hit.title and "GPU 0" in hit.title
    assert "90%" in hit.evidence


def test_pcie_width_and_gen_both_lower_give_two_findings():
    f = with_gpus(gpu(0, pcie_width_current=4, pcie_gen_current=2, utilization_percent=50))
    assert len(findings(f, "gpu.pcie_degraded")) == 2


def test_memory_in_use_by_a_process():
    g = gpu(0, memory_used_bytes=2 * GiB, processes=[GpuProcess(1234, "python", 2 * GiB)])
    hit = one(with_gpus(g), "gpu.memory_in_use", "warning")
    assert "GPU 0 has 2.0 GiB of 24.0 GiB" in hit.title
    assert "python (pid 1234, 2.0 GiB)" in hit.evidence
    assert "kill PID" in hit.fix


def test_memory_in_use_without_visible_processes():
    hit = one(with_gpus(gpu(0, memory_used_bytes=3 * GiB)), "gpu.memory_in_use", "warning")
    assert "3.0 GiB of 24.0 GiB" in hit.title
    assert "processes not visible" in hit.evidence


def test_memory_in_use_near_misses():
    silent(healthy(), "gpu.memory_in_use")  # 0.5 GiB: the driver's own context
    # over 1 GiB but under 10% of the card
    silent(with_gpus(gpu(0, memory_used_bytes=2 * GiB)), "gpu.memory_in_use")
    # a small process
    small = gpu(0, processes=[GpuProcess(99, "Xorg", 100 * MiB)])
    silent(with_gpus(small), "gpu.memory_in_use")


def test_memory_in_use_with_unknown_total_says_so():
    g = gpu(0, memory_total_bytes=None, memory_used_bytes=None,
            processes=[GpuProcess(7, None, None), GpuProcess(8, "train", GiB)])
    hit = one(with_gpus(g), "gpu.memory_in_use", "warning")
    assert "of ?" in hit.title
    assert "? (pid 7, ?)" in hit.evidence and "train (pid 8, 1.0 GiB)" in hit.evidence


def test_persistence_off():
    f = with_gpus(gpu(0), gpu(1, persistence_mode=False), gpu(2, persistence_mode=False))
    hit = one(f, "gpu.persistence_off", "info")
    assert "2 GPU(s)" in hit.title
    assert "GPUs 1, 2" in hit.evidence
    assert "sudo nvidia-smi -pm 1" in hit.fix


def test_persistence_off_silent_cases():
    silent(with_gpus(gpu(0, persistence_mode=None)), "gpu.persistence_off")  # unknown
    wsl = with_gpus(gpu(0, persistence_mode=False))
    wsl.host.wsl = True
    silent(wsl, "gpu.persistence_off")
    windows = with_gpus(gpu(0, persistence_mode=False))
    windows.host.os = "windows"
    silent(windows, "gpu.persistence_off")


def test_ecc_errors():
    hit = one(with_gpus(gpu(0), gpu(1, ecc_uncorrected_errors=3)), "gpu.ecc_errors", "warning")
    assert "GPU 1" in hit.title and "3 uncorrected" in hit.title
    assert "GPU-00000001" in hit.evidence
    assert "sudo nvidia-smi -r -i 1" in hit.fix
    silent(with_gpus(gpu(0, ecc_uncorrected_errors=None)), "gpu.ecc_errors")
    silent(healthy(), "gpu.ecc_errors")


def test_throttled():
    g = gpu(0, throttle_reasons=["gpu_idle", "hw_thermal_slowdown"], temperature_c=91, power_w=300.0)
    hit = one(with_gpus(g), "gpu.throttled", "warning")
    assert "hw_thermal_slowdown" in hit.title and "gpu_idle" not in hit.title
    assert "91 °C" in hit.evidence and "300.0 W of 450.0 W" in hit.evidence
    assert "nvidia-smi -q -d PERFORMANCE" in hit.fix


def test_throttled_silent_for_benign_reasons():
    g = gpu(0, throttle_reasons=["gpu_idle", "sw_power_cap", "applications_clocks_setting"])
    silent(with_gpus(g), "gpu.throttled")


def test_mig_enabled():
    hit = one(with_gpus(gpu(0), gpu(1, mig_enabled=True)), "gpu.mig_enabled", "info")
    assert "GPU(s) 1" in hit.title
    assert "MIG-<uuid>" in hit.fix and "-mig 0" in hit.fix
    silent(with_gpus(gpu(0, mig_enabled=None)), "gpu.mig_enabled")


@pytest.mark.parametrize("value", ["", "-1", " -1 ", "NoDevFiles"])
def test_visible_devices_hiding_every_gpu(value):
    hit = one(with_env(2, CUDA_VISIBLE_DEVICES=value), "cuda.visible_devices", "warning")
    assert "hides every GPU" in hit.title
    assert repr(value) in hit.evidence and "2 GPU(s)" in hit.evidence
    assert "unset CUDA_VISIBLE_DEVICES" in hit.fix


def test_visible_devices_naming_a_missing_gpu():
    hit = one(with_env(2, CUDA_VISIBLE_DEVICES="7"), "cuda.visible_devices", "warning")
    assert "do not exist: 7" in hit.title
    assert "GPUs 0-1" in hit.evidence
    assert hit.fix == "export CUDA_VISIBLE_DEVICES=0,1"


@pytest.mark.parametrize("value,bad", [("0,-1", "-1"), ("1,7,0", "7")])
def test_visible_devices_stops_at_the_first_invalid_entry(value, bad):
    hit = one(with_env(2, CUDA_VISIBLE_DEVICES=value), "cuda.visible_devices", "warning")
    assert f"invalid entry {bad!r}" in hit.title
    assert f"only GPU(s) {value.split(',')[0]} are visible" in hit.title
    assert hit.fix == "export CUDA_VISIBLE_DEVICES=0,1"


def test_visible_devices_showing_a_subset_is_info():
    hit = one(with_env(2, CUDA_VISIBLE_DEVICES="0"), "cuda.visible_devices", "info")
    assert "1 of 2" in hit.title


@pytest.mark.parametrize("value", ["0,1", "1,0", "GPU-00000000-aaaa-bbbb-cccc-dddddddddddd,GPU-1"])
def test_visible_devices_silent_when_all_gpus_shown(value):
    silent(with_env(2, CUDA_VISIBLE_DEVICES=value), "cuda.visible_devices")


def test_visible_devices_silent_when_unset_or_no_gpu():
    silent(healthy(2), "cuda.visible_devices")
    silent(with_env(1, CUDA_VISIBLE_DEVICES="0"), "cuda.visible_devices")
    box = cpu_box()
    box.software.env = {"CUDA_VISIBLE_DEVICES": "-1"}
    silent(box, "cuda.visible_devices")


# --------------------------------------------------------------------------- torch and CUDA


@pytest.mark.parametrize(("driver_cuda", "variant"), [("12.8", "cu128"), ("12.6", "cu126"),
                                                      ("12.4", "cu118"), ("13.0", "cu130"),
                                                      ("11.8", "cu118"), ("12.0", "cu118")])
def test_cpu_torch_on_gpu_suggests_the_wheel_for_the_driver(driver_cuda, variant):
    f = with_torch("2.8.0+cpu", None, driver_cuda=driver_cuda, cpu_only=True)
    hit = one(f, "torch.cpu_build_on_gpu", "error")
    assert "torch 2.8.0+cpu" in hit.evidence and f"CUDA {driver_cuda}" in hit.evidence
    assert "RTX 4090" in hit.evidence and "560.35.03" in hit.evidence
    assert hit.fix == ("lmdev setup --repair, or: "
                       f"pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/{variant}")


def test_cpu_torch_on_blackwell_with_old_driver_says_upgrade_the_driver():
    f = with_torch("2.8.0+cpu", None, driver_cuda="12.6", cc="12.0", cpu_only=True)
    hit = one(f, "torch.cpu_build_on_gpu", "error")
    assert "upgrade the NVIDIA driver" in hit.fix and "--index-url" not in hit.fix


def test_cpu_torch_silent_cases():
    silent(healthy(), "torch.cpu_build_on_gpu")  # a CUDA build
    silent(cpu_box(), "torch.cpu_build_on_gpu")  # no GPU
    amd = cpu_box()
    amd.accelerators = AcceleratorFacts(source="sysfs", gpus=[GpuFacts(0, "amd", "Radeon RX 7900 XTX")])
    silent(amd, "torch.cpu_build_on_gpu")  # not an NVIDIA GPU


def test_torch_cuda_minor_newer_than_driver_is_a_warning():
    f = with_torch("2.8.0+cu128", "12.8", driver_cuda="12.4")
    hit = one(f, "torch.cuda_newer_than_driver", "warning")
    assert "minor" in hit.title
    assert "CUDA 12.8" in hit.evidence and "CUDA 12.4" in hit.evidence and "560.35.03" in hit.evidence
    assert "570.26 or newer" in hit.fix
    assert "--index-url https://download.pytorch.org/whl/cu118" in hit.fix


def test_torch_cuda_major_newer_than_driver_is_an_error():
    f = with_torch("2.9.0+cu130", "13.0", driver_cuda="12.8")
    hit = one(f, "torch.cuda_newer_than_driver", "error")
    assert "will not initialise" in hit.title
    assert "CUDA 13.0" in hit.evidence and "CUDA 12.8" in hit.evidence
    assert "580.65.06 or newer" in hit.fix
    assert "--index-url https://download.pytorch.org/whl/cu128" in hit.fix


def test_torch_cuda_newer_than_every_known_release_names_no_none():
    hit = one(with_torch("3.0.0+cu140", "14.0", driver_cuda="13.0"), "torch.cuda_newer_than_driver", "error")
    assert "None" not in hit.fix and "CUDA 14.0" in hit.fix


@pytest.mark.parametrize(("torch_cuda", "driver_cuda"), [("12.6", "12.6"), ("12.4", "12.6"),
                                                         ("11.8", "12.6"), ("12.6", None),
                                                         ("12.6", "N/A")])
def test_torch_cuda_vs_driver_silent(torch_cuda, driver_cuda):
    f = with_torch("2.5.1", torch_cuda)
    f.accelerators.cuda_driver_version = driver_cuda
    silent(f, "torch.cuda_newer_than_driver")


def test_torch_cuda_vs_driver_silent_without_nvidia_gpu():
    f = with_torch("2.8.0+cu128", "12.8", driver_cuda="12.4")
    f.accelerators.gpus = []
    silent(f, "torch.cuda_newer_than_driver")


def test_arch_missing_for_blackwell():
    f = with_torch("2.5.1+cu124", "12.4", driver_cuda="12.8", cc="12.0")
    f.accelerators.gpus[0].name = "NVIDIA GeForce RTX 5090"
    hit = one(f, "torch.arch_not_compiled", "error")
    assert "GPU 0" in hit.title and "RTX 5090" in hit.title and "sm_120" in hit.title
    assert "Blackwell" in hit.evidence and "cu124 wheels" in hit.evidence
    assert hit.fix.endswith("--index-url https://download.pytorch.org/whl/cu128")


def test_arch_missing_for_pascal_on_cu128_suggests_cu126():
    hit = one(with_torch("2.8.0+cu128", "12.8", driver_cuda="12.8", cc="6.1"), "torch.arch_not_compiled", "error")
    assert "sm_61" in hit.title and "Pascal" in hit.evidence
    assert hit.fix.endswith("/whl/cu126")


def test_arch_read_from_deep_check():
    f = with_torch("2.5.1+cu124", "12.4", driver_cuda="12.8", cc="12.0")
    f.deep = [DeepCheck("torch", ok=True, cuda_available=True, arch_list=["sm_90", "sm_100", "sm_120"])]
    silent(f, "torch.arch_not_compiled")  # a custom build that does carry sm_120
    f = with_torch("2.5.1+cu124", "12.4")
    f.deep = [DeepCheck("torch", ok=True, cuda_available=True, arch_list=["sm_90", "compute_90"])]
    hit = one(f, "torch.arch_not_compiled", "error")
    assert "torch.cuda.get_arch_list()" in hit.evidence and "sm_89" in hit.title
    # sm_86 code runs on sm_89 but not on sm_80: same major, the minor must not be higher
    f = with_torch("2.5.1+cu124", "12.4", cc="8.0")
    f.deep = [DeepCheck("torch", ok=True, cuda_available=True, arch_list=["sm_86", "sm_90"])]
    assert "sm_80" in one(f, "torch.arch_not_compiled", "error").title
    f.accelerators.gpus[0].compute_capability = "8.9"
    silent(f, "torch.arch_not_compiled")


@pytest.mark.parametrize(("torch_cuda", "cc"), [("12.4", "8.9"), ("12.4", "8.6"), ("12.8", "12.0"),
                                                ("11.8", "9.0"), ("12.8", "7.0")])
def test_arch_supported_silent(torch_cuda, cc):
    silent(with_torch("2.7.0", torch_cuda, cc=cc), "torch.arch_not_compiled")


def test_arch_silent_for_cpu_build_and_unknown_cc():
    silent(with_torch("2.5.1+cpu", None, cc="12.0", cpu_only=True), "torch.arch_not_compiled")
    f = with_torch("2.5.1+cu124", "12.4")
    f.accelerators.gpus[0].compute_capability = None
    silent(f, "torch.arch_not_compiled")


def test_torchvision_version_mismatch():
    hit = one(with_packages(torch="2.5.1+cu124", torchvision="0.19.1+cu124"), "torch.companion_mismatch", "error")
    assert "torchvision 0.19.1+cu124" in hit.title and "torch 2.5.1+cu124" in hit.title
    assert "torchvision 0.20.x built for +cu124" in hit.evidence
    assert hit.fix == ("lmdev setup --repair, or: pip install --force-reinstall torch==2.5.1 'torchvision==0.20.*' "
                       "--index-url https://download.pytorch.org/whl/cu124")


def test_companion_build_label_mismatch():
    hit = one(with_packages(torch="2.5.1+cu121", torchvision="0.20.1+cpu"), "torch.companion_mismatch", "error")
    assert "+cu121" in hit.evidence
    assert hit.fix.endswith("--index-url https://download.pytorch.org/whl/cu121")


def test_companion_mismatch_on_a_cpu_torch_keeps_the_cpu_index():
    hit = one(with_packages(torch="2.5.1+cpu", torchvision="0.20.1+cu121"), "torch.companion_mismatch", "error")
    assert hit.fix.endswith("--index-url https://download.pytorch.org/whl/cpu")


def test_torchaudio_mismatch_without_labels():
    hit = one(with_packages(torch="2.5.1", torchaudio="2.4.0"), "torch.companion_mismatch", "error")
    assert "torchaudio 2.4.0" in hit.title
    assert hit.fix == "lmdev setup --repair, or: pip install --force-reinstall torch==2.5.1 'torchaudio==2.5.*'"


def test_torchvision_and_torchaudio_both_wrong_give_two_findings():
    f = with_packages(torch="2.8.0+cu128", torchvision="0.22.0+cu128", torchaudio="2.7.0+cu128")
    assert {x.title.split()[0] for x in findings(f, "torch.companion_mismatch")} == {"torchvision", "torchaudio"}


@pytest.mark.parametrize("packages", [
    {"torch": "2.5.1+cu124", "torchvision": "0.20.1+cu124", "torchaudio": "2.5.1+cu124"},
    {"torch": "2.8.0", "torchvision": "0.23.0", "torchaudio": "2.8.0"},
    {"torch": "2.0.1", "torchvision": "0.15.2"},
    {"torch": "2.5.1", "torchvision": "0.20.1+cu124"},  # PyPI torch, no label to compare
    {"torch": "1.13.1+cu117", "torchvision": "0.14.1+cu117", "torchaudio": "0.13.1+cu117"},
    {"torch": "2.5.1+cu124"},
    {"torchvision": "0.20.1"},
])
def test_companions_matching(packages):
    f = healthy()
    f.software.packages = packages
    silent(f, "torch.companion_mismatch")


def with_nvcc(version: str | None, torch_cuda: str = "12.4") -> Facts:
    f = with_torch(f"2.5.1+cu{torch_cuda.replace('.', '')}", torch_cuda)
    f.software.cuda_toolkit = ToolkitFacts("/usr/local/cuda/bin/nvcc", version, "/usr/local/cuda")
    return f


def test_nvcc_major_mismatch():
    hit = one(with_nvcc("11.8"), "cuda.nvcc_mismatch", "warning")
    assert "nvcc is CUDA 11.8" in hit.title and "CUDA 12.4" in hit.title
    assert "/usr/local/cuda/bin/nvcc" in hit.evidence
    assert "export CUDA_HOME=/usr/local/cuda-12.4" in hit.fix


def test_nvcc_minor_mismatch_is_info():
    hit = one(with_nvcc("12.6"), "cuda.nvcc_mismatch", "info")
    assert "12.6" in hit.title and "12.4" in hit.title


def test_nvcc_silent_cases():
    silent(with_nvcc("12.4"), "cuda.nvcc_mismatch")
    silent(with_nvcc(None), "cuda.nvcc_mismatch")
    f = with_nvcc("11.8")
    f.software.torch = TorchBuild("2.5.1+cpu", cpu_only=True)
    silent(f, "cuda.nvcc_mismatch")


def with_frameworks(tf: str | None = None, jax: str | None = None, torch_cuda: str | None = "12.4") -> Facts:
    f = healthy()
    f.software.torch = TorchBuild("2.5.1", cuda=torch_cuda) if torch_cuda else None
    f.software.tensorflow_cuda = tf
    f.software.jax_cuda_plugin = jax
    return f


def test_framework_cuda_majors_differ():
    hit = one(with_frameworks(tf="11.8"), "cuda.framework_major_mismatch", "warning")
    assert "torch CUDA 12" in hit.evidence and "tensorflow CUDA 11" in hit.evidence
    assert "own virtual environment" in hit.fix
    hit = one(with_frameworks(tf="12.3", jax="13"), "cuda.framework_major_mismatch", "warning")
    assert "jax CUDA 13" in hit.evidence


@pytest.mark.parametrize("kw", [dict(tf="12.3", jax="12"), dict(jax="12"), dict(), dict(tf="11.8", torch_cuda=None),
                                dict(tf="unknown", jax="cuda12")])
def test_framework_cuda_majors_silent(kw):
    silent(with_frameworks(**kw), "cuda.framework_major_mismatch")


def two_gpus_no_nccl() -> Facts:
    f = healthy(2)
    del f.software.packages["nvidia-nccl-cu12"]
    return f


def test_nccl_missing():
    hit = one(two_gpus_no_nccl(), "nccl.missing", "warning")
    assert "2 GPUs" in hit.evidence and "torch 2.5.1+cu124" in hit.evidence
    assert hit.fix.startswith("pip install nvidia-nccl-cu12 ")


def test_nccl_silent_cases():
    silent(healthy(2), "nccl.missing")  # the wheel is there
    one_gpu = two_gpus_no_nccl()
    one_gpu.accelerators.gpus = one_gpu.accelerators.gpus[:1]
    silent(one_gpu, "nccl.missing")
    system = two_gpus_no_nccl()
    system.software.system_nccl = "/usr/lib/x86_64-linux-gnu/libnccl.so.2"
    silent(system, "nccl.missing")
    cpu_torch = two_gpus_no_nccl()
    cpu_torch.software.torch = TorchBuild("2.5.1+cpu", cpu_only=True)
    silent(cpu_torch, "nccl.missing")


def test_pynvml_clash():
    f = healthy()
    f.software.pynvml_providers = ["pynvml", "nvidia-ml-py"]
    hit = one(f, "nvml.pynvml_clash", "warning")
    assert "pynvml and nvidia-ml-py" in hit.title
    assert hit.fix == "lmdev setup --repair, or: pip uninstall -y pynvml && pip install --force-reinstall nvidia-ml-py"
    f.software.pynvml_providers = ["nvidia-ml-py3"]
    silent(f, "nvml.pynvml_clash")


def test_keras_backend_missing():
    f = with_packages(keras="3.6.0", torch="2.5.1")
    f.software.keras_backend = "jax"
    hit = one(f, "keras.backend_missing", "warning")
    assert "jax backend" in hit.title and "'jax'" in hit.evidence
    assert hit.fix.startswith("lmdev setup --repair, or: pip install jax,")


@pytest.mark.parametrize(("backend", "installed"), [("torch", "torch"), ("tensorflow", "tensorflow-cpu"),
                                                    ("jax", "jax"), (None, "numpy"), ("numpy", "numpy")])
def test_keras_backend_silent(backend, installed):
    f = with_packages(keras="3.6.0", **{installed.replace("-", "_"): "1.0"})
    f.software.keras_backend = backend
    silent(f, "keras.backend_missing")


# --------------------------------------------------------------------------- host


def test_no_venv():
    f = healthy()
    f.host.python = PythonFacts(version="3.10.12", executable="/usr/bin/python3", prefix="/usr")
    hit = one(f, "python.no_venv", "warning")
    assert "/usr/bin/python3" in hit.evidence and "prefix /usr" in hit.evidence
    assert "python3 -m venv .venv" in hit.fix
    f.host.python.conda_env = "/opt/conda/envs/lm"
    silent(f, "python.no_venv")


def test_shm_small_in_a_container():
    f = healthy()
    f.host.shm_bytes = 64 * MiB
    f.host.container = "docker"
    hit = one(f, "host.shm_small", "warning")
    assert "64 MiB in a docker container" in hit.title
    assert "--ipc=host" in hit.fix and "--shm-size" in hit.fix


@pytest.mark.parametrize(("shm", "os"), [(GiB, "linux"), (None, "linux"), (64 * MiB, "darwin")])
def test_shm_silent(shm, os):
    f = healthy()
    f.host.shm_bytes, f.host.os = shm, os
    silent(f, "host.shm_small")


@pytest.mark.parametrize("free_gib", [20, 21, 500])
def test_low_disk_silent_at_20_gib_and_above(free_gib):
    silent(with_disk_free(free_gib * GiB), "disk.low_space")


def test_low_disk_19_gib_warns():
    hit = one(with_disk_free(19 * GiB), "disk.low_space", "warning")
    assert "19.0 GiB free for project" in hit.title
    assert "/fs0/project" in hit.evidence
    assert "HF_HOME=" in hit.fix and "TORCH_HOME=" in hit.fix


def test_low_disk_boundary_2_gib_warns_1_gib_is_an_error():
    one(with_disk_free(2 * GiB), "disk.low_space", "warning")
    hit = one(with_disk_free(1 * GiB), "disk.low_space", "error")
    assert "1.0 GiB" in hit.title


def test_low_disk_groups_caches_on_one_filesystem():
    f = healthy()
    for d in f.host.disks:
        d.free_bytes = 5 * GiB
    hit = one(f, "disk.low_space", "warning")
    assert "project, huggingface_cache, torch_cache, pip_cache" in hit.title


def test_low_disk_one_finding_per_low_filesystem():
    out = findings(with_disk_free(5 * GiB, 100 * GiB, GiB // 2, None), "disk.low_space")
    assert sorted((x.severity, x.title.split(" for ")[1]) for x in out) == [
        ("error", "torch_cache"), ("warning", "project")]


def with_ram(total_gib: float, *frameworks: str, cgroup_gib: float | None = None) -> Facts:
    f = healthy()
    f.host.memory = MemoryFacts(total_bytes=int(total_gib * GiB),
                                cgroup_limit_bytes=int(cgroup_gib * GiB) if cgroup_gib else None)
    f.software.packages = {p: "1.0" for p in frameworks}
    return f


def test_low_ram():
    hit = one(with_ram(6, "torch"), "host.low_ram", "warning")
    assert "6.0 GiB RAM" in hit.title and "torch" in hit.title
    assert "at least 8 GiB" in hit.evidence
    hit = one(with_ram(10, "torch", "tensorflow"), "host.low_ram", "warning")
    assert "at least 12 GiB" in hit.evidence


def test_low_ram_container_limit():
    hit = one(with_ram(64, "jax", cgroup_gib=4), "host.low_ram", "warning")
    assert "4.0 GiB RAM (container limit)" in hit.title


@pytest.mark.parametrize("facts", [
    lambda: with_ram(8, "torch"),
    lambda: with_ram(12, "torch", "jax"),
    lambda: with_ram(2, "numpy"),
    lambda: with_ram(64, "torch", cgroup_gib=16),
], ids=["8-torch", "12-two-frameworks", "no-framework", "big-cgroup"])
def test_low_ram_silent(facts):
    silent(facts(), "host.low_ram")


def test_low_ram_unknown_total():
    f = with_ram(1, "torch")
    f.host.memory.total_bytes = None
    silent(f, "host.low_ram")


def test_cpu_quota():
    f = healthy()
    f.host.cpu.quota_cores = 2.5
    hit = one(f, "cpu.quota", "info")
    assert "2.5 cores" in hit.title and "32 are visible" in hit.title
    assert "OMP_NUM_THREADS=2" in hit.fix
    f.host.cpu.quota_cores = 0.5
    assert "OMP_NUM_THREADS=1" in one(f, "cpu.quota", "info").fix


@pytest.mark.parametrize("quota", [None, 32.0, 64.0])
def test_cpu_quota_silent(quota):
    f = healthy()
    f.host.cpu.quota_cores = quota
    silent(f, "cpu.quota")


def test_wsl_memory():
    f = healthy()
    f.host.wsl = True
    f.host.memory.total_bytes = 31 * GiB
    hit = one(f, "host.wsl_memory", "info")
    assert "31.0 GiB" in hit.title
    assert ".wslconfig" in hit.fix and "wsl --shutdown" in hit.fix
    silent(healthy(), "host.wsl_memory")


def test_probe_failed():
    f = healthy()
    f.probe_errors = [ProbeError("nvml", "NVML unavailable: Driver/library version mismatch"),
                      ProbeError("disks", "permission denied")]
    out = findings(f, "probe.failed")
    assert [x.title for x in out] == ["Could not read nvml", "Could not read disks"]
    assert all(x.severity == "info" for x in out)
    assert "Driver/library version mismatch" in out[0].evidence
    assert "nvidia-smi" in out[0].fix


# --------------------------------------------------------------------------- --deep


def test_deep_import_failed():
    f = with_deep(DeepCheck("tensorflow", ok=False, error="ImportError: libcudnn.so.9: cannot open"))
    hit = one(f, "deep.import_failed", "error")
    assert hit.title == "tensorflow fails to import"
    assert "libcudnn.so.9" in hit.evidence
    assert "python -c 'import tensorflow'" in hit.fix
    assert one(with_deep(DeepCheck("jax", ok=False)), "deep.import_failed", "error").evidence == "no output"


def test_deep_gpu_not_seen():
    f = with_deep(DeepCheck("torch", ok=True, version="2.5.1+cu124", devices=["cpu"], cuda_available=False),
                  n_gpus=2)
    hit = one(f, "deep.gpu_not_seen", "error")
    assert "torch sees no GPU" in hit.title and "2 NVIDIA GPU(s)" in hit.title
    assert "torch 2.5.1+cu124: devices cpu" in hit.evidence
    assert "reinstall torch for this driver's CUDA" in hit.fix


def test_deep_op_failed():
    f = with_deep(DeepCheck("torch", ok=True, cuda_available=True,
                            op_results={"cpu": "ok", "cuda:0": "RuntimeError: no kernel image is available"}))
    hit = one(f, "deep.op_failed", "error")
    assert hit.title == "torch cannot compute on cuda:0"
    assert "no kernel image" in hit.evidence


@pytest.mark.parametrize("check", [
    DeepCheck("torch", ok=True, cuda_available=True, op_results={"cpu": "ok", "cuda:0": "ok"}),
    DeepCheck("torch", ok=True, cuda_available=None),
    DeepCheck("jax", ok=True, devices=["cuda:0"], cuda_available=True),
])
def test_deep_silent(check):
    f = with_deep(check)
    for rule_id in ("deep.import_failed", "deep.gpu_not_seen", "deep.op_failed"):
        silent(f, rule_id)


def test_deep_gpu_not_seen_silent_without_gpus():
    f = cpu_box()
    f.deep = [DeepCheck("torch", ok=True, cuda_available=False)]
    silent(f, "deep.gpu_not_seen")


# --------------------------------------------------------------------------- None-safety


def sparse_facts() -> list[Facts]:
    """Facts where the probes could read almost nothing: every optional field None."""
    bare_gpu = GpuFacts(index=0, vendor="nvidia", name="NVIDIA GPU", processes=[GpuProcess(1)])
    f1 = Facts()
    f2 = Facts(
        host=HostFacts(os="linux", wsl=True, container="docker",
                       cpu=CpuFacts(quota_cores=1.0),
                       memory=MemoryFacts(cgroup_limit_bytes=GiB),
                       disks=[DiskFacts("project", "/p"), DiskFacts("pip_cache", "/c", None, GiB)]),
        accelerators=AcceleratorFacts(source="nvml", gpus=[bare_gpu, GpuFacts(1, "nvidia", "x")]),
        software=SoftwareFacts(
            packages={"torch": "", "torchvision": "", "torchaudio": "garbage", "tensorflow": "x"},
            torch=TorchBuild("", cuda="12.4"),
            tensorflow_cuda="",
            jax_cuda_plugin="",
            keras_backend="",
            cuda_toolkit=ToolkitFacts(cuda_version="12.1"),
            pynvml_providers=["pynvml", "nvidia-ml-py3"],
            env={"CUDA_VISIBLE_DEVICES": ",,"},
        ),
        deep=[DeepCheck("torch", ok=True, cuda_available=False, arch_list=["sm_90"],
                        op_results={"cuda:0": ""}),
              DeepCheck("tensorflow", ok=False)],
        probe_errors=[ProbeError("gpu", "")],
    )
    # strings a probe might pass through unparsed
    f3 = with_torch("2.5.1+cu124", "12.4", driver_cuda="N/A", cc="9")
    f3.software.packages = {"torch": "2.x", "torchvision": "latest", "torchaudio": "2"}
    f3.software.jax_cuda_plugin = "cuda12"
    f3.software.tensorflow_cuda = "unknown"
    f3.accelerators.gpus.append(gpu(1, pcie_gen_current=None, pcie_width_current=None,
                                    utilization_percent=None, memory_total_bytes=None,
                                    throttle_reasons=["hw_slowdown"], temperature_c=None))
    f4 = pci_only()
    f4.software.torch = TorchBuild("2.5.1+cpu", cpu_only=True)
    f4.deep = [DeepCheck("torch", ok=True, cuda_available=False)]
    return [f1, f2, f3, f4]


@pytest.mark.parametrize("index", range(len(sparse_facts())))
def test_rules_on_missing_values_neither_raise_nor_print_none(index: int):
    """Every rule runs on facts full of unknowns (a rule that raises fails here); the ones that
    fire say '?' or leave the value out, never a Python ``None`` or ``nan``."""
    out = [f for r in RULES for f in r.run(sparse_facts()[index])]
    assert out, "the sparse facts are meant to make some rule fire"
    for f in out:
        text = f" {f.title} {f.evidence} {f.fix} "
        assert " None" not in text and "None " not in text and "nan" not in text.lower().split(), f


def test_diagnose_on_sparse_facts():
    for f in sparse_facts():
        out = findings(f)
        assert all(x.severity in SEVERITY_ORDER for x in out)


# --------------------------------------------------------------------------- every rule covered


def _set(f: Facts, **kw) -> Facts:
    for path, value in kw.items():
        obj = f
        *parents, name = path.split("__")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, name, value)
    return f


# id -> (facts where the rule fires, facts where it must stay silent)
RULE_CASES: dict[str, tuple[Callable[[], Facts], Callable[[], Facts]]] = {
    "accelerator.none": (cpu_box, healthy),
    "gpu.driver_missing": (pci_only, healthy),
    "gpu.pcie_degraded": (lambda: with_gpus(gpu(0, pcie_width_current=8)),
                          lambda: with_gpus(gpu(0, pcie_gen_current=1, utilization_percent=0))),
    "gpu.memory_in_use": (lambda: with_gpus(gpu(0, memory_used_bytes=3 * GiB)),
                          lambda: with_gpus(gpu(0, memory_used_bytes=2 * GiB))),
    "gpu.persistence_off": (lambda: with_gpus(gpu(0, persistence_mode=False)),
                            lambda: _set(with_gpus(gpu(0, persistence_mode=False)), host__wsl=True)),
    "gpu.ecc_errors": (lambda: with_gpus(gpu(0, ecc_uncorrected_errors=1)), healthy),
    "gpu.throttled": (lambda: with_gpus(gpu(0, throttle_reasons=["hw_slowdown"])),
                      lambda: with_gpus(gpu(0, throttle_reasons=["sw_power_cap"]))),
    "gpu.mig_enabled": (lambda: with_gpus(gpu(0, mig_enabled=True)), healthy),
    "cuda.visible_devices": (lambda: with_env(2, CUDA_VISIBLE_DEVICES="7"),
                             lambda: with_env(2, CUDA_VISIBLE_DEVICES="0,1")),
    "torch.cpu_build_on_gpu": (lambda: with_torch("2.8.0+cpu", None, cpu_only=True),
                               lambda: _set(cpu_box(), software__torch=TorchBuild("2.8.0+cpu", cpu_only=True))),
    "torch.cuda_newer_than_driver": (lambda: with_torch("2.9.0+cu130", "13.0", driver_cuda="12.8"),
                                     lambda: with_torch("2.8.0+cu128", "12.8", driver_cuda="12.8")),
    "torch.arch_not_compiled": (lambda: with_torch("2.5.1+cu124", "12.4", driver_cuda="12.8", cc="12.0"),
                                lambda: with_torch("2.7.0+cu128", "12.8", driver_cuda="12.8", cc="12.0")),
    "torch.companion_mismatch": (lambda: with_packages(torch="2.5.1+cu121", torchvision="0.20.1+cpu"),
                                 lambda: with_packages(torch="2.5.1+cu121", torchvision="0.20.1+cu121")),
    "cuda.nvcc_mismatch": (lambda: with_nvcc("11.8"), lambda: with_nvcc("12.4")),
    "cuda.framework_major_mismatch": (lambda: with_frameworks(tf="11.8"), lambda: with_frameworks(tf="12.3")),
    "nccl.missing": (two_gpus_no_nccl, lambda: healthy(2)),
    "nvml.pynvml_clash": (lambda: _set(healthy(), software__pynvml_providers=["pynvml", "nvidia-ml-py"]),
                          healthy),
    "keras.backend_missing": (lambda: _set(healthy(), software__keras_backend="tensorflow"),
                              lambda: _set(healthy(), software__keras_backend="torch")),
    "python.no_venv": (lambda: _set(healthy(), host__python__virtualenv=None),
                       lambda: _set(healthy(), host__python__virtualenv=None, host__python__conda_env="/c")),
    "host.shm_small": (lambda: _set(healthy(), host__shm_bytes=64 * MiB),
                       lambda: _set(healthy(), host__shm_bytes=GiB)),
    "disk.low_space": (lambda: with_disk_free(19 * GiB), lambda: with_disk_free(20 * GiB)),
    "host.low_ram": (lambda: with_ram(6, "torch"), lambda: with_ram(8, "torch")),
    "cpu.quota": (lambda: _set(healthy(), host__cpu__quota_cores=4.0),
                  lambda: _set(healthy(), host__cpu__quota_cores=32.0)),
    "host.wsl_memory": (lambda: _set(healthy(), host__wsl=True), healthy),
    # 32 logical CPUs in healthy(); a quota of 4 makes 4 usable
    "cpu.overloaded": (lambda: _set(healthy(), host__cpu__load_average=[33.0, 20.0, 10.0]),
                       lambda: _set(healthy(), host__cpu__load_average=[31.5, 40.0, 40.0])),
    "cpu.threads_oversubscribed": (lambda: _set(healthy(), software__env={"OMP_NUM_THREADS": "8"},
                                                host__cpu__quota_cores=4.0),
                                   lambda: _set(healthy(), software__env={"OMP_NUM_THREADS": "4"},
                                                host__cpu__quota_cores=4.0)),
    "cpu.ranks_over_cores": (lambda: _set(healthy(), host__cpu__ranks=5, host__cpu__quota_cores=4.0),
                             lambda: _set(healthy(), software__env={"LOCAL_WORLD_SIZE": "4"},
                                          host__cpu__quota_cores=4.0)),
    "probe.failed": (lambda: _set(healthy(), probe_errors=[ProbeError("nvml", "x")]), healthy),
    "deep.import_failed": (lambda: with_deep(DeepCheck("jax", ok=False, error="boom")),
                           lambda: with_deep(DeepCheck("jax", ok=True))),
    "deep.gpu_not_seen": (lambda: with_deep(DeepCheck("torch", ok=True, cuda_available=False)),
                          lambda: with_deep(DeepCheck("torch", ok=True, cuda_available=True))),
    "deep.op_failed": (lambda: with_deep(DeepCheck("torch", ok=True, op_results={"cuda:0": "error"})),
                       lambda: with_deep(DeepCheck("torch", ok=True, op_results={"cuda:0": "ok"}))),
}


def test_rule_cases_name_only_real_rules():
    assert set(RULE_CASES) <= {r.id for r in RULES}


@pytest.mark.parametrize("r", RULES, ids=lambda r: r.id)
def test_every_rule_has_a_case(r: Rule):
    assert r.id in RULE_CASES, f"rule {r.id} has no fabricated facts in RULE_CASES"
    fires, stays_silent = RULE_CASES[r.id]
    hits = findings(fires(), r.id)
    assert hits, f"{r.id} did not fire on its case"
    assert all(h.title and h.evidence and h.fix and "\n" not in h.title for h in hits)
    silent(stays_silent(), r.id)


# --------------------------------------------------------------------------- oversubscription


def test_threads_times_ranks_over_the_quota_fires_with_a_per_rank_fix():
    f = _set(healthy(), software__env={"MKL_NUM_THREADS": "2", "LOCAL_WORLD_SIZE": "4"}, host__cpu__quota_cores=6.0)
    (hit,) = findings(f, "cpu.threads_oversubscribed")
    assert "MKL_NUM_THREADS=2 x 4 ranks = 8" in hit.title and "6 usable" in hit.title
    assert "OMP_NUM_THREADS=1" in hit.fix  # 6 cores // 4 ranks
    silent(_set(healthy(), software__env={"MKL_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "4"},
                host__cpu__quota_cores=6.0), "cpu.threads_oversubscribed")


def test_overload_fix_depends_on_how_far_over():
    mild = findings(_set(healthy(), host__cpu__load_average=[40.0, 30.0, 20.0]), "cpu.overloaded")[0]
    assert "OMP_NUM_THREADS=32" in mild.fix and "40.0 on 32" in mild.title
    heavy = findings(_set(healthy(), host__cpu__load_average=[70.0, 30.0, 20.0]), "cpu.overloaded")[0]
    assert "OMP_NUM_THREADS=1 " in heavy.fix


def test_ranks_from_the_launcher_over_the_cores():
    f = _set(healthy(), software__env={"LOCAL_WORLD_SIZE": "8"}, host__cpu__quota_cores=2.5)
    (hit,) = findings(f, "cpu.ranks_over_cores")
    assert "8 training ranks on 2 usable" in hit.title and "LOCAL_WORLD_SIZE" in hit.evidence
    assert hit.fix.startswith("lmdev train CONFIG --nproc 2")
    silent(_set(healthy(), software__env={"LOCAL_WORLD_SIZE": "garbage"}), "cpu.ranks_over_cores")


def test_load_average_is_read_from_proc():
    from lmdev.probe.host import load_average

    assert load_average("0.52 1.58 2.59 1/467 12345\n") == [0.52, 1.58, 2.59]
    assert load_average("") is None and load_average(None) is None and load_average("a b c") is None


def test_the_html_report_shows_the_bench_beside_the_peaks():
    from lmdev.diagnose.report import Report, bench_beside_peaks, to_html

    bench = {"created": "2026-12-03T09:00:00+00:00", "cpu": {"peak_flops": {"fp32": 4e11},
                                                             "matmul": {"fp32": [{"size": 512, "flops": 1e11}]}}}
    page = to_html(Report(healthy(), [], bench=bench_beside_peaks(bench)))
    assert "Bench beside the peaks" in page and "100.00 GFLOP/s" in page and "400.00 GFLOP/s" in page
    assert "25%" in page
    assert "run <code>lmdev bench</code>" in to_html(Report(healthy(), []))
