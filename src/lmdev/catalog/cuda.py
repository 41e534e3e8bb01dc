"""CUDA compatibility data: which driver a CUDA release needs, which GPU architectures a PyTorch
build carries, and the compute capability of each NVIDIA architecture.

Each table names its source. They are data, read by probes and rules; nothing here imports CUDA.
"""

from __future__ import annotations

# Minimum Linux driver for each CUDA toolkit release (GA). A driver supports every CUDA version
# whose minimum it meets. Source: NVIDIA CUDA Toolkit Release Notes, "CUDA Toolkit and
# Corresponding Driver Versions" (Table 3), docs.nvidia.com/cuda/cuda-toolkit-release-notes.
CUDA_MIN_DRIVER: list[tuple[str, str]] = [
    ("13.0", "580.65.06"),
    ("12.9", "575.51.03"),
    ("12.8", "570.26"),
    ("12.6", "560.28.03"),
    ("12.5", "555.42.02"),
    ("12.4", "550.54.14"),
    ("12.3", "545.23.06"),
    ("12.2", "535.54.03"),
    ("12.1", "530.30.02"),
    ("12.0", "525.60.13"),
    ("11.8", "520.61.05"),
    ("11.7", "515.43.04"),
    ("11.6", "510.39.01"),
    ("11.5", "495.29.05"),
    ("11.4", "470.42.01"),
    ("11.3", "465.19.01"),
    ("11.2", "460.27.03"),
    ("11.1", "455.23"),
    ("11.0", "450.36.06"),
]

# GPU architectures compiled into the official PyTorch wheels, by the CUDA version of the build
# (the first row whose version is <= the build's applies). Source: PyTorch's release builder
# (.ci/manywheel/build_cuda.sh, TORCH_CUDA_ARCH_LIST per CUDA version) and the release notes of
# 2.7 (cu128 adds Blackwell sm_100/sm_120), 2.8 (cu128 drops Maxwell/Pascal) and 2.9 (cu130 drops
# Volta). `lmdev doctor --deep` reads the exact list from torch.cuda.get_arch_list().
TORCH_ARCHS: list[tuple[str, list[str]]] = [
    ("13.0", ["7.5", "8.0", "8.6", "9.0", "10.0", "11.0", "12.0"]),
    ("12.8", ["7.0", "7.5", "8.0", "8.6", "9.0", "10.0", "12.0"]),
    ("11.8", ["5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0"]),
    ("11.0", ["3.7", "5.0", "6.0", "7.0", "7.5", "8.0", "8.6"]),
]

ARCH_NAMES = {
    "3": "Kepler", "5": "Maxwell", "6": "Pascal", "7.0": "Volta", "7.2": "Volta", "7.5": "Turing",
    "8.0": "Ampere", "8.6": "Ampere", "8.7": "Ampere", "8.9": "Ada Lovelace", "9.0": "Hopper",
    "10.0": "Blackwell", "10.3": "Blackwell", "11.0": "Blackwell", "12.0": "Blackwell",
    "12.1": "Blackwell",
}


def version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for p in v.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def max_cuda_for_driver(driver: str) -> str | None:
    """The newest CUDA release a Linux driver supports, e.g. ``550.54.14`` -> ``12.4``."""
    have = version_tuple(driver)
    for cuda, minimum in CUDA_MIN_DRIVER:
        if have >= version_tuple(minimum):
            return cuda
    return None


def min_driver_for_cuda(cuda: str) -> str | None:
    """The driver a CUDA release (``12.4`` or ``12.4.1``) needs at least."""
    want = version_tuple(cuda)[:2]
    for version, minimum in reversed(CUDA_MIN_DRIVER):
        if version_tuple(version) >= want:
            return minimum
    return None


def torch_arch_list(torch_cuda: str) -> list[str]:
    """Compute capabilities an official PyTorch wheel built for CUDA ``torch_cuda`` carries."""
    want = version_tuple(torch_cuda)
    for version, archs in TORCH_ARCHS:
        if want >= version_tuple(version):
            return archs
    return TORCH_ARCHS[-1][1]


def arch_supported(cc: str, archs: list[str]) -> bool:
    """Whether code built for ``archs`` runs on a GPU of compute capability ``cc``.

    A cubin runs on GPUs of the same major version and an equal or higher minor (sm_80 code runs
    on sm_86 and sm_89); across major versions only PTX, which official wheels do not rely on.
    """
    major, minor = (version_tuple(cc) + (0, 0))[:2]  # "9" reads as 9.0
    for a in archs:
        if a.startswith("compute_"):
            continue  # PTX only
        a_major, a_minor = _cc_of(a)
        if a_major == major and a_minor <= minor:
            return True
    return False


def _cc_of(arch: str) -> tuple[int, int]:
    """``sm_86`` / ``sm_120`` / ``8.6`` -> (major, minor)."""
    if "." in arch:
        major, minor = version_tuple(arch)[:2]
        return major, minor
    digits = "".join(ch for ch in arch if ch.isdigit())
    return int(digits[:-1]), int(digits[-1])


# The first CUDA release that supports each architecture; the driver of that release is the
# oldest that runs the GPU at all. Source: CUDA Toolkit release notes and the CUDA C++
# Programming Guide's compute-capability table.
ARCH_MIN_CUDA = [("12.0", "12.8"), ("10.0", "12.8"), ("9.0", "11.8"), ("8.9", "11.8"),
                 ("8.6", "11.1"), ("8.0", "11.0")]


def min_cuda_for_arch(cc: str) -> str:
    have = version_tuple(cc)[:2]
    for arch, cuda in ARCH_MIN_CUDA:
        if have >= version_tuple(arch):
            return cuda
    return "10.0"


def arch_name(cc: str) -> str:
    return ARCH_NAMES.get(cc) or ARCH_NAMES.get(cc.split(".")[0], "unknown architecture")


def torch_install_command(variant: str | None) -> str:
    if variant is None:
        return "upgrade the NVIDIA driver, then pip install --force-reinstall torch"
    return f"pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/{variant}"
