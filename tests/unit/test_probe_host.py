"""Host collectors (OS, container / WSL / VM, CPU, memory, /dev/shm, disks) read through a fake
root: every test builds the files and commands of the machine it describes."""

from __future__ import annotations

from lmdev.probe.host import cache_locations, collect_disks, collect_host
from lmdev.probe.source import FixtureSource
from lmdev.probe.types import GiB

X86_FLAGS = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov sse sse2 ht syscall nx lm "
             "pni ssse3 fma cx16 sse4_1 sse4_2 popcnt aes xsave avx f16c rdrand hypervisor avx2 "
             "avx512f avx512dq avx512bw avx512vl avx512_vnni")


def x86_block(n: int, physical: int, core: int, flags: str = X86_FLAGS,
              model: str = "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz") -> str:
    return (f"processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 106\n"
            f"model name\t: {model}\nstepping\t: 6\nphysical id\t: {physical}\nsiblings\t: 4\n"
            f"core id\t\t: {core}\ncpu cores\t: 2\nflags\t\t: {flags}\nbogomips\t: 4000.00\n"
            "power management:\n")


def x86_cpuinfo(flags: str = X86_FLAGS) -> str:
    # 2 sockets x 2 cores x 2 threads, first threads first (as Linux numbers them)
    order = [(0, 0), (0, 1), (1, 0), (1, 1)] * 2
    return "\n".join(x86_block(n, p, c, flags) for n, (p, c) in enumerate(order)) + "\n"


GRAVITON3 = "".join(
    f"processor\t: {n}\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
    "atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve "
    "asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x1\nCPU part\t: 0xd40\n"
    "CPU revision\t: 1\n\n" for n in range(4))

RASPBERRY_PI_5 = "".join(
    f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 "
    "atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\n"
    "CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n\n"
    for n in range(4)) + ("Revision\t: d04170\nSerial\t\t: 6e2b5c4d1a0f3e29\n"
                          "Model\t\t: Raspberry Pi 5 Model B Rev 1.0\n")

MEMINFO = ("MemTotal:       65843720 kB\nMemFree:        20123456 kB\nMemAvailable:   50123456 kB\n"
           "Buffers:          812344 kB\nCached:         28123456 kB\nSwapTotal:       2097148 kB\n"
           "SwapFree:        2097148 kB\nHugePages_Total:       0\nHugePages_Free:        0\n"
           "Hugepagesize:       2048 kB\n")


def linux(files: dict[str, str] | None = None, **kw) -> FixtureSource:
    base = {"/proc/cpuinfo": x86_cpuinfo(), "/proc/meminfo": MEMINFO,
            "/proc/version": "Linux version 6.8.0-45-generic (buildd@lcy02-amd64-115) #45-Ubuntu SMP\n",
            "/etc/os-release": 'NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\nVERSION_ID="24.04"\n'}
    base.update(files or {})
    kw.setdefault("disks", {"/": [500 * GiB, 200 * GiB]})
    return FixtureSource(os="linux", machine=kw.pop("machine", "x86_64"), files=base, **kw)


def host(src: FixtureSource):
    errors: list = []
    h = collect_host(src, errors)
    assert errors == []
    return h


# --------------------------------------------------------------------------- CPU


def test_x86_cpuinfo_counts_cores_threads_and_features():
    h = host(linux())
    assert h.cpu.model == "Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz"
    assert (h.cpu.threads, h.cpu.cores) == (8, 4)  # cores are (physical id, core id) pairs
    assert h.cpu.architecture == "x86_64"
    # only the flags that matter, in a fixed order; neither avx_vnni nor amx on this CPU
    assert h.cpu.features == ["avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni"]


def test_x86_without_core_ids_counts_threads_as_cores():
    text = "".join(f"processor\t: {n}\nmodel name\t: QEMU Virtual CPU version 2.5+\nflags\t\t: fpu sse2\n\n"
                   for n in range(3))
    h = host(linux({"/proc/cpuinfo": text}))
    assert (h.cpu.cores, h.cpu.threads, h.cpu.features) == (3, 3, [])


