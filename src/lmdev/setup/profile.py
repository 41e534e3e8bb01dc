"""The key facts of a machine that decide which framework builds it needs.

A :class:`MachineProfile` is read from doctor's facts (:func:`profile_from_facts`) or named with
``--for`` (:data:`PROFILES`: a backend such as ``cu128`` or ``cpu``, or a known machine such as
``gtx1080ti``). The planner is a pure function of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lmdev.errors import LmdevError
from lmdev.probe.types import Facts


@dataclass(frozen=True)
class ProfileGpu:
    vendor: str  # nvidia, amd, apple, intel
    name: str
    compute_capability: str | None = None  # NVIDIA "8.6"
    count: int = 1


@dataclass(frozen=True)
class MachineProfile:
    name: str
    os: str  # linux, darwin, windows
    arch: str  # x86_64, aarch64, arm64
    python: str  # "3.11"
    wsl: bool = False
    container: str | None = None
    glibc: str | None = None
    driver: str | None = None  # NVIDIA driver version
    cuda_driver: str | None = None  # the newest CUDA the driver supports
    gpus: tuple[ProfileGpu, ...] = field(default_factory=tuple)
    backend: str | None = None  # a backend forced by --for (cu128, cpu, rocm6.4, mps, xpu)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_python(self, python: str | None) -> MachineProfile:
        return dataclasses.replace(self, python=python) if python else self

    def vendors(self) -> set[str]:
        return {g.vendor for g in self.gpus}


def _python_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def profile_from_facts(facts: Facts, name: str | None = None) -> MachineProfile:
    """The profile of the machine doctor described. Identical GPUs are grouped, in index order."""
    host, acc = facts.host, facts.accelerators
    grouped: dict[tuple[str, str, str | None], int] = {}
    for g in acc.gpus:
        key = (g.vendor, g.name, g.compute_capability)
        grouped[key] = grouped.get(key, 0) + 1
    gpus = tuple(ProfileGpu(v, n, cc, count) for (v, n, cc), count in grouped.items())
    arch = host.cpu.architecture or "x86_64"
    return MachineProfile(
        name=name or host.hostname or "this machine", os=host.os or "linux",
        arch="aarch64" if arch == "arm64" and host.os == "linux" else arch,
        python=_python_minor(host.python.version or "3.11"), wsl=host.wsl,
        container=host.container, driver=acc.driver_version, cuda_driver=acc.cuda_driver_version,
        gpus=gpus)


def _nv(name: str, cc: str, count: int = 1) -> ProfileGpu:
    return ProfileGpu("nvidia", name, cc, count)


def _linux(name: str, **facts: Any) -> MachineProfile:
    """An x86_64 Linux machine with Python 3.12 (the catalog's common case)."""
    return MachineProfile(name, os="linux", arch="x86_64", python="3.12", **facts)


# Machines the plan table covers beyond doctor's fixtures (tests/fixtures/machines), and the
# backends ``--for`` accepts. Each is a real product configuration.
PROFILES: dict[str, MachineProfile] = {
    "gtx1080ti": _linux("GTX 1080 Ti (sm_61), driver 570", driver="570.133.07", cuda_driver="12.8",
                        gpus=(_nv("NVIDIA GeForce GTX 1080 Ti", "6.1"),)),
    "rtx5090": _linux("RTX 5090 (sm_120), driver 575", driver="575.57.08", cuda_driver="12.9",
                      gpus=(_nv("NVIDIA GeForce RTX 5090", "12.0"),)),
    "rtx5090-driver560": _linux("RTX 5090 (sm_120), driver 560 (too old)", driver="560.35.03",
                                cuda_driver="12.6", gpus=(_nv("NVIDIA GeForce RTX 5090", "12.0"),)),
    "h100-driver535": _linux("8x H100 (sm_90), driver 535", driver="535.183.01", cuda_driver="12.2",
                             gpus=(_nv("NVIDIA H100 80GB HBM3", "9.0", 8),)),
    "mi300x": _linux("8x AMD Instinct MI300X (gfx942), ROCm",
                     gpus=(ProfileGpu("amd", "AMD Instinct MI300X", None, 8),)),
    "m2": MachineProfile("Apple M2 (MPS), macOS 14", os="darwin", arch="arm64", python="3.12",
                         gpus=(ProfileGpu("apple", "Apple M2 GPU (MPS)"),)),
    "wsl2": _linux("WSL2 with an RTX 4070 (sm_89), Windows driver 572", wsl=True, driver="572.83",
                   cuda_driver="12.8", gpus=(_nv("NVIDIA GeForce RTX 4070", "8.9"),)),
    "cpu-only": _linux("x86_64 laptop, no GPU"),
    "gh200": MachineProfile("Grace Hopper GH200 (aarch64, sm_90), driver 570", os="linux",
                            arch="aarch64", python="3.12", driver="570.124.06", cuda_driver="12.8",
                            gpus=(_nv("NVIDIA GH200 480GB", "9.0"),)),
    "arc-a770": _linux("Intel Arc A770 (XPU)", gpus=(ProfileGpu("intel", "Intel Arc A770 Graphics"),)),
}

BACKENDS = ("cpu", "cu118", "cu126", "cu128", "cu129", "cu130", "rocm6.3", "rocm6.4", "mps", "xpu")


def _backend_profile(backend: str, python: str) -> MachineProfile:
    os_, arch = ("darwin", "arm64") if backend == "mps" else ("linux", "x86_64")
    return MachineProfile(f"any machine for {backend}", os=os_, arch=arch, python=python,
                          backend=backend)


def named_profile(name: str, python: str) -> MachineProfile:
    """``--for NAME``: a backend (``cu128``, ``cpu``) or a machine of :data:`PROFILES`."""
    if name in BACKENDS:
        return _backend_profile(name, python)
    if name in PROFILES:
        return PROFILES[name].with_python(python)
    raise LmdevError(f"unknown profile {name!r}",
                     "use a backend (" + ", ".join(BACKENDS) + ") or a machine ("
                     + ", ".join(sorted(PROFILES)) + ")")
