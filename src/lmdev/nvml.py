"""Whether an NVIDIA driver is here, judged without loading NVML: a leaf module, so that the probe
and the run store's telemetry both ask before importing pynvml (an import and a failing
``nvmlInit`` cost ~0.1-0.2 s on a machine without a driver)."""

from __future__ import annotations

import functools
import os
import platform

NVML_LIBRARY = "libnvidia-ml.so.1"
# Where an NVIDIA driver leaves NVML on Linux when ld.so's cache may not list it: WSL's driver
# folder (WSL has no /proc/driver/nvidia), and the usual library folders.
NVML_FOLDERS = ("usr/lib/wsl/lib", "usr/lib/x86_64-linux-gnu", "usr/lib/aarch64-linux-gnu", "usr/lib64",
                "usr/lib", "usr/local/nvidia/lib64", "usr/local/nvidia/lib")


def nvidia_driver_present(os_name: str, ld_library_path: str = "", root: str = "/") -> bool:
    """Whether NVML could load here, judged without loading it: on Linux the driver's /proc entry
    or device node, or libnvidia-ml.so.1 in ld.so's cache, LD_LIBRARY_PATH or a usual folder (WSL:
    /usr/lib/wsl/lib). macOS has no NVML; elsewhere (Windows) NVML itself is asked."""
    if os_name == "darwin":
        return False
    if os_name != "linux":
        return True
    here = functools.partial(os.path.join, root)
    if os.path.exists(here("proc/driver/nvidia")) or os.path.exists(here("dev/nvidiactl")):
        return True
    folders = [d for d in ld_library_path.split(os.pathsep) if d] + [here(d) for d in NVML_FOLDERS]
    if any(os.path.exists(os.path.join(d, NVML_LIBRARY)) for d in folders):
        return True
    try:
        with open(here("etc/ld.so.cache"), "rb") as f:
            return NVML_LIBRARY.encode() in f.read()
    except OSError:
        return False


def local_driver_present() -> bool:
    """``nvidia_driver_present`` for this machine."""
    name = {"darwin": "darwin", "windows": "windows"}.get(platform.system().lower(), platform.system().lower())
    return nvidia_driver_present(name, os.environ.get("LD_LIBRARY_PATH", ""))
