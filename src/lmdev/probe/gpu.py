"""Accelerator facts: NVIDIA through NVML (falling back to nvidia-smi, then /proc/driver/nvidia),
AMD through sysfs, Apple silicon through sysctl, Google TPUs through /dev and the PCI bus.

Nothing here initialises CUDA: NVML is the driver's management library, not the CUDA runtime.
"""

from __future__ import annotations

import re
from typing import Any

from lmdev.catalog.cuda import max_cuda_for_driver
from lmdev.probe.source import Source, guarded
from lmdev.probe.types import AcceleratorFacts, GpuFacts, GpuProcess, ProbeError

NVIDIA_VENDOR, AMD_VENDOR, GOOGLE_VENDOR = "0x10de", "0x1002", "0x1ae0"
# PCI device ids of TPU chips (vendor 0x1ae0 also covers gVNIC and Google's NVMe on every GCP VM).
# Source: JAX's jax/_src/hardware_utils.py (_TPU_PCI_DEVICE_IDS).
TPU_DEVICE_IDS = {"0x0027", "0x0056", "0x005e", "0x0062", "0x0063", "0x006f"}

# NVML's clocks-event (throttle) reason bits, named as nvidia-smi names them.
THROTTLE_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# nvmlGpuTopologyLevel_t -> the label nvidia-smi topo -m prints
_TOPO_LABELS = {0: "PIX", 10: "PIX", 20: "PXB", 30: "PHB", 40: "NODE", 50: "SYS"}


def pci_devices(src: Source) -> list[dict[str, str]]:
    """The PCI bus as (address, vendor, device, class); empty where there is no /sys."""
    base = "/sys/bus/pci/devices"
    out = []
    for addr in src.listdir(base) or []:
        vendor = (src.read_text(f"{base}/{addr}/vendor") or "").strip()
        if not vendor:
            continue
        out.append({
            "address": addr,
            "vendor": vendor,
            "device": (src.read_text(f"{base}/{addr}/device") or "").strip(),
            "class": (src.read_text(f"{base}/{addr}/class") or "").strip(),
        })
    return out


def collect_accelerators(src: Source, errors: list[ProbeError]) -> AcceleratorFacts:
    # Each part is guarded on its own: an unreadable /sys must not hide what NVML says.
    pci = guarded("pci", lambda: pci_devices(src), [], errors) if src.os == "linux" else []
    nvidia_on_bus = [d for d in pci if d["vendor"] == NVIDIA_VENDOR and d["class"].startswith("0x03")]
    facts = guarded("nvidia", lambda: collect_nvidia(src, errors, hardware_seen=bool(nvidia_on_bus)),
                    AcceleratorFacts(), errors)
    if not facts.gpus and nvidia_on_bus:
        # The card is on the bus but no driver answers: report it by PCI id so rules can say so.
        facts.source = "pci"
        facts.gpus = [GpuFacts(index=i, vendor="nvidia", name=f"NVIDIA GPU (PCI device {d['device']})",
                               pci_bus_id=d["address"]) for i, d in enumerate(nvidia_on_bus)]
    others = (guarded("amd", lambda: _amd(src, pci), [], errors)
              + guarded("apple", lambda: _apple(src), [], errors)
              + guarded("tpu", lambda: _tpu(src, pci), [], errors))
    for gpu in others:
        gpu.index = len(facts.gpus)
        facts.gpus.append(gpu)
    if facts.source is None and others:
        facts.source = {"amd": "sysfs", "apple": "sysctl", "google": "pci"}[others[0].vendor]
    return facts


# --------------------------------------------------------------------------- NVIDIA


def collect_nvidia(src: Source, errors: list[ProbeError], hardware_seen: bool = False) -> AcceleratorFacts:
    nvidia_hint = hardware_seen or src.exists("/proc/driver/nvidia/version") or bool(src.which("nvidia-smi"))
    try:
        nv = src.nvml()
        snapshot = read_nvml(nv)
    except Exception as exc:  # library missing, wrong version, driver not loaded ...
        if nvidia_hint:
            errors.append(ProbeError("nvml", f"NVML unavailable: {_nvml_message(exc)}"))
    else:
        note = getattr(src, "note_nvml", None)
        if note:
            note(snapshot)
        return facts_from_nvml(snapshot, src)
    if src.which("nvidia-smi"):
        facts = _from_nvidia_smi(src, errors)
        if facts.gpus:
            return facts
    return _from_proc(src)


