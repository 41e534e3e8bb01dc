"""Facts about a machine: plain data, no printing, no behaviour.

Every collector fills one part of :class:`Facts`. A value that could not be read is ``None``
(never a guess); why it could not be read goes into :attr:`Facts.probe_errors`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

GiB = 1024**3


@dataclass
class PythonFacts:
    version: str = ""
    implementation: str = "CPython"
    executable: str = ""
    prefix: str = ""
    virtualenv: str | None = None  # path of the active venv, if any
    conda_env: str | None = None  # path of the active conda env, if any


@dataclass
class CpuFacts:
    model: str | None = None
    architecture: str = ""  # x86_64, aarch64, arm64
    cores: int | None = None  # physical cores
    threads: int | None = None  # logical processors
    quota_cores: float | None = None  # cgroup CPU limit, when one is set
    features: list[str] = field(default_factory=list)  # avx2, avx512f, amx_bf16, neon, sve ...
    load_average: list[float] | None = None  # runnable tasks averaged over 1, 5 and 15 minutes
    ranks: int | None = None  # training processes meant for this machine (doctor --nproc, LOCAL_WORLD_SIZE)


@dataclass
class MemoryFacts:
    total_bytes: int | None = None
    available_bytes: int | None = None
    swap_total_bytes: int | None = None
    swap_free_bytes: int | None = None
    cgroup_limit_bytes: int | None = None  # container memory limit, when one is set


@dataclass
class DiskFacts:
    purpose: str  # project, huggingface_cache, torch_cache, pip_cache, shm
    path: str
    total_bytes: int | None = None
    free_bytes: int | None = None


@dataclass
class HostFacts:
    hostname: str = ""
    os: str = ""  # linux, darwin, windows
    os_name: str | None = None  # "Ubuntu 22.04.4 LTS", "macOS 14.5"
    kernel: str | None = None
    container: str | None = None  # docker, podman, kubernetes, containerd, lxc
    wsl: bool = False
    virtual_machine: str | None = None  # kvm, vmware, hyper-v, xen, aws, gcp, ... or "hypervisor"
    python: PythonFacts = field(default_factory=PythonFacts)
    cpu: CpuFacts = field(default_factory=CpuFacts)
    memory: MemoryFacts = field(default_factory=MemoryFacts)
    shm_bytes: int | None = None
    disks: list[DiskFacts] = field(default_factory=list)


@dataclass
class GpuProcess:
    pid: int
    name: str | None = None
    used_memory_bytes: int | None = None


@dataclass
class GpuFacts:
    index: int
    vendor: str  # nvidia, amd, apple, google
    name: str
    uuid: str | None = None
    pci_bus_id: str | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    compute_capability: str | None = None  # "9.0" (NVIDIA only)
    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    persistence_mode: bool | None = None
    mig_enabled: bool | None = None
    ecc_uncorrected_errors: int | None = None
    utilization_percent: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    throttle_reasons: list[str] = field(default_factory=list)
    processes: list[GpuProcess] = field(default_factory=list)
    nvlinks_active: int | None = None


@dataclass
class AcceleratorFacts:
    source: str | None = None  # nvml, proc, nvidia-smi, sysfs, sysctl ... (None: nothing found)
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # the highest CUDA version the driver supports, "12.4"
    gpus: list[GpuFacts] = field(default_factory=list)
    # topology[i][j]: "X", "NV18", "PIX", "PXB", "PHB", "NODE", "SYS" (nvidia-smi topo -m labels)
    topology: list[list[str]] | None = None


@dataclass
class TorchBuild:
    version: str
    cuda: str | None = None  # CUDA runtime torch was built with, "12.8"; None for a CPU/ROCm build
    hip: str | None = None
    cpu_only: bool = False


@dataclass
class ToolkitFacts:
    nvcc_path: str | None = None
    cuda_version: str | None = None  # "12.4"
    cuda_home: str | None = None


@dataclass
class SoftwareFacts:
    packages: dict[str, str] = field(default_factory=dict)  # normalised name -> version
    torch: TorchBuild | None = None
    tensorflow_cuda: str | None = None  # CUDA version TensorFlow was built with
    jax_cuda_plugin: str | None = None  # "12" for jax-cuda12-plugin
    keras_backend: str | None = None
    cuda_toolkit: ToolkitFacts = field(default_factory=ToolkitFacts)
    pynvml_providers: list[str] = field(default_factory=list)  # distributions that ship pynvml.py
    system_nccl: str | None = None  # path of a system libnccl, if any
    env: dict[str, str] = field(default_factory=dict)  # the environment variables that matter


@dataclass
class ProbeError:
    """A collector that failed. It becomes an info finding; the rest of the report stands."""

    collector: str
    message: str


@dataclass
class DeepCheck:
    """What a framework reports about itself when imported in its own subprocess (``--deep``)."""

    framework: str  # torch, tensorflow, jax
    ok: bool
    import_seconds: float | None = None
    version: str | None = None
    devices: list[str] = field(default_factory=list)
    cuda_available: bool | None = None
    arch_list: list[str] = field(default_factory=list)  # torch: compiled CUDA architectures
    op_results: dict[str, str] = field(default_factory=dict)  # device -> "ok" or the error
    error: str | None = None


@dataclass
class Facts:
    host: HostFacts = field(default_factory=HostFacts)
    accelerators: AcceleratorFacts = field(default_factory=AcceleratorFacts)
    software: SoftwareFacts = field(default_factory=SoftwareFacts)
    deep: list[DeepCheck] | None = None  # None unless --deep ran
    probe_errors: list[ProbeError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
