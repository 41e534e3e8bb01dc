"""Host facts: OS, container / WSL / VM, Python, CPU, memory, /dev/shm and disks."""

from __future__ import annotations

import os
import posixpath
import re

from lmdev.probe.source import Source, guarded
from lmdev.probe.types import CpuFacts, DiskFacts, HostFacts, MemoryFacts, ProbeError

# CPU flags worth reporting, in the order shown. x86 from /proc/cpuinfo "flags", Arm from "Features".
_X86_FEATURES = ["avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_fp16",
                 "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"]
_ARM_FEATURES = {"asimd": "neon", "sve": "sve", "sve2": "sve2", "bf16": "bf16", "i8mm": "i8mm",
                 "asimddp": "dotprod"}

_VM_VENDORS = [
    ("qemu", "kvm"), ("kvm", "kvm"), ("vmware", "vmware"), ("virtualbox", "virtualbox"),
    ("innotek", "virtualbox"), ("xen", "xen"), ("amazon ec2", "aws"), ("google", "gcp"),
    ("microsoft corporation", "hyper-v"), ("openstack", "openstack"), ("parallels", "parallels"),
]


def collect_host(src: Source, errors: list[ProbeError]) -> HostFacts:
    host = HostFacts(hostname=src.hostname, os=src.os, kernel=src.kernel, python=src.python)
    if src.os == "linux":
        host.os_name = guarded("os", lambda: _os_release(src), None, errors)
        host.wsl = guarded("wsl", lambda: _is_wsl(src), False, errors)
        host.container = guarded("container", lambda: _container(src), None, errors)
        if not host.wsl:
            host.virtual_machine = guarded("vm", lambda: _virtual_machine(src), None, errors)
        host.cpu = guarded("cpu", lambda: _cpu_linux(src), CpuFacts(architecture=src.machine), errors)
        host.memory = guarded("memory", lambda: _memory_linux(src), MemoryFacts(), errors)
        shm = guarded("shm", lambda: src.disk_usage("/dev/shm"), None, errors)
        host.shm_bytes = shm[0] if shm else None
    elif src.os == "darwin":
        host.os_name = guarded("os", lambda: _macos_name(src), None, errors)
        host.cpu = guarded("cpu", lambda: _cpu_darwin(src), CpuFacts(architecture=src.machine), errors)
        host.memory = guarded("memory", lambda: _memory_darwin(src), MemoryFacts(), errors)
    else:
        host.cpu = CpuFacts(architecture=src.machine, threads=os.cpu_count())
        host.memory = guarded("memory", _memory_psutil, MemoryFacts(), errors)
    host.disks = guarded("disks", lambda: collect_disks(src), [], errors)
    return host


def _os_release(src: Source) -> str | None:
    text = src.read_text("/etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return m.group(1) if m else None


def _is_wsl(src: Source) -> bool:
    version = (src.read_text("/proc/version") or "").lower()
    return "microsoft" in version or "wsl" in version or "WSL_DISTRO_NAME" in src.env


def _container(src: Source) -> str | None:
    if "KUBERNETES_SERVICE_HOST" in src.env:
        return "kubernetes"
    if src.exists("/.dockerenv"):
        return "docker"
    if src.exists("/run/.containerenv"):
        return "podman"
    cgroup = src.read_text("/proc/1/cgroup") or ""
    for marker, name in (("kubepods", "kubernetes"), ("docker", "docker"),
                         ("containerd", "containerd"), ("lxc", "lxc")):
        if marker in cgroup:
            return name
    if (src.env.get("container") or "") in ("docker", "podman", "lxc"):
        return src.env["container"]
    return None


def _virtual_machine(src: Source) -> str | None:
    dmi = " ".join(
        (src.read_text(f"/sys/class/dmi/id/{f}") or "").strip().lower()
        for f in ("sys_vendor", "product_name")
    )
    for marker, name in _VM_VENDORS:
        if marker in dmi:
            return name
    cpuinfo = src.read_text("/proc/cpuinfo") or ""
    m = re.search(r"^flags\s*:(.*)$", cpuinfo, re.M)
    if m and " hypervisor" in m.group(1):
        return "hypervisor"
    return None


def _cpu_linux(src: Source) -> CpuFacts:
    cpu = CpuFacts(architecture=src.machine)
    text = src.read_text("/proc/cpuinfo") or ""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    processors = [b for b in blocks if re.search(r"^processor\s*:", b, re.M)]
    cpu.threads = len(processors) or None
    cores = set()
    flags: set[str] = set()
    for b in processors:
        fields = dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in b.splitlines())
            if _
        )
        if cpu.model is None:
            cpu.model = fields.get("model name") or fields.get("Model") or fields.get("cpu model")
        if "core id" in fields:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
        flags.update((fields.get("flags") or fields.get("Features") or "").split())
    if cpu.model is None:  # Arm boards put the model name outside the processor blocks
        m = re.search(r"^(?:Model|Hardware)\s*:\s*(.+)$", text, re.M)
        cpu.model = m.group(1).strip() if m else None
    cpu.cores = len(cores) or cpu.threads
    if "asimd" in flags or "sve" in flags:
        cpu.features = [name for flag, name in _ARM_FEATURES.items() if flag in flags]
    else:
        cpu.features = [f for f in _X86_FEATURES if f in flags]
    cpu.quota_cores = _cgroup_cpu_quota(src)
    cpu.load_average = load_average(src.read_text("/proc/loadavg"))
    return cpu


def load_average(text: str | None) -> list[float] | None:
    """The 1, 5 and 15 minute load averages of ``/proc/loadavg`` ("0.52 0.58 0.59 1/467 12345")."""
    try:
        values = [float(x) for x in (text or "").split()[:3]]
    except ValueError:
        return None
    return values if len(values) == 3 else None