def test_arm_server_cpuinfo():
    h = host(linux({"/proc/cpuinfo": GRAVITON3}, machine="aarch64"))
    assert (h.cpu.threads, h.cpu.cores, h.cpu.architecture) == (4, 4, "aarch64")
    assert h.cpu.model is None  # Graviton names no model: None, never a guess
    assert h.cpu.features == ["neon", "sve", "bf16", "i8mm", "dotprod"]


def test_arm_board_model_outside_the_processor_blocks():
    h = host(linux({"/proc/cpuinfo": RASPBERRY_PI_5}, machine="aarch64"))
    assert h.cpu.model == "Raspberry Pi 5 Model B Rev 1.0"
    assert h.cpu.features == ["neon", "dotprod"]
    assert h.cpu.threads == 4


def test_missing_cpuinfo_leaves_counts_unknown():
    src = linux()
    del src.files["/proc/cpuinfo"]
    h = host(src)
    assert (h.cpu.model, h.cpu.cores, h.cpu.threads, h.cpu.features) == (None, None, None, [])


# --------------------------------------------------------------------------- memory and cgroups


def test_meminfo_is_read_in_bytes():
    h = host(linux())
    assert h.memory.total_bytes == 65843720 * 1024
    assert h.memory.available_bytes == 50123456 * 1024
    assert (h.memory.swap_total_bytes, h.memory.swap_free_bytes) == (2097148 * 1024, 2097148 * 1024)
    assert h.memory.cgroup_limit_bytes is None and h.cpu.quota_cores is None


def test_old_kernel_without_memavailable_falls_back_to_memfree():
    text = "MemTotal:        8000000 kB\nMemFree:         3000000 kB\nSwapTotal:             0 kB\n"
    h = host(linux({"/proc/meminfo": text}))
    assert h.memory.available_bytes == 3000000 * 1024
    assert h.memory.swap_free_bytes is None


def test_cgroup_v2_limits():
    h = host(linux({"/sys/fs/cgroup/memory.max": "17179869184\n",
                    "/sys/fs/cgroup/cpu.max": "250000 100000\n"}))
    assert h.memory.cgroup_limit_bytes == 16 * GiB
    assert h.cpu.quota_cores == 2.5


def test_cgroup_v2_without_limits():
    h = host(linux({"/sys/fs/cgroup/memory.max": "max\n", "/sys/fs/cgroup/cpu.max": "max 100000\n"}))
    assert h.memory.cgroup_limit_bytes is None and h.cpu.quota_cores is None