def _nvml_message(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def read_nvml(nv: Any) -> dict[str, Any]:
    """Every value lmdev uses from NVML, as a plain dict (the fixture format of FakeNvml)."""
    nv.nvmlInit()
    try:
        def q(fn: str, *args: Any) -> Any:
            f = getattr(nv, fn, None)
            if f is None:
                raise AttributeError(fn)
            return f(*args)

        def opt(fn: str, *args: Any) -> Any:
            try:
                return q(fn, *args)
            except Exception:  # NVMLError_NotSupported and friends: the value is simply absent
                return None

        def text(v: Any) -> Any:
            return v.decode() if isinstance(v, bytes) else v

        snap: dict[str, Any] = {
            "driver_version": text(opt("nvmlSystemGetDriverVersion")),
            "cuda_driver_version": opt("nvmlSystemGetCudaDriverVersion_v2")
            or opt("nvmlSystemGetCudaDriverVersion"),
            "devices": [],
        }
        count = q("nvmlDeviceGetCount")
        handles = [q("nvmlDeviceGetHandleByIndex", i) for i in range(count)]
        for h in handles:
            d: dict[str, Any] = {}

            def put(key: str, value: Any, into: dict[str, Any] = d) -> None:
                if value is not None:
                    into[key] = value

            put("name", text(opt("nvmlDeviceGetName", h)))
            put("uuid", text(opt("nvmlDeviceGetUUID", h)))
            pci = opt("nvmlDeviceGetPciInfo", h)
            put("pci_bus_id", text(pci.busId) if pci is not None else None)
            mem = opt("nvmlDeviceGetMemoryInfo", h)
            put("memory", {"total": int(mem.total), "used": int(mem.used)} if mem is not None else None)
            cc = opt("nvmlDeviceGetCudaComputeCapability", h)
            put("compute_capability", list(cc) if cc is not None else None)
            for key, fn in (("pcie_gen_current", "nvmlDeviceGetCurrPcieLinkGeneration"),
                            ("pcie_gen_max", "nvmlDeviceGetMaxPcieLinkGeneration"),
                            ("pcie_width_current", "nvmlDeviceGetCurrPcieLinkWidth"),
                            ("pcie_width_max", "nvmlDeviceGetMaxPcieLinkWidth"),
                            ("persistence_mode", "nvmlDeviceGetPersistenceMode"),
                            ("power_mw", "nvmlDeviceGetPowerUsage"),
                            ("power_limit_mw", "nvmlDeviceGetEnforcedPowerLimit")):
                put(key, opt(fn, h))
            mig = opt("nvmlDeviceGetMigMode", h)
            put("mig_mode", mig[0] if mig is not None else None)
            put("ecc_uncorrected_volatile", opt("nvmlDeviceGetTotalEccErrors", h,
                                                nv.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nv.NVML_VOLATILE_ECC))
            util = opt("nvmlDeviceGetUtilizationRates", h)
            put("utilization", util.gpu if util is not None else None)
            put("temperature", opt("nvmlDeviceGetTemperature", h, nv.NVML_TEMPERATURE_GPU))
            reasons = opt("nvmlDeviceGetCurrentClocksEventReasons", h)
            if reasons is None:
                reasons = opt("nvmlDeviceGetCurrentClocksThrottleReasons", h)
            put("throttle_reasons", reasons)
            procs = opt("nvmlDeviceGetComputeRunningProcesses", h)
            if procs is not None:
                d["processes"] = [{"pid": int(p.pid), "used": _proc_mem(p)} for p in procs]
            links = []
            for link in range(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18)):
                state = opt("nvmlDeviceGetNvLinkState", h, link)
                if state is None:
                    break
                remote = None
                if state:
                    info = opt("nvmlDeviceGetNvLinkRemotePciInfo_v2", h, link) or opt(
                        "nvmlDeviceGetNvLinkRemotePciInfo", h, link)
                    remote = text(info.busId) if info is not None else None
                links.append({"active": int(state), "remote": remote})
            if links:
                d["nvlinks"] = links
            snap["devices"].append(d)
        if count > 1:
            snap["pcie_ancestor"] = [
                [0 if i == j else _or_sys(opt("nvmlDeviceGetTopologyCommonAncestor", a, b))
                 for j, b in enumerate(handles)]
                for i, a in enumerate(handles)
            ]
        return snap
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:
            pass


def _or_sys(level: Any) -> int:
    # 0 is NVML_TOPOLOGY_INTERNAL (two GPUs on one board), a real answer; None: not readable.
    return 50 if level is None else int(level)


def _proc_mem(p: Any) -> int | None:
    used = getattr(p, "usedGpuMemory", None)
    # NVML reports NVML_VALUE_NOT_AVAILABLE (2**64-1) when it may not see another container's usage
    return None if used is None or used >= 2**63 else int(used)


def _cuda_version(code: int | None) -> str | None:
    return f"{code // 1000}.{(code % 1000) // 10}" if code else None


