"""Framework release data for ``lmdev setup``: which builds each PyTorch, TensorFlow and JAX release
publishes, which companions pair with it, which CUDA / cuDNN it needs, which Python it supports.

Each table names its source. The GPU-architecture lists per CUDA build and the driver minimums
live in :mod:`lmdev.catalog.cuda` (one home per rule); this module adds what the planner needs on
top of them. Nothing here imports a framework.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmdev.catalog.cuda import arch_supported, min_cuda_for_arch, torch_arch_list, version_tuple


@dataclass(frozen=True)
class TorchRelease:
    version: str
    torchvision: str  # torchvision's wheel metadata pins exactly this torch
    torchaudio: str
    triton: str  # pytorch-triton / triton that the Linux CUDA wheels require
    python: tuple[str, str]  # oldest and newest CPython with wheels
    cuda: tuple[str, ...]  # CUDA variants published (download.pytorch.org/whl/cuXYZ)
    rocm: tuple[str, ...]  # ROCm variants published (download.pytorch.org/whl/rocmX.Y)
    xpu: bool  # Intel GPU wheels published (download.pytorch.org/whl/xpu)
    cudnn: str  # nvidia-cudnn-cu12/13 version the CUDA 12/13 wheels pin


# Newest first. Source: PyTorch release notes (github.com/pytorch/pytorch/releases) and the
# "Previous PyTorch Versions" install matrix on pytorch.org (variants per release); companion
# versions from torchvision's README compatibility table; cuDNN pins from the wheels' METADATA
# (Requires-Dist: nvidia-cudnn-cu12==...).
TORCH_RELEASES: list[TorchRelease] = [
    TorchRelease("2.9.1", "0.24.1", "2.9.1", "3.5.1", ("3.10", "3.14"), ("12.6", "12.8", "13.0"),
                 ("6.3", "6.4"), True, "9.10.2.21"),
    TorchRelease("2.8.0", "0.23.0", "2.8.0", "3.4.0", ("3.9", "3.13"), ("12.6", "12.8", "12.9"),
                 ("6.3", "6.4"), True, "9.10.2.21"),
    TorchRelease("2.7.1", "0.22.1", "2.7.1", "3.3.1", ("3.9", "3.13"), ("11.8", "12.6", "12.8"),
                 ("6.2.4", "6.3"), True, "9.5.1.17"),
    TorchRelease("2.6.0", "0.21.0", "2.6.0", "3.2.0", ("3.9", "3.13"), ("11.8", "12.4", "12.6"),
                 ("6.1", "6.2.4"), True, "9.1.0.70"),
]

# AMD GPU targets (gfx names) compiled into PyTorch's ROCm wheels, by ROCm version (the first row
# whose version is <= the build's applies). Source: PyTorch's ROCm builder
# (.ci/docker/manywheel/build_scripts, PYTORCH_ROCM_ARCH) and the ROCm compatibility matrix.
ROCM_ARCHS: list[tuple[str, tuple[str, ...]]] = [
    ("6.4", ("gfx900", "gfx906", "gfx908", "gfx90a", "gfx942", "gfx950", "gfx1030", "gfx1100",
             "gfx1101", "gfx1102", "gfx1200", "gfx1201")),
    ("6.1", ("gfx900", "gfx906", "gfx908", "gfx90a", "gfx942", "gfx1030", "gfx1100", "gfx1101")),
]

# AMD product name -> gfx target. Source: AMD ROCm documentation, "GPU hardware specifications".
AMD_GFX: dict[str, str] = {
    "MI355X": "gfx950", "MI350X": "gfx950", "MI325X": "gfx942", "MI300X": "gfx942",
    "MI300A": "gfx942", "MI250X": "gfx90a", "MI250": "gfx90a", "MI210": "gfx90a", "MI100": "gfx908",
    "RX 7900": "gfx1100", "W7900": "gfx1100", "RX 7800": "gfx1101", "RX 9070": "gfx1201",
    "RX 6900": "gfx1030", "RX 6800": "gfx1030",
}


@dataclass(frozen=True)
class TensorflowRelease:
    version: str
    cuda: str  # CUDA it is built with; [and-cuda] installs nvidia-*-cu12 wheels of it
    cudnn: str  # the nvidia-cudnn-cu12 version [and-cuda] pins
    min_cc: str  # oldest compute capability with kernels
    python: tuple[str, str]


# Source: tensorflow.org/install/source#gpu (tested build configurations) and the release notes
# (2.18: CUDA 12.5, cuDNN 9.3, compute capability 5.0 dropped; GPU builds are Linux-only since 2.11,
# native Windows GPU ended with 2.10).
TENSORFLOW_RELEASES: list[TensorflowRelease] = [
    TensorflowRelease("2.20.0", "12.5", "9.3.0.75", "6.0", ("3.9", "3.13")),
    TensorflowRelease("2.19.0", "12.5", "9.3.0.75", "6.0", ("3.9", "3.12")),
    TensorflowRelease("2.18.0", "12.5", "9.3.0.75", "6.0", ("3.9", "3.12")),
]


@dataclass(frozen=True)
class JaxCuda:
    extra: str  # jax[cuda12] / jax[cuda13]
    cuda_major: int
    min_driver: str  # the driver the plugin's CUDA needs (minor-version compatibility applies)
    min_cc: str
    cudnn: str  # the lowest nvidia-cudnn it accepts (a range, not a pin)


# Source: JAX installation guide (docs.jax.dev/en/latest/installation.html): "NVIDIA GPU ... SM
# version 5.2 (Maxwell) or newer", driver >= 525 for CUDA 12 and >= 580 for CUDA 13; cuDNN from
# jax-cuda12-plugin's METADATA (nvidia-cudnn-cu12>=9.8).
JAX_CUDA: list[JaxCuda] = [
    JaxCuda("cuda13", 13, "580.65.06", "7.5", "9.8"),
    JaxCuda("cuda12", 12, "525.60.13", "5.2", "9.8"),
]
JAX_VERSION = "0.7"  # the series the plan installs (newest at the catalog's date); source: JAX changelog

# Keras 3 backends and the package each needs. Source: keras.io/getting_started.
KERAS_BACKEND_PACKAGE = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}

# What each stack installs beyond its framework. Source: each project's install page.
STACK_PACKAGES: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "torchvision"),
    "lightning": ("lightning>=2",),
    "keras": ("keras>=3",),
    "tensorflow": ("tensorflow",),
    "jax": ("jax",),
    "hf": ("transformers", "accelerate", "peft", "datasets", "safetensors"),
}
# Stacks that need PyTorch installed with them.
NEEDS_TORCH = {"torch", "lightning", "hf"}
TORCH_FAMILY = ("torch", "torchvision", "torchaudio", "triton", "pytorch-triton-rocm",
                "pytorch-triton-xpu")


def python_supported(python: str, span: tuple[str, str]) -> bool:
    have = version_tuple(python)[:2]
    return version_tuple(span[0])[:2] <= have <= version_tuple(span[1])[:2]


def torch_archs(release: TorchRelease, cuda: str) -> list[str]:
    """Compute capabilities in the official ``release`` wheels built for CUDA ``cuda``."""
    return torch_arch_list(cuda)


def rocm_archs(rocm: str) -> tuple[str, ...]:
    want = version_tuple(rocm)
    for version, archs in ROCM_ARCHS:
        if want >= version_tuple(version):
            return archs
    return ()


def amd_gfx(name: str) -> str | None:
    """The gfx target of an AMD GPU from its marketing name, or None when unknown."""
    upper = name.upper()
    for key, gfx in AMD_GFX.items():
        if key in upper:
            return gfx
    return None


def variant_tag(kind: str, version: str) -> str:
    """``("cuda", "12.8")`` -> ``cu128``; ``("rocm", "6.4")`` -> ``rocm6.4``."""
    if kind == "cuda":
        return "cu" + version.replace(".", "")
    return f"rocm{version}" if kind == "rocm" else kind


# --------------------------------------------------------------------------- which CUDA build of torch
# The one rule for "which PyTorch CUDA wheel for this driver and these GPUs", used by `lmdev setup`'s
# planner and by doctor's fix lines (one home, so they never disagree).


@dataclass(frozen=True)
class TorchCudaBuild:
    """A PyTorch release and the CUDA variant of it that runs on a machine."""

    release: TorchRelease
    cuda: str  # "12.6"
    newest: bool  # the newest release and its newest variant for this platform
    # a newer release's variant that would run only through CUDA minor-version compatibility (the
    # driver is of its CUDA major but older): not chosen; named with the smallest driver upgrade
    compat_only: tuple[TorchRelease, str] | None = None

    @property
    def tag(self) -> str:
        return variant_tag("cuda", self.cuda)


def cuda_variants(release: TorchRelease, arch: str = "x86_64") -> list[str]:
    """The CUDA variants ``release`` publishes for a CPU architecture, oldest first (aarch64:
    CUDA 12.8 and newer, and 12.6 from 2.9 on)."""
    if arch == "aarch64":
        return [c for c in release.cuda if version_tuple(c) >= (12, 8) or version_tuple(c) == (12, 6)
                and version_tuple(release.version) >= (2, 9)]
    return list(release.cuda)


def torch_cuda_build(driver_cuda: str | None, ccs: list[str], releases: list[TorchRelease] | None = None,
                     arch: str = "x86_64", max_major: int | None = None) -> TorchCudaBuild | None:
    """The newest PyTorch release (of ``releases``, newest first) with a CUDA variant that the driver
    runs outright (the variant's CUDA <= ``driver_cuda``, the newest CUDA the driver supports) and
    whose architecture list carries every GPU of ``ccs``; of that release, its newest such variant.
    ``max_major`` caps the CUDA major (frameworks sharing an environment). ``driver_cuda`` None:
    any driver (the newest fitting variant). None when no build fits, or the driver predates a GPU.

    Minor-version compatibility (a cu126 wheel on a CUDA 12.4 driver) is not relied on: it runs,
    but kernels compiled at run time (Triton, ``torch.compile``, PTX JIT) can fail; doctor warns
    about such an install (torch.cuda_newer_than_driver), so setup never makes one.
    """
    releases = TORCH_RELEASES if releases is None else releases
    have = version_tuple(driver_cuda)[:2] if driver_cuda else None
    if have is not None and any(version_tuple(min_cuda_for_arch(cc))[:2] > have for cc in ccs):
        return None  # the driver predates the GPU itself: only a driver upgrade helps
    compat: tuple[TorchRelease, str] | None = None
    for r in releases:
        variants = cuda_variants(r, arch)
        for cuda in reversed(variants):
            v = version_tuple(cuda)[:2]
            if max_major and v[0] > max_major or not all(arch_supported(cc, torch_arch_list(cuda)) for cc in ccs):
                continue
            if have is not None and v > have:
                if v[0] == have[0] and (compat is None or compat[0] is r):
                    compat = (r, cuda)  # the newest release's oldest such variant: the smallest upgrade
                continue
            newer = compat if compat and compat[0] is not r else None
            return TorchCudaBuild(r, cuda, r is releases[0] and cuda == variants[-1], newer)
    return None


def torch_wheel_for(driver_cuda: str | None, ccs: list[str]) -> str | None:
    """The PyTorch CUDA wheel variant (``cu128``) for this driver and these GPUs: the variant of
    :func:`torch_cuda_build` (the newest release that has one), or None."""
    build = torch_cuda_build(driver_cuda, ccs)
    return build.tag if build else None