def test_cgroup_v1_limits():
    h = host(linux({"/sys/fs/cgroup/memory/memory.limit_in_bytes": "8589934592\n",
                    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "150000\n",
                    "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}))
    assert h.memory.cgroup_limit_bytes == 8 * GiB
    assert h.cpu.quota_cores == 1.5


def test_cgroup_v1_without_limits():
    h = host(linux({"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
                    "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
                    "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}))
    assert h.memory.cgroup_limit_bytes is None and h.cpu.quota_cores is None


def test_a_limit_above_the_ram_is_no_limit():
    h = host(linux({"/sys/fs/cgroup/memory.max": str(128 * GiB)}))
    assert h.memory.cgroup_limit_bytes is None


# --------------------------------------------------------------------------- container, WSL, VM


def test_docker_from_dockerenv():
    assert host(linux(dirs={"/.dockerenv": []})).container == "docker"


def test_podman_from_containerenv():
    assert host(linux({"/run/.containerenv": 'engine="podman-4.9.3"\n'})).container == "podman"


def test_kubernetes_from_the_service_variable():
    src = linux(dirs={"/.dockerenv": []}, environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1"})
    assert host(src).container == "kubernetes"


def test_container_from_cgroup_v1_paths():
    docker = "12:memory:/docker/3f9c2d7a1b44e0c1a6f5b7d8e9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8\n"
    pod = "11:cpu,cpuacct:/kubepods/burstable/pod4b1e/0123abcd\n"
    assert host(linux({"/proc/1/cgroup": docker})).container == "docker"
    assert host(linux({"/proc/1/cgroup": pod})).container == "kubernetes"
    assert host(linux({"/proc/1/cgroup": "0::/init.scope\n"})).container is None


def test_container_from_the_container_variable():
    assert host(linux(environ={"container": "podman"})).container == "podman"
    assert host(linux(environ={"container": "oci"})).container is None


def test_bare_metal_is_neither():
    src = linux({"/proc/cpuinfo": x86_cpuinfo(X86_FLAGS.replace(" hypervisor", "")),
                 "/sys/class/dmi/id/sys_vendor": "Dell Inc.\n",
                 "/sys/class/dmi/id/product_name": "PowerEdge R760xa\n"})
    h = host(src)
    assert (h.container, h.virtual_machine, h.wsl) == (None, None, False)


def test_wsl2_from_proc_version():
    src = linux({"/proc/version": "Linux version 5.15.153.1-microsoft-standard-WSL2 (root@941d701f84f1) "
                                  "(gcc (GCC) 11.2.0) #1 SMP Fri Mar 29 23:14:13 UTC 2024\n"})
    h = host(src)
    assert h.wsl is True
    assert h.virtual_machine is None  # the hypervisor flag of WSL2 is not reported as a VM


def test_wsl_from_the_distro_variable_and_wsl1():
    assert host(linux(environ={"WSL_DISTRO_NAME": "Ubuntu"})).wsl is True
    wsl1 = "Linux version 4.4.0-19041-Microsoft (Microsoft@Microsoft.com) (gcc version 5.4.0) #1237-Microsoft\n"
    assert host(linux({"/proc/version": wsl1})).wsl is True


def test_virtual_machines_from_dmi():
    cases = {("Amazon EC2", "p5.48xlarge"): "aws", ("QEMU", "Standard PC (Q35 + ICH9, 2009)"): "kvm",
             ("Google", "Google Compute Engine"): "gcp", ("VMware, Inc.", "VMware7,1"): "vmware",
             ("Microsoft Corporation", "Virtual Machine"): "hyper-v",
             ("innotek GmbH", "VirtualBox"): "virtualbox", ("Xen", "HVM domU"): "xen"}
    for (vendor, product), name in cases.items():
        src = linux({"/sys/class/dmi/id/sys_vendor": vendor + "\n",
                     "/sys/class/dmi/id/product_name": product + "\n"})
        assert host(src).virtual_machine == name, vendor


def test_vm_without_dmi_from_the_hypervisor_flag():
    assert host(linux()).virtual_machine == "hypervisor"


# --------------------------------------------------------------------------- OS, python, shm


def test_os_release_and_kernel():
    src = linux(kernel="6.8.0-45-generic", hostname="box")
    h = host(src)
    assert (h.os, h.os_name, h.kernel, h.hostname) == ("linux", "Ubuntu 24.04.1 LTS", "6.8.0-45-generic", "box")


def test_os_release_without_quotes():
    h = host(linux({"/etc/os-release": "NAME=Arch Linux\nPRETTY_NAME=Arch Linux\nID=arch\n"}))
    assert h.os_name == "Arch Linux"


def test_shm_size():
    h = host(linux(disks={"/": [500 * GiB, 200 * GiB], "/dev/shm": [64 * 1024**2, 64 * 1024**2]}))
    assert h.shm_bytes == 64 * 1024**2


# --------------------------------------------------------------------------- disks


class ExactDisks(FixtureSource):
    """disk_usage answers only for folders that exist, as os.statvfs does."""

    def disk_usage(self, path: str):
        usage = self.disks.get(path)
        return (usage[0], usage[1]) if usage else None


def test_disks_walk_up_to_the_nearest_existing_parent():
    src = ExactDisks(os="linux", home="/home/kim", cwd="/home/kim/proj",
                     environ={"HF_HOME": "/mnt/big/models/hf"},
                     disks={"/": [100 * GiB, 10 * GiB], "/home/kim/proj": [2000 * GiB, 1500 * GiB],
                            "/mnt/big": [8000 * GiB, 6000 * GiB], "/home/kim": [2000 * GiB, 1500 * GiB]})
    disks = {d.purpose: d for d in collect_disks(src)}
    assert (disks["project"].path, disks["project"].free_bytes) == ("/home/kim/proj", 1500 * GiB)
    # the cache folder does not exist yet: it will be created on the disk of /mnt/big
    hf = disks["huggingface_cache"]
    assert (hf.path, hf.total_bytes, hf.free_bytes) == ("/mnt/big/models/hf", 8000 * GiB, 6000 * GiB)
    assert disks["torch_cache"].free_bytes == 1500 * GiB  # /home/kim/.cache/torch -> /home/kim


def test_disks_fall_back_to_the_root_and_then_to_unknown():
    src = ExactDisks(os="linux", home="/nonexistent", cwd="/srv/app", disks={"/": [100 * GiB, 50 * GiB]})
    assert {d.free_bytes for d in collect_disks(src)} == {50 * GiB}
    nothing = ExactDisks(os="linux", home="/nonexistent", cwd="/srv/app")
    assert [(d.total_bytes, d.free_bytes) for d in collect_disks(nothing)] == [(None, None)] * 4


def test_cache_locations_follow_the_environment():
    src = FixtureSource(os="linux", home="/home/kim", cwd="/w",
                        environ={"XDG_CACHE_HOME": "/cache", "HF_HUB_CACHE": "/hub",
                                 "TORCH_HOME": "/t", "PIP_CACHE_DIR": "/p"})
    assert cache_locations(src) == [("project", "/w"), ("huggingface_cache", "/hub"),
                                    ("torch_cache", "/t"), ("pip_cache", "/p")]
    src.environ = {"XDG_CACHE_HOME": "/cache"}
    assert dict(cache_locations(src))["huggingface_cache"] == "/cache/huggingface"
    mac = FixtureSource(os="darwin", home="/Users/kim", cwd="/w")
    assert dict(cache_locations(mac))["pip_cache"] == "/Users/kim/Library/Caches/pip"
    assert dict(cache_locations(mac))["torch_cache"] == "/Users/kim/.cache/torch"


# --------------------------------------------------------------------------- macOS


def _run(stdout: str, returncode: int = 0) -> dict:
    return {"returncode": returncode, "stdout": stdout, "stderr": ""}


def test_intel_mac_cpu_features():
    features = ("FPU VME DE PSE TSC MSR PAE MCE CX8 APIC SEP MTRR PGE MCA CMOV PAT PSE36 CLFSH DS ACPI "
                "MMX FXSR SSE SSE2 SS HTT TM PBE SSE3 PCLMULQDQ DTES64 MON DSCPL VMX EST TM2 SSSE3 FMA "
                "CX16 TPR PDCM SSE4.1 SSE4.2 x2APIC MOVBE POPCNT AES PCID XSAVE OSXSAVE SEGLIM64 TSCTMR "
                "AVX1.0 RDRAND F16C\n")
    leaf7 = ("RDWRFSGS TSC_THREAD_OFFSET SGX BMI1 AVX2 SMEP BMI2 ERMS INVPCID FPU_CSDS MPX RDSEED ADX "
             "SMAP CLFSOPT IPT MDCLEAR TSXFA IBRS STIBP L1DF SSBD\n")
    src = FixtureSource(os="darwin", machine="x86_64", commands={
        "sysctl -n machdep.cpu.brand_string": _run("Intel(R) Core(TM) i9-9880H CPU @ 2.30GHz\n"),
        "sysctl -n hw.physicalcpu": _run("8\n"), "sysctl -n hw.logicalcpu": _run("16\n"),
        "sysctl -n machdep.cpu.features": _run(features),
        "sysctl -n machdep.cpu.leaf7_features": _run(leaf7),
        "sysctl -n hw.memsize": _run("34359738368\n"),
    })
    h = host(src)
    assert (h.cpu.cores, h.cpu.threads) == (8, 16)
    assert h.cpu.features == ["avx", "avx2", "fma"]  # "AVX1.0" is AVX
    assert h.memory.total_bytes == 32 * GiB
    assert h.os_name is None  # sw_vers did not answer: unknown, not a guess


def test_mac_without_vm_stat_or_swap():
    src = FixtureSource(os="darwin", machine="arm64", commands={
        "sysctl -n hw.memsize": _run("17179869184\n"), "sw_vers -productVersion": _run("15.1\n")})
    h = host(src)
    assert (h.os_name, h.memory.total_bytes, h.memory.available_bytes) == ("macOS 15.1", 16 * GiB, None)
    assert h.memory.swap_total_bytes is None
    assert h.cpu.features == ["neon"]  # every Apple silicon CPU has NEON
    assert h.shm_bytes is None