def facts_from_nvml(snap: dict[str, Any], src: Source) -> AcceleratorFacts:
    facts = AcceleratorFacts(
        source="nvml",
        driver_version=snap.get("driver_version"),
        cuda_driver_version=_cuda_version(snap.get("cuda_driver_version")),
    )
    for i, d in enumerate(snap["devices"]):
        mem = d.get("memory") or {}
        cc = d.get("compute_capability")
        power, limit = d.get("power_mw"), d.get("power_limit_mw")
        links = d.get("nvlinks")
        facts.gpus.append(GpuFacts(
            index=i,
            vendor="nvidia",
            name=d.get("name") or "NVIDIA GPU",
            uuid=d.get("uuid"),
            pci_bus_id=d.get("pci_bus_id"),
            memory_total_bytes=mem.get("total"),
            memory_used_bytes=mem.get("used"),
            compute_capability=f"{cc[0]}.{cc[1]}" if cc else None,
            pcie_gen_current=d.get("pcie_gen_current"),
            pcie_gen_max=d.get("pcie_gen_max"),
            pcie_width_current=d.get("pcie_width_current"),
            pcie_width_max=d.get("pcie_width_max"),
            persistence_mode=bool(d["persistence_mode"]) if "persistence_mode" in d else None,
            mig_enabled=bool(d["mig_mode"]) if "mig_mode" in d else None,
            ecc_uncorrected_errors=d.get("ecc_uncorrected_volatile"),
            utilization_percent=d.get("utilization"),
            temperature_c=d.get("temperature"),
            power_w=power / 1000 if power is not None else None,
            power_limit_w=limit / 1000 if limit is not None else None,
            throttle_reasons=[name for bit, name in THROTTLE_BITS.items()
                              if d.get("throttle_reasons", 0) & bit],
            processes=[GpuProcess(p["pid"], _process_name(src, p["pid"]), p.get("used"))
                       for p in d.get("processes", [])],
            nvlinks_active=sum(1 for link in links if link["active"]) if links is not None else None,
        ))
    if len(facts.gpus) > 1:
        facts.topology = _topology(snap)
    if facts.cuda_driver_version is None and facts.driver_version:
        facts.cuda_driver_version = max_cuda_for_driver(facts.driver_version)
    return facts


def _process_name(src: Source, pid: int) -> str | None:
    try:
        comm = src.read_text(f"/proc/{pid}/comm")
    except Exception:  # another user's process under hidepid: the name is unknown, the GPU is not
        return None
    return comm.strip() if comm else None


def _topology(snap: dict[str, Any]) -> list[list[str]]:
    devs = snap["devices"]
    bus = [str(d.get("pci_bus_id", "")).upper() for d in devs]
    ancestor = snap.get("pcie_ancestor")
    matrix = []
    for i, a in enumerate(devs):
        row = []
        for j, b in enumerate(devs):
            if i == j:
                row.append("X")
                continue
            a_links = [link for link in a.get("nvlinks", []) if link["active"]]
            b_links = [link for link in b.get("nvlinks", []) if link["active"]]
            direct = sum(1 for link in a_links if str(link["remote"]).upper() == bus[j])
            switched = a_links and b_links and all(
                str(link["remote"]).upper() not in bus for link in a_links)
            if direct:
                row.append(f"NV{direct}")
            elif switched:  # all links go to NVSwitches: every pair is connected at full width
                row.append(f"NV{min(len(a_links), len(b_links))}")
            else:
                level = ancestor[i][j] if ancestor else None
                row.append(_TOPO_LABELS.get(level, "SYS") if level is not None else "?")
        matrix.append(row)
    return matrix


_SMI_FIELDS = ["index", "name", "uuid", "pci.bus_id", "memory.total", "memory.used",
               "compute_cap", "driver_version", "pcie.link.gen.current", "pcie.link.gen.max",
               "pcie.link.width.current", "pcie.link.width.max", "persistence_mode",
               "temperature.gpu", "power.draw", "utilization.gpu"]