def _cgroup_cpu_quota(src: Source) -> float | None:
    text = src.read_text("/sys/fs/cgroup/cpu.max")  # cgroup v2: "max 100000" or "200000 100000"
    if text:
        quota, _, period = text.strip().partition(" ")
        if quota != "max" and period:
            return int(quota) / int(period)
        return None
    quota_v1 = src.read_text("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")  # cgroup v1
    period_v1 = src.read_text("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if quota_v1 and period_v1 and int(quota_v1) > 0:
        return int(quota_v1) / int(period_v1)
    return None


def _meminfo(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if len(parts) > 1 else 1)
    return out


def _memory_linux(src: Source) -> MemoryFacts:
    info = _meminfo(src.read_text("/proc/meminfo") or "")
    mem = MemoryFacts(
        total_bytes=info.get("MemTotal"),
        available_bytes=info.get("MemAvailable", info.get("MemFree")),
        swap_total_bytes=info.get("SwapTotal"),
        swap_free_bytes=info.get("SwapFree"),
    )
    limit = (src.read_text("/sys/fs/cgroup/memory.max") or
             src.read_text("/sys/fs/cgroup/memory/memory.limit_in_bytes") or "").strip()
    if limit.isdigit() and (mem.total_bytes is None or int(limit) < mem.total_bytes):
        mem.cgroup_limit_bytes = int(limit)
    return mem


def _sysctl(src: Source, key: str) -> str | None:
    res = src.run(["sysctl", "-n", key], timeout=2)
    return res.stdout.strip() if res.returncode == 0 else None


def _macos_name(src: Source) -> str | None:
    res = src.run(["sw_vers", "-productVersion"], timeout=2)
    return f"macOS {res.stdout.strip()}" if res.returncode == 0 else None


def _cpu_darwin(src: Source) -> CpuFacts:
    def num(key: str) -> int | None:
        v = _sysctl(src, key)
        return int(v) if v and v.isdigit() else None

    cpu = CpuFacts(
        model=_sysctl(src, "machdep.cpu.brand_string"),
        architecture=src.machine,
        cores=num("hw.physicalcpu"),
        threads=num("hw.logicalcpu"),
    )
    if src.machine == "arm64":
        cpu.features = ["neon"] + [
            name for key, name in (("hw.optional.arm.FEAT_BF16", "bf16"),
                                   ("hw.optional.arm.FEAT_I8MM", "i8mm"),
                                   ("hw.optional.arm.FEAT_SME", "sme"))
            if _sysctl(src, key) == "1"
        ]
    else:
        flags = (_sysctl(src, "machdep.cpu.features") or "").lower().split()
        flags += (_sysctl(src, "machdep.cpu.leaf7_features") or "").lower().split()
        flags = ["avx" if f == "avx1.0" else f for f in flags]  # Intel Macs spell AVX "AVX1.0"
        cpu.features = [f for f in ("avx", "avx2", "fma", "avx512f") if f in flags]
    return cpu


def _memory_darwin(src: Source) -> MemoryFacts:
    total = _sysctl(src, "hw.memsize")
    mem = MemoryFacts(total_bytes=int(total) if total and total.isdigit() else None)
    res = src.run(["vm_stat"], timeout=2)
    if res.returncode == 0:
        page = re.search(r"page size of (\d+) bytes", res.stdout)
        size = int(page.group(1)) if page else 16384
        pages = {k.strip(): int(v.strip().rstrip(".")) for k, _, v in
                 (line.partition(":") for line in res.stdout.splitlines()[1:]) if v.strip().rstrip(".").isdigit()}
        free = sum(pages.get(k, 0) for k in ("Pages free", "Pages inactive", "Pages speculative"))
        mem.available_bytes = free * size
    swap = _sysctl(src, "vm.swapusage")  # "total = 2048.00M  used = 1024.00M  free = 1024.00M ..."
    if swap:
        sizes = dict(re.findall(r"(\w+) = ([\d.]+)M", swap))
        if "total" in sizes:
            mem.swap_total_bytes = int(float(sizes["total"]) * 1024**2)
            mem.swap_free_bytes = int(float(sizes.get("free", 0)) * 1024**2)
    return mem


def _memory_psutil() -> MemoryFacts:
    import psutil

    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    return MemoryFacts(vm.total, vm.available, sw.total, sw.free)


def cache_locations(src: Source) -> list[tuple[str, str]]:
    """Where model caches, pip's cache and the project live: (purpose, path)."""
    env, home = src.env, src.home
    xdg = env.get("XDG_CACHE_HOME") or posixpath.join(home, ".cache")
    hf = env.get("HF_HUB_CACHE") or env.get("HF_HOME") or posixpath.join(xdg, "huggingface")
    torch_home = env.get("TORCH_HOME") or posixpath.join(xdg, "torch")
    pip_cache = env.get("PIP_CACHE_DIR") or posixpath.join(xdg, "pip")
    if src.os == "darwin" and "PIP_CACHE_DIR" not in env:
        pip_cache = posixpath.join(home, "Library", "Caches", "pip")
    return [
        ("project", src.cwd),
        ("huggingface_cache", hf),
        ("torch_cache", torch_home),
        ("pip_cache", pip_cache),
    ]


def collect_disks(src: Source) -> list[DiskFacts]:
    disks = []
    for purpose, path in cache_locations(src):
        probe = path
        usage = src.disk_usage(probe)
        while usage is None and probe not in ("/", ""):
            probe = posixpath.dirname(probe.rstrip("/")) or "/"  # nearest existing parent
            usage = src.disk_usage(probe)
        disks.append(DiskFacts(purpose, path, *(usage or (None, None))))
    return disks
