"""Accelerator collectors without the hardware: a fake NVML (FakeNvml), fake nvidia-smi outputs,
a fake /proc/driver/nvidia and a fake /sys for the PCI bus, AMD cards and TPUs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from lmdev.diagnose import diagnose
from lmdev.probe.collect import collect
from lmdev.probe.gpu import THROTTLE_BITS, collect_accelerators, facts_from_nvml, read_nvml
from lmdev.probe.source import FakeNvml, FixtureSource
from lmdev.probe.types import GiB

MACHINES = Path(__file__).resolve().parents[1] / "fixtures" / "machines"

SMI_ARGV = ("nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,memory.total,memory.used,compute_cap,"
            "driver_version,pcie.link.gen.current,pcie.link.gen.max,pcie.link.width.current,"
            "pcie.link.width.max,persistence_mode,temperature.gpu,power.draw,utilization.gpu "
            "--format=csv,noheader,nounits")


def snapshot_of(name: str) -> dict:
    return json.loads((MACHINES / name).read_text(encoding="utf-8"))["nvml_snapshot"]


def gpu(**kw) -> dict:
    d = {"name": "NVIDIA RTX A6000", "uuid": "GPU-5a1b8f0e-3c2d-4e6f-8a9b-0c1d2e3f4a5b",
         "pci_bus_id": "00000000:41:00.0", "memory": {"total": 51527024640, "used": 3145728},
         "compute_capability": [8, 6], "persistence_mode": 1}
    d.update(kw)
    return d


def accel(src: FixtureSource):
    errors: list = []
    return collect_accelerators(src, errors), errors


def pci_files(*devices: tuple[str, str, str, str]) -> dict[str, str]:
    files = {}
    for addr, vendor, device, cls in devices:
        base = f"/sys/bus/pci/devices/{addr}"
        files.update({f"{base}/vendor": vendor + "\n", f"{base}/device": device + "\n",
                      f"{base}/class": cls + "\n"})
    return files


# --------------------------------------------------------------------------- NVML


@pytest.mark.parametrize("name", ["h100-8x-nvlink.json", "rtx4090-cpu-torch.json",
                                  "wsl2-rtx3080.json", "a100-docker-cu128.json"])
def test_read_nvml_round_trips_a_snapshot(name):
    """What read_nvml gets from a FakeNvml is the snapshot the FakeNvml answers from: the fixture
    format and the NVML reader describe the same thing."""
    snap = snapshot_of(name)
    assert read_nvml(FakeNvml(copy.deepcopy(snap))) == snap


def test_read_nvml_keeps_an_internal_topology_level():
    # two GPUs on one board (a dual-GPU card) answer NVML_TOPOLOGY_INTERNAL = 0: a real level
    snap = {"driver_version": "470.256.02", "cuda_driver_version": 11040,
            "devices": [gpu(name="Tesla K80", compute_capability=[3, 7], pci_bus_id="00000000:05:00.0"),
                        gpu(name="Tesla K80", compute_capability=[3, 7], pci_bus_id="00000000:06:00.0")],
            "pcie_ancestor": [[0, 0], [0, 0]]}
    assert read_nvml(FakeNvml(copy.deepcopy(snap)))["pcie_ancestor"] == [[0, 0], [0, 0]]


def test_read_nvml_marks_an_unreadable_topology_as_system():
    class NoTopology(FakeNvml):
        def nvmlDeviceGetTopologyCommonAncestor(self, h1, h2):
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)

    snap = {"driver_version": "550.90.07", "cuda_driver_version": 12040, "devices": [gpu(), gpu()]}
    assert read_nvml(NoTopology(snap))["pcie_ancestor"] == [[0, 50], [50, 0]]


def test_nvml_facts_units_and_names():
    snap = {"driver_version": "550.90.07", "cuda_driver_version": 12040, "devices": [gpu(
        power_mw=287512, power_limit_mw=300000, temperature=71, utilization=99, mig_mode=0,
        ecc_uncorrected_volatile=2, throttle_reasons=0x4 | 0x40, pcie_gen_current=4, pcie_gen_max=4,
        pcie_width_current=8, pcie_width_max=16, processes=[{"pid": 4242, "used": 41875931136},
                                                            {"pid": 4243, "used": None}])]}
    src = FixtureSource(files={"/proc/4242/comm": "torchrun\n"})
    facts = facts_from_nvml(snap, src)
    assert (facts.source, facts.driver_version, facts.cuda_driver_version) == ("nvml", "550.90.07", "12.4")
    [g] = facts.gpus
    assert (g.memory_total_bytes, g.memory_used_bytes) == (51527024640, 3145728)  # bytes, as NVML says
    assert (g.power_w, g.power_limit_w) == (287.512, 300.0)  # NVML answers milliwatts
    assert (g.compute_capability, g.temperature_c, g.utilization_percent) == ("8.6", 71, 99)
    assert (g.persistence_mode, g.mig_enabled, g.ecc_uncorrected_errors) == (True, False, 2)
    assert (g.pcie_width_current, g.pcie_width_max) == (8, 16)
    assert g.throttle_reasons == ["sw_power_cap", "hw_thermal_slowdown"]
    assert [(p.pid, p.name, p.used_memory_bytes) for p in g.processes] == [
        (4242, "torchrun", 41875931136), (4243, None, None)]
    assert g.nvlinks_active is None and facts.topology is None  # one GPU, no NVLink


def test_values_nvml_does_not_support_stay_unknown():
    snap = {"driver_version": "535.183.01", "cuda_driver_version": 12020,
            "devices": [{"name": "NVIDIA GeForce GTX 1080 Ti"}]}
    [g] = facts_from_nvml(snap, FixtureSource()).gpus
    assert (g.memory_total_bytes, g.compute_capability, g.persistence_mode, g.mig_enabled,
            g.power_w, g.nvlinks_active) == (None, None, None, None, None, None)
    assert g.throttle_reasons == [] and g.processes == []


def test_cuda_version_from_the_driver_when_nvml_does_not_say():
    facts = facts_from_nvml({"driver_version": "535.183.01", "devices": [gpu()]}, FixtureSource())
    assert facts.cuda_driver_version == "12.2"
    facts = facts_from_nvml({"driver_version": "570.86.15", "cuda_driver_version": 12080,
                             "devices": [gpu()]}, FixtureSource())
    assert facts.cuda_driver_version == "12.8"


def test_throttle_reason_bits():
    def reasons(mask: int) -> list[str]:
        facts = facts_from_nvml({"devices": [gpu(throttle_reasons=mask)]}, FixtureSource())
        return facts.gpus[0].throttle_reasons

    assert reasons(0) == []
    assert reasons(0x1) == ["gpu_idle"]
    assert reasons(0x8 | 0x80) == ["hw_slowdown", "hw_power_brake_slowdown"]
    assert reasons(0x20) == ["sw_thermal_slowdown"]
    assert reasons(0x1FF) == list(THROTTLE_BITS.values())
    assert reasons(0x200) == []  # a bit lmdev does not name is not made up


def test_process_memory_nvml_cannot_see_is_unknown():
    # NVML_VALUE_NOT_AVAILABLE (2**64 - 1): a process of another container
    snap = {"driver_version": "550.90.07", "cuda_driver_version": 12040,
            "devices": [gpu(processes=[{"pid": 7, "used": 2**64 - 1}])]}
    assert read_nvml(FakeNvml(snap))["devices"][0]["processes"] == [{"pid": 7, "used": None}]


def test_an_old_pynvml_without_the_new_calls():
    class OldPynvml(FakeNvml):
        """pynvml 11: bytes for strings, no ClocksEventReasons, no _v2 calls."""

        nvmlDeviceGetCurrentClocksEventReasons = None
        nvmlSystemGetCudaDriverVersion_v2 = None
        nvmlDeviceGetNvLinkRemotePciInfo_v2 = None

        def nvmlSystemGetDriverVersion(self):
            return self._s["driver_version"].encode()

        def nvmlSystemGetCudaDriverVersion(self):
            return self._s["cuda_driver_version"]

        def nvmlDeviceGetName(self, h):
            return self._get(h, "name").encode()

        def nvmlDeviceGetCurrentClocksThrottleReasons(self, h):
            return self._get(h, "throttle_reasons")

        def nvmlDeviceGetNvLinkRemotePciInfo(self, h, link):
            return FakeNvml.nvmlDeviceGetNvLinkRemotePciInfo_v2(self, h, link)

    snap = {"driver_version": "535.183.01", "cuda_driver_version": 12020,
            "devices": [gpu(throttle_reasons=0x4, nvlinks=[{"active": 1, "remote": "00000000:42:00.0"},
                                                           {"active": 0, "remote": None}])]}
    got = read_nvml(OldPynvml(copy.deepcopy(snap)))
    assert got == snap


def test_nvlink_direct_pairs_and_pcie_levels():
    # two A6000 bridged with NVLink (4 links to each other) and a third only on PCIe
    a, b, c = "00000000:41:00.0", "00000000:42:00.0", "00000000:C1:00.0"
    snap = {"driver_version": "550.90.07", "cuda_driver_version": 12040, "devices": [
        gpu(pci_bus_id=a, nvlinks=[{"active": 1, "remote": b}] * 4),
        gpu(pci_bus_id=b, nvlinks=[{"active": 1, "remote": a}] * 4),
        gpu(pci_bus_id=c, nvlinks=[{"active": 0, "remote": None}] * 4)],
        "pcie_ancestor": [[0, 10, 50], [10, 0, 50], [50, 50, 0]]}
    facts = facts_from_nvml(snap, FixtureSource())
    assert facts.topology == [["X", "NV4", "SYS"], ["NV4", "X", "SYS"], ["SYS", "SYS", "X"]]
    assert [g.nvlinks_active for g in facts.gpus] == [4, 4, 0]
    levels = {10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}
    for level, label in levels.items():
        two = {"devices": [gpu(pci_bus_id=a), gpu(pci_bus_id=b)], "pcie_ancestor": [[0, level], [level, 0]]}
        assert facts_from_nvml(two, FixtureSource()).topology[0][1] == label


def test_h100_without_nvlink_shows_the_pcie_tree():
    snap = snapshot_of("h100-8x-nvlink.json")
    for d in snap["devices"]:
        del d["nvlinks"]
    topo = facts_from_nvml(snap, FixtureSource()).topology
    assert topo[0][1:4] == ["NODE"] * 3  # same socket
    assert topo[0][4:] == ["SYS"] * 4  # across the sockets
    assert topo[5][4] == "NODE" and topo[5][1] == "SYS"


# --------------------------------------------------------------------------- fallbacks


SMI_CSV = ("0, NVIDIA GeForce RTX 4090, GPU-8f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b, 00000000:01:00.0, 24564, 612, "
           "8.9, 550.54.15, 1, 4, 16, 16, Disabled, 36, 18.45, 0\n"
           "1, NVIDIA GeForce RTX 4090, GPU-1a2b3c4d-5e6f-7081-92a3-b4c5d6e7f809, 00000000:02:00.0, 24564, 1, "
           "8.9, 550.54.15, 4, 4, 8, 16, Enabled, 40, [N/A], [N/A]\n")


def nvidia_box(**kw) -> FixtureSource:
    """An NVIDIA machine whose NVML is missing: the driver is there, libnvidia-ml is not found."""
    kw.setdefault("executables", {"nvidia-smi": "/usr/bin/nvidia-smi"})
    kw.setdefault("nvml_snapshot", None)
    return FixtureSource(os="linux", **kw)


def test_nvidia_smi_when_nvml_is_missing():
    src = nvidia_box(commands={SMI_ARGV: {"returncode": 0, "stdout": SMI_CSV}})
    facts, errors = accel(src)
    assert facts.source == "nvidia-smi"
    assert (facts.driver_version, facts.cuda_driver_version) == ("550.54.15", "12.4")
    g0, g1 = facts.gpus
    assert (g0.index, g0.name, g0.pci_bus_id, g0.compute_capability) == (
        0, "NVIDIA GeForce RTX 4090", "00000000:01:00.0", "8.9")
    assert (g0.memory_total_bytes, g0.memory_used_bytes) == (24564 * 1024**2, 612 * 1024**2)  # MiB
    assert (g0.power_w, g0.temperature_c, g0.utilization_percent) == (18.45, 36, 0)
    assert (g0.persistence_mode, g1.persistence_mode) == (False, True)
    assert (g1.pcie_width_current, g1.power_w, g1.utilization_percent) == (8, None, None)  # [N/A]
    assert [e.collector for e in errors] == ["nvml"]
    assert "NVML Shared Library Not Found" in errors[0].message


def test_nvidia_smi_hanging_is_an_error_not_a_crash():
    src = nvidia_box(commands={SMI_ARGV: {"returncode": None, "timed_out": True}})
    facts, errors = accel(src)
    assert facts.gpus == [] and facts.source is None
    assert [e.collector for e in errors] == ["nvml", "nvidia-smi"]
    assert "did not answer" in errors[1].message
    findings = diagnose(collect(src))  # the whole doctor: info findings, nothing raised
    assert [f.id for f in findings if f.id == "probe.failed"] == ["probe.failed"] * 2
    assert all(f.severity == "info" for f in findings if f.id == "probe.failed")


def test_nvidia_smi_failing_is_reported_with_its_message():
    msg = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure "
           "that the latest NVIDIA driver is installed and running.\n\n")
    src = nvidia_box(commands={SMI_ARGV: {"returncode": 9, "stdout": msg}})
    facts, errors = accel(src)
    assert facts.gpus == []
    assert errors[1].collector == "nvidia-smi"
    assert errors[1].message == "nvidia-smi failed: " + msg.strip()


PROC_VERSION = ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.90.07  Release Build  "
                "(dvs-builder@U16-I3-B03-4-3)  Fri May 31 09:30:47 UTC 2024\n"
                "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04) \n")
PROC_INFO = ("Model: \t\t NVIDIA L40S\nIRQ:   \t\t 164\nGPU UUID: \t GPU-0f9e8d7c-6b5a-4938-2716-a5b4c3d2e1f0\n"
             "Video BIOS: \t 95.02.66.00.02\nBus Type: \t PCIe\nDMA Size: \t 52 bits\n"
             "Bus Location: \t 0000:3b:00.0\nDevice Minor: \t 0\nGPU Excluded:\t No\n")


def test_proc_driver_nvidia_when_nvml_and_nvidia_smi_fail():
    # a driver upgraded without a reboot: the library no longer matches the loaded module
    mismatch = "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: 550.127\n"
    src = nvidia_box(
        nvml_snapshot={"init_error": "Driver/library version mismatch"},
        commands={SMI_ARGV: {"returncode": 18, "stdout": mismatch}},
        files={"/proc/driver/nvidia/version": PROC_VERSION,
               "/proc/driver/nvidia/gpus/0000:3b:00.0/information": PROC_INFO})
    facts, errors = accel(src)
    assert facts.source == "proc"
    assert (facts.driver_version, facts.cuda_driver_version) == ("550.90.07", "12.4")
    [g] = facts.gpus
    assert (g.name, g.uuid, g.pci_bus_id, g.vendor) == (
        "NVIDIA L40S", "GPU-0f9e8d7c-6b5a-4938-2716-a5b4c3d2e1f0", "0000:3b:00.0", "nvidia")
    assert [e.collector for e in errors] == ["nvml", "nvidia-smi"]
    assert "version mismatch" in errors[0].message and "version mismatch" in errors[1].message


def test_proc_version_of_the_proprietary_module():
    text = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\n"
            "GCC version:  gcc version 11.4.0 (Ubuntu 11.4.0-1ubuntu1~22.04) \n")
    facts, _ = accel(nvidia_box(executables={}, files={"/proc/driver/nvidia/version": text}))
    assert (facts.source, facts.driver_version, facts.cuda_driver_version) == ("proc", "535.183.01", "12.2")


def test_nvidia_card_without_a_driver_is_reported_from_the_pci_bus():
    src = FixtureSource(os="linux", nvml_snapshot={"init_error": "Driver Not Loaded"}, files=pci_files(
        ("0000:00:00.0", "0x8086", "0x4660", "0x060000"),
        ("0000:01:00.0", "0x10de", "0x2684", "0x030000"),
        ("0000:01:00.1", "0x10de", "0x22ba", "0x040300")))  # the card's HDMI audio: not a GPU
    facts, errors = accel(src)
    assert facts.source == "pci"
    [g] = facts.gpus
    assert (g.vendor, g.name, g.pci_bus_id) == ("nvidia", "NVIDIA GPU (PCI device 0x2684)", "0000:01:00.0")
    assert [e.collector for e in errors] == ["nvml"]  # the card is there, so NVML's absence matters
    ids = {f.id for f in diagnose(collect(src))}
    assert {"gpu.driver_missing", "probe.failed"} <= ids and "accelerator.none" not in ids


def test_no_nvidia_hint_means_no_nvml_complaint():
    src = FixtureSource(os="linux", nvml_snapshot={"init_error": "NVML Shared Library Not Found"},
                        files=pci_files(("0000:00:02.0", "0x8086", "0x9a49", "0x030000")))
    facts, errors = accel(src)
    assert facts.gpus == [] and facts.source is None and errors == []


# --------------------------------------------------------------------------- AMD, Apple, TPU


def test_amd_gpus_from_sysfs():
    base = "/sys/class/drm/card1/device"
    files = {f"{base}/vendor": "0x1002\n", f"{base}/device": "0x74a1\n",
             f"{base}/mem_info_vram_total": "206141652992\n", f"{base}/mem_info_vram_used": "297140224\n",
             f"{base}/product_name": "AMD Instinct MI300X\n",
             "/sys/class/drm/card2/device/vendor": "0x1002\n", "/sys/class/drm/card2/device/device": "0x744c\n",
             "/sys/class/drm/card0/device/vendor": "0x1a03\n"}  # the BMC's ASPEED VGA
    src = FixtureSource(os="linux", files=files,
                        dirs={"/sys/class/drm": ["card0", "card0-VGA-1", "card1", "card2", "renderD128",
                                                 "renderD129", "version"]})
    facts, errors = accel(src)
    assert (facts.source, errors) == ("sysfs", [])
    mi300, other = facts.gpus
    assert (mi300.vendor, mi300.name, mi300.index) == ("amd", "AMD Instinct MI300X", 0)
    assert (mi300.memory_total_bytes, mi300.memory_used_bytes) == (206141652992, 297140224)
    assert (other.name, other.memory_total_bytes, other.index) == ("AMD GPU (PCI device 0x744c)", None, 1)


def test_apple_silicon_gpu_from_sysctl():
    run = {"sysctl -n machdep.cpu.brand_string hw.memsize":
           {"returncode": 0, "stdout": "Apple M3 Pro\n38654705664\n"}}
    facts, _ = accel(FixtureSource(os="darwin", machine="arm64", commands=run))
    assert facts.source == "sysctl"
    [g] = facts.gpus
    assert (g.vendor, g.name, g.memory_total_bytes) == ("apple", "Apple M3 Pro GPU (MPS)", 36 * GiB)
    # sysctl not answering: the GPU is still there, its details unknown
    [g] = accel(FixtureSource(os="darwin", machine="arm64"))[0].gpus
    assert (g.name, g.memory_total_bytes) == ("Apple silicon GPU (MPS)", None)
    # an Intel Mac has no MPS GPU of this kind
    assert accel(FixtureSource(os="darwin", machine="x86_64", commands=run))[0].gpus == []


def test_tpus_from_dev_accel():
    src = FixtureSource(os="linux", dirs={"/dev": ["accel0", "accel1", "accel2", "accel3", "null", "shm"]})
    facts, _ = accel(src)
    assert facts.source == "pci"
    assert [(g.index, g.vendor, g.name) for g in facts.gpus] == [
        (i, "google", "Google TPU") for i in range(4)]


def test_tpus_from_the_pci_bus_and_google_devices_that_are_not_tpus():
    gvnic = ("0000:00:04.0", "0x1ae0", "0x0042", "0x020000")  # gVNIC, class: Ethernet
    nvme = ("0000:00:05.0", "0x1ae0", "0x001f", "0x010802")  # Google's NVMe disk
    v5e = [(f"0000:00:{n:02x}.0", "0x1ae0", "0x0063", "0x120000") for n in (6, 7)]
    facts, _ = accel(FixtureSource(os="linux", files=pci_files(gvnic, nvme, *v5e)))
    assert [g.vendor for g in facts.gpus] == ["google", "google"]
    # an ordinary GCP VM (gVNIC network, Google NVMe) has no TPU
    facts, _ = accel(FixtureSource(os="linux", files=pci_files(gvnic, nvme)))
    assert facts.gpus == [] and facts.source is None


def test_nvidia_and_others_are_numbered_in_turn():
    snap = {"driver_version": "550.90.07", "cuda_driver_version": 12040, "devices": [gpu()]}
    src = FixtureSource(os="linux", nvml_snapshot=snap, dirs={"/dev": ["accel0"]})
    facts, _ = accel(src)
    assert facts.source == "nvml"
    assert [(g.index, g.vendor) for g in facts.gpus] == [(0, "nvidia"), (1, "google")]


def test_a_gpu_fallen_off_the_bus():
    """NVML answers the count, then fails on the lost GPU; nvidia-smi fails the same way;
    /proc/driver/nvidia still lists the cards and the driver."""

    class LostGpu(FakeNvml):
        def nvmlDeviceGetHandleByIndex(self, index):
            if index == 1:
                raise self.NVMLError(15, "GPU is lost")
            return index

    snap = {"driver_version": "535.183.01", "cuda_driver_version": 12020, "devices": [gpu(), gpu()]}
    smi = "Unable to determine the device handle for GPU0000:42:00.0: Unknown Error\n"
    text = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\n")
    info = PROC_INFO.replace("NVIDIA L40S", "NVIDIA RTX A6000")

    class Box(FixtureSource):
        def nvml(self):
            return LostGpu(snap)

    src = Box(os="linux", executables={"nvidia-smi": "/usr/bin/nvidia-smi"},
              commands={SMI_ARGV: {"returncode": 15, "stdout": smi}},
              files={"/proc/driver/nvidia/version": text,
                     "/proc/driver/nvidia/gpus/0000:41:00.0/information": info,
                     "/proc/driver/nvidia/gpus/0000:42:00.0/information": info})
    facts, errors = accel(src)
    assert [e.collector for e in errors] == ["nvml", "nvidia-smi"]
    assert errors[0].message == "NVML unavailable: GPU is lost"
    assert "Unable to determine the device handle" in errors[1].message
    assert facts.source == "proc" and [g.pci_bus_id for g in facts.gpus] == ["0000:41:00.0", "0000:42:00.0"]