def _from_nvidia_smi(src: Source, errors: list[ProbeError]) -> AcceleratorFacts:
    argv = ["nvidia-smi", f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader,nounits"]
    res = src.run(argv, timeout=5)
    if res.timed_out:
        errors.append(ProbeError("nvidia-smi", "nvidia-smi did not answer within 5 s (a hung driver?)"))
        return AcceleratorFacts()
    if res.returncode != 0:
        msg = (res.stdout + res.stderr).strip().splitlines()
        why = msg[0] if msg else "could not be run" if res.not_found else f"exit status {res.returncode}"
        errors.append(ProbeError("nvidia-smi", f"nvidia-smi failed: {why}"))
        return AcceleratorFacts()
    facts = AcceleratorFacts(source="nvidia-smi")
    for line in res.stdout.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(_SMI_FIELDS):
            continue
        row = dict(zip(_SMI_FIELDS, cells))

        def num(key: str, scale: float = 1.0, row: dict[str, str] = row) -> Any:
            try:
                v = float(row[key]) * scale
            except ValueError:  # "[N/A]", "[Not Supported]"
                return None
            return int(v) if scale != 1.0 or v.is_integer() else v

        facts.driver_version = row["driver_version"]
        facts.gpus.append(GpuFacts(
            index=int(row["index"]), vendor="nvidia", name=row["name"], uuid=row["uuid"],
            pci_bus_id=row["pci.bus_id"],
            memory_total_bytes=num("memory.total", 1024**2), memory_used_bytes=num("memory.used", 1024**2),
            compute_capability=row["compute_cap"] if re.fullmatch(r"\d+\.\d+", row["compute_cap"]) else None,
            pcie_gen_current=num("pcie.link.gen.current"), pcie_gen_max=num("pcie.link.gen.max"),
            pcie_width_current=num("pcie.link.width.current"), pcie_width_max=num("pcie.link.width.max"),
            persistence_mode={"Enabled": True, "Disabled": False}.get(row["persistence_mode"]),
            temperature_c=num("temperature.gpu"), power_w=num("power.draw"),
            utilization_percent=num("utilization.gpu"),
        ))
    if facts.driver_version:
        facts.cuda_driver_version = max_cuda_for_driver(facts.driver_version)
    return facts


def _from_proc(src: Source) -> AcceleratorFacts:
    version = src.read_text("/proc/driver/nvidia/version")
    if not version:
        return AcceleratorFacts()
    m = re.search(r"Kernel Module(?: for \w+)?\s+([\d.]+)", version)
    facts = AcceleratorFacts(source="proc", driver_version=m.group(1) if m else None)
    for i, bus in enumerate(src.listdir("/proc/driver/nvidia/gpus") or []):
        info = src.read_text(f"/proc/driver/nvidia/gpus/{bus}/information") or ""
        fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in info.splitlines())}
        facts.gpus.append(GpuFacts(index=i, vendor="nvidia", name=fields.get("Model", "NVIDIA GPU"),
                                   uuid=fields.get("GPU UUID"), pci_bus_id=bus))
    if facts.driver_version:
        facts.cuda_driver_version = max_cuda_for_driver(facts.driver_version)
    return facts


# --------------------------------------------------------------------------- others


def _amd(src: Source, pci: list[dict[str, str]]) -> list[GpuFacts]:
    gpus = []
    for card in src.listdir("/sys/class/drm") or []:
        if not re.fullmatch(r"card\d+", card):
            continue
        base = f"/sys/class/drm/{card}/device"
        if (src.read_text(f"{base}/vendor") or "").strip() != AMD_VENDOR:
            continue
        vram = (src.read_text(f"{base}/mem_info_vram_total") or "").strip()
        used = (src.read_text(f"{base}/mem_info_vram_used") or "").strip()
        name = (src.read_text(f"{base}/product_name") or "").strip()
        dev = (src.read_text(f"{base}/device") or "").strip()
        gpus.append(GpuFacts(index=0, vendor="amd", name=name or f"AMD GPU (PCI device {dev})",
                             memory_total_bytes=int(vram) if vram.isdigit() else None,
                             memory_used_bytes=int(used) if used.isdigit() else None))
    return gpus


def _apple(src: Source) -> list[GpuFacts]:
    if src.os != "darwin" or src.machine != "arm64":
        return []
    res = src.run(["sysctl", "-n", "machdep.cpu.brand_string", "hw.memsize"], timeout=2)
    lines = res.stdout.strip().splitlines() if res.returncode == 0 else []
    chip = lines[0] if lines else "Apple silicon"
    memory = int(lines[1]) if len(lines) > 1 and lines[1].isdigit() else None
    # Unified memory: the GPU (MPS) can use most of it; report the whole as the device's memory.
    return [GpuFacts(index=0, vendor="apple", name=f"{chip} GPU (MPS)", memory_total_bytes=memory)]


def _tpu(src: Source, pci: list[dict[str, str]]) -> list[GpuFacts]:
    accel = [d for d in src.listdir("/dev") or [] if re.fullmatch(r"accel\d+", d)]
    google = [d for d in pci if d["vendor"] == GOOGLE_VENDOR and d["device"] in TPU_DEVICE_IDS]
    count = max(len(accel), len(google))
    return [GpuFacts(index=0, vendor="google", name="Google TPU") for _ in range(count)]
