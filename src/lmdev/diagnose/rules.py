"""The rules doctor applies to the facts. One small function each, registered with its id,
default severity and a one-line summary (``lmdev doctor --rules`` lists them).

A rule reads :class:`~lmdev.probe.types.Facts` only (never the machine), so each is tested
against fabricated facts. It yields a :class:`Hit` per problem found: the title says what is
wrong, the evidence shows the facts, the fix is a command or a concrete step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from lmdev.catalog.cuda import (
    arch_name,
    arch_supported,
    min_driver_for_cuda,
    torch_arch_list,
    torch_install_command,
    version_tuple,
)
from lmdev.catalog.frameworks import torch_wheel_for
from lmdev.diagnose.types import Hit, Rule, Severity
from lmdev.probe.types import GiB, Facts, GpuFacts

RULES: list[Rule] = []

Check = Callable[[Facts], Iterator[Hit]]


def rule(id: str, severity: Severity, summary: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        RULES.append(Rule(id, severity, summary, fn))
        return fn

    return register


def _unknown(value: object, unit: str = "") -> str:
    """A measured value with its unit, or '?' when it could not be read."""
    return "?" if value is None else f"{value}{unit}"


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def _nvidia(f: Facts) -> list[GpuFacts]:
    return [g for g in f.accelerators.gpus if g.vendor == "nvidia"]


def _major(v: str | None) -> int | None:
    t = version_tuple(v) if v else ()
    return t[0] if t else None


REPAIR = "lmdev setup --repair"


def _or_repair(fix: str) -> str:
    """A fix that `lmdev setup --repair` applies, with the manual command beside it."""
    return f"{REPAIR}, or: {fix}"


def _base_version(v: str) -> str:
    return v.split("+")[0]


# --------------------------------------------------------------------------- accelerators


@rule("accelerator.none", "info", "No GPU or other accelerator was found")
def no_accelerator(f: Facts) -> Iterator[Hit]:
    if not f.accelerators.gpus:
        cpu = f.host.cpu
        yield Hit(
            "No accelerator found: training runs on the CPU",
            f"no NVIDIA (NVML, nvidia-smi, /proc/driver/nvidia), AMD, Apple or TPU device; "
            f"CPU: {cpu.model or '?'} with {cpu.threads or '?'} threads",
            "Fine for small models, tests and planning; `lmdev plan MODEL --hardware all` shows "
            "what a GPU would change. On a GPU machine, install the NVIDIA driver first.",
        )


@rule("gpu.driver_missing", "error", "An NVIDIA GPU is on the PCI bus but no driver answers")
def driver_missing(f: Facts) -> Iterator[Hit]:
    gpus = _nvidia(f)
    if f.accelerators.source == "pci" and gpus:  # "pci" is also the source of Google TPUs
        names = ", ".join(g.pci_bus_id or g.name for g in gpus)
        yield Hit(
            "NVIDIA GPU present but the driver is not loaded",
            f"PCI devices {names}; no NVML, nvidia-smi or /proc/driver/nvidia",
            "Install the NVIDIA driver (Ubuntu: `sudo ubuntu-drivers install`; elsewhere the "
            "distribution's nvidia-driver package), reboot, then check `nvidia-smi`.",
        )


@rule("gpu.pcie_degraded", "warning", "A GPU's PCIe link runs below its width or generation")
def pcie_degraded(f: Facts) -> Iterator[Hit]:
    for g in _nvidia(f):
        if g.pcie_width_current and g.pcie_width_max and g.pcie_width_current < g.pcie_width_max:
            yield Hit(
                f"GPU {g.index} PCIe link trained at x{g.pcie_width_current} of x{g.pcie_width_max}",
                f"{g.name} ({g.pci_bus_id}): link width x{g.pcie_width_current}, maximum x{g.pcie_width_max}; "
                "host-device copies run at a fraction of their speed",
                "Reseat the card in a full-width slot, check riser cables and the BIOS lane "
                "settings (bifurcation); confirm with `nvidia-smi -q -d PCI`.",
            )
        busy = (g.utilization_percent or 0) > 0
        if busy and g.pcie_gen_current and g.pcie_gen_max and g.pcie_gen_current < g.pcie_gen_max:
            # An idle GPU lowers its link generation to save power; only a busy one is suspect.
            yield Hit(
                f"GPU {g.index} PCIe link at Gen{g.pcie_gen_current} under load (maximum Gen{g.pcie_gen_max})",
                f"{g.name}: utilisation {g.utilization_percent}% while the link runs Gen{g.pcie_gen_current}",
                "Check the slot's generation in the BIOS (set it to Auto or the GPU's generation) "
                "and the riser; `nvidia-smi -q -d PCI` shows the link under load.",
            )


@rule("gpu.memory_in_use", "warning", "GPU memory is already held by other processes")
def memory_in_use(f: Facts) -> Iterator[Hit]:
    for g in _nvidia(f):
        held = sum(p.used_memory_bytes or 0 for p in g.processes)
        used = max(held, g.memory_used_bytes or 0)
        total = g.memory_total_bytes or 0
        if (g.processes and held >= 512 * 1024**2) or (total and used > 0.1 * total and used > GiB):
            who = ", ".join(f"{p.name or '?'} (pid {p.pid}, {_gib(p.used_memory_bytes)})"
                            for p in g.processes) or "processes not visible from here"
            yield Hit(
                f"GPU {g.index} has {_gib(used)} of {_gib(g.memory_total_bytes)} already in use",
                f"{g.name}: {who}",
                "Stop the processes you do not need (`nvidia-smi` lists them; `kill PID`), or plan "
                "with the memory that is left: `lmdev plan MODEL --hardware this` subtracts it.",
            )


@rule("gpu.persistence_off", "info", "Persistence mode is off (slow NVML and CUDA start-up)")
def persistence_off(f: Facts) -> Iterator[Hit]:
    off = [g for g in _nvidia(f) if g.persistence_mode is False]
    if off and f.host.os == "linux" and not f.host.wsl:
        yield Hit(
            f"Persistence mode is off on {len(off)} GPU(s)",
            "GPUs " + ", ".join(str(g.index) for g in off) + ": the driver unloads between "
            "programs, so every CUDA start and every nvidia-smi call pays the initialisation",
            "`sudo nvidia-smi -pm 1` (until reboot) or enable nvidia-persistenced "
            "(`sudo systemctl enable --now nvidia-persistenced`).",
        )


@rule("gpu.ecc_errors", "warning", "A GPU reports uncorrected ECC memory errors")
def ecc_errors(f: Facts) -> Iterator[Hit]:
    for g in _nvidia(f):
        if g.ecc_uncorrected_errors:
            yield Hit(
                f"GPU {g.index} reports {g.ecc_uncorrected_errors} uncorrected ECC error(s)",
                f"{g.name} ({g.uuid}): volatile uncorrected ECC count {g.ecc_uncorrected_errors}",
                "Results on this GPU may be wrong. Reset it (`sudo nvidia-smi -r -i "
                f"{g.index}`) and watch the counter; if it returns, the card needs service.",
            )


@rule("gpu.throttled", "warning", "A GPU is slowed by heat, power brake or hardware slowdown")
def throttled(f: Facts) -> Iterator[Hit]:
    bad = {"hw_slowdown", "hw_thermal_slowdown", "sw_thermal_slowdown", "hw_power_brake_slowdown"}
    for g in _nvidia(f):
        reasons = sorted(bad & set(g.throttle_reasons))
        if reasons:
            yield Hit(
                f"GPU {g.index} is throttled: {', '.join(reasons)}",
                f"{g.name}: temperature {_unknown(g.temperature_c, ' °C')}, power {_unknown(g.power_w, ' W')} "
                f"of {_unknown(g.power_limit_w, ' W')}",
                "Check cooling (fans, airflow, dust) and the power supply cables; "
                "`nvidia-smi -q -d PERFORMANCE` shows the reasons live.",
            )


@rule("gpu.mig_enabled", "info", "MIG is enabled: each GPU is split into instances")
def mig_enabled(f: Facts) -> Iterator[Hit]:
    mig = [g for g in _nvidia(f) if g.mig_enabled]
    if mig:
        yield Hit(
            f"MIG is enabled on GPU(s) {', '.join(str(g.index) for g in mig)}",
            "a process sees only the MIG instance it is given, not the whole GPU",
            "Select an instance with CUDA_VISIBLE_DEVICES=MIG-<uuid> (`nvidia-smi -L` lists them), "
            "or disable MIG: `sudo nvidia-smi -i N -mig 0`.",
        )


@rule("cuda.visible_devices", "warning", "CUDA_VISIBLE_DEVICES hides GPUs")
def visible_devices(f: Facts) -> Iterator[Hit]:
    value = f.software.env.get("CUDA_VISIBLE_DEVICES")
    gpus = _nvidia(f)
    if value is None or not gpus:
        return
    entries = [e.strip() for e in value.split(",") if e.strip()]

    def valid(e: str) -> bool:
        return (e.isdigit() and int(e) < len(gpus)) or e.startswith(("GPU-", "MIG-"))

    # CUDA reads the list up to its first invalid entry and ignores the rest.
    first_bad = next((i for i, e in enumerate(entries) if not valid(e)), None)
    if entries and first_bad == 0 and entries[0].isdigit():
        yield Hit(
            f"CUDA_VISIBLE_DEVICES names GPU(s) that do not exist: {entries[0]}; CUDA sees no GPU",
            f"CUDA_VISIBLE_DEVICES={value!r}; this machine has GPUs 0-{len(gpus) - 1}; CUDA stops "
            "reading the list at the first invalid entry",
            f"export CUDA_VISIBLE_DEVICES={','.join(str(i) for i in range(len(gpus)))}",
        )
    elif first_bad == 0 or not entries:
        yield Hit(
            "CUDA_VISIBLE_DEVICES hides every GPU",
            f"CUDA_VISIBLE_DEVICES={value!r} while {len(gpus)} GPU(s) are installed; "
            "CUDA programs will see none",
            "unset CUDA_VISIBLE_DEVICES (or set it to the GPUs to use, e.g. 0,1)",
        )
    elif first_bad is not None:
        seen = entries[:first_bad]
        yield Hit(
            f"CUDA_VISIBLE_DEVICES has an invalid entry {entries[first_bad]!r}: only GPU(s) "
            f"{','.join(seen)} are visible",
            f"CUDA_VISIBLE_DEVICES={value!r}; this machine has GPUs 0-{len(gpus) - 1}; CUDA stops "
            "reading the list at the first invalid entry",
            f"export CUDA_VISIBLE_DEVICES={','.join(str(i) for i in range(len(gpus)))}",
        )
    elif len(entries) < len(gpus):
        yield Hit(
            f"CUDA_VISIBLE_DEVICES shows {len(entries)} of {len(gpus)} GPUs",
            f"CUDA_VISIBLE_DEVICES={value!r}",
            "If that is not intended: unset CUDA_VISIBLE_DEVICES",
            severity="info",
        )


# --------------------------------------------------------------------------- torch and CUDA


@rule("torch.cpu_build_on_gpu", "error", "A CPU-only PyTorch build is installed on a GPU machine")
def torch_cpu_build(f: Facts) -> Iterator[Hit]:
    t, gpus = f.software.torch, _nvidia(f)
    if t and t.cpu_only and gpus:
        ccs = [g.compute_capability for g in gpus if g.compute_capability]
        driver_too_old = bool(f.accelerators.driver_version) and not f.accelerators.cuda_driver_version
        variant = None if driver_too_old else torch_wheel_for(f.accelerators.cuda_driver_version, ccs)
        yield Hit(
            "PyTorch is a CPU-only build: the GPUs will not be used",
            f"torch {t.version} built without CUDA; {len(gpus)} NVIDIA GPU(s) ({gpus[0].name}), "
            f"driver {f.accelerators.driver_version or '?'} (CUDA {f.accelerators.cuda_driver_version or '?'})",
            _or_repair(torch_install_command(variant)),
        )


@rule("torch.cuda_newer_than_driver", "error", "PyTorch's CUDA runtime is newer than the driver supports")
def torch_cuda_vs_driver(f: Facts) -> Iterator[Hit]:
    t, driver_cuda = f.software.torch, f.accelerators.cuda_driver_version
    if not (t and t.cuda and driver_cuda and _nvidia(f)):
        return
    need, have = version_tuple(t.cuda)[:2], version_tuple(driver_cuda)[:2]
    if not need or not have or need <= have:
        return
    ccs = [g.compute_capability for g in _nvidia(f) if g.compute_capability]
    minimum = min_driver_for_cuda(t.cuda)
    driver = f"{minimum} or newer" if minimum else f"one that supports CUDA {t.cuda}"
    variant = torch_wheel_for(driver_cuda, ccs)
    fix = f"upgrade the NVIDIA driver to {driver}" + (
        f", or install a build for your driver: {REPAIR} (or {torch_install_command(variant)})" if variant else "")
    evidence = (f"torch {t.version} needs CUDA {t.cuda}; driver {f.accelerators.driver_version} "
                f"supports up to CUDA {driver_cuda}")
    if need[0] > have[0]:
        yield Hit("PyTorch's CUDA is newer than the driver: CUDA will not initialise", evidence, fix)
    else:
        yield Hit(
            "PyTorch's CUDA minor version is newer than the driver's",
            evidence + "; it runs through minor-version compatibility, but kernels that need "
            "PTX JIT compilation (torch.compile, Triton) can fail",
            fix,
            severity="warning",
        )


@rule("torch.arch_not_compiled", "error", "A GPU's architecture is missing from PyTorch's build")
def torch_arch(f: Facts) -> Iterator[Hit]:
    t = f.software.torch
    if not (t and t.cuda):
        return
    deep = next((d for d in f.deep or [] if d.framework == "torch" and d.arch_list), None)
    archs = deep.arch_list if deep else torch_arch_list(t.cuda)
    source = "torch.cuda.get_arch_list()" if deep else f"the official cu{t.cuda.replace('.', '')} wheels"
    for g in _nvidia(f):
        cc = g.compute_capability
        if cc and not arch_supported(cc, archs):
            variant = torch_wheel_for(f.accelerators.cuda_driver_version, [cc])
            yield Hit(
                f"GPU {g.index} ({g.name}, sm_{cc.replace('.', '')}) is not supported by this PyTorch build",
                f"compute capability {cc} ({arch_name(cc)}); architectures in {source}: "
                f"{', '.join(archs)}; kernels fail with 'no kernel image is available'",
                _or_repair(torch_install_command(variant)),
            )


@rule("torch.companion_mismatch", "error", "torchvision or torchaudio does not match torch")
def torch_companions(f: Facts) -> Iterator[Hit]:
    pk = f.software.packages
    torch = pk.get("torch")
    if not torch:
        return
    tv = version_tuple(_base_version(torch))
    if len(tv) < 2:
        return
    expected = {
        # torchvision 0.(minor+15) pairs with torch 2.minor; torchaudio shares torch's version.
        "torchvision": (0, tv[1] + 15) if tv[0] == 2 else None,
        # torch 1.x paired with torchaudio 0.x (1.13 <-> 0.13).
        "torchaudio": (tv[0], tv[1]) if tv[0] >= 2 else (0, tv[1]),
    }
    torch_label = torch.partition("+")[2]
    for name, want in expected.items():
        have = pk.get(name)
        if not have or want is None:
            continue
        label = have.partition("+")[2]
        wrong_version = version_tuple(_base_version(have))[:2] != want
        wrong_build = bool(torch_label and label and torch_label != label)
        if wrong_version or wrong_build:
            want_text = ".".join(map(str, want))
            yield Hit(
                f"{name} {have} does not match torch {torch}",
                f"torch {torch} needs {name} {want_text}.x" + (f" built for +{torch_label}" if torch_label else "")
                + "; a mismatch fails at import ('operator torchvision::nms does not exist') or crashes",
                _or_repair(f"pip install --force-reinstall torch=={_base_version(torch)} '{name}=={want_text}.*'")
                + (f" --index-url https://download.pytorch.org/whl/{torch_label}"
                   if torch_label.startswith(("cu", "cpu", "rocm", "xpu")) else ""),
            )


@rule("cuda.nvcc_mismatch", "warning", "nvcc's CUDA differs from PyTorch's (extension builds fail)")
def nvcc_mismatch(f: Facts) -> Iterator[Hit]:
    t, tk = f.software.torch, f.software.cuda_toolkit
    if not (t and t.cuda and tk.cuda_version):
        return
    torch = f"torch {t.version}" if t.version else "torch"
    if _major(tk.cuda_version) != _major(t.cuda):
        yield Hit(
            f"nvcc is CUDA {tk.cuda_version} but PyTorch was built with CUDA {t.cuda}",
            f"{tk.nvcc_path or 'nvcc'}: CUDA {tk.cuda_version}; {torch}: CUDA {t.cuda}; building "
            "CUDA extensions (flash-attn, apex, custom ops) stops with 'The detected CUDA version "
            "mismatches the version that was used to compile PyTorch'",
            f"Install the CUDA {t.cuda} toolkit and point CUDA_HOME at it "
            f"(export CUDA_HOME=/usr/local/cuda-{t.cuda}), or install the torch build for CUDA "
            f"{tk.cuda_version}.",
        )
    elif version_tuple(tk.cuda_version)[:2] != version_tuple(t.cuda)[:2]:
        yield Hit(
            f"nvcc is CUDA {tk.cuda_version}, PyTorch CUDA {t.cuda} (same major: extensions build, with a warning)",
            f"{tk.nvcc_path or 'nvcc'}: CUDA {tk.cuda_version}; {torch}: CUDA {t.cuda}",
            f"For identical builds use the CUDA {t.cuda} toolkit (export CUDA_HOME=/usr/local/cuda-{t.cuda}).",
            severity="info",
        )


@rule("cuda.framework_major_mismatch", "warning", "TensorFlow, JAX and PyTorch want different CUDA majors")
def framework_cuda_majors(f: Facts) -> Iterator[Hit]:
    sw = f.software
    found = {
        "torch": _major(sw.torch.cuda) if sw.torch and sw.torch.cuda else None,
        "tensorflow": _major(sw.tensorflow_cuda),
        "jax": _major(sw.jax_cuda_plugin),
    }
    wants = {k: v for k, v in found.items() if v is not None}
    if len(set(wants.values())) > 1:
        listing = ", ".join(f"{k} CUDA {v}" for k, v in wants.items())
        yield Hit(
            "Frameworks in this environment were built for different CUDA major versions",
            f"{listing}; they load different cuDNN/cuBLAS/NCCL wheels and the second one imported "
            "in a process can fail to find its libraries",
            f"{REPAIR} (plans one CUDA major, or separate environments), or keep each framework in its own "
            "virtual environment (python3 -m venv), or install builds "
            "for one CUDA major (e.g. pip install 'tensorflow[and-cuda]' with a cu12 torch).",
        )


@rule("nccl.missing", "warning", "NCCL is missing on a multi-GPU machine")
def nccl_missing(f: Facts) -> Iterator[Hit]:
    sw = f.software
    if len(_nvidia(f)) < 2 or not (sw.torch and sw.torch.cuda):
        return
    if any(name.startswith("nvidia-nccl") for name in sw.packages) or sw.system_nccl:
        return
    yield Hit(
        "NCCL not found: multi-GPU training falls back to slow gloo or fails",
        f"{len(_nvidia(f))} GPUs, torch {sw.torch.version}; no nvidia-nccl wheel and no system libnccl",
        f"pip install nvidia-nccl-cu{_major(sw.torch.cuda)} (or reinstall torch from "
        "download.pytorch.org, which brings it)",
    )


@rule("nvml.pynvml_clash", "warning", "Two packages both install the pynvml module")
def pynvml_clash(f: Facts) -> Iterator[Hit]:
    providers = f.software.pynvml_providers
    if len(providers) > 1:
        yield Hit(
            "The pynvml module is installed by " + " and ".join(providers),
            "only one of them is imported; the deprecated `pynvml` (before 12) and `nvidia-ml-py3` "
            "ship old bindings that miss newer NVML calls, and uninstalling one can delete the "
            "other's files",
            _or_repair("pip uninstall -y " + " ".join(p for p in providers if p != "nvidia-ml-py")
                       + " && pip install --force-reinstall nvidia-ml-py"),
        )


@rule("keras.backend_missing", "warning", "Keras is configured for a backend that is not installed")
def keras_backend(f: Facts) -> Iterator[Hit]:
    backend = f.software.keras_backend
    need = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "torch": ("torch",), "jax": ("jax",)}
    if backend in need and not any(p in f.software.packages for p in need[backend]):
        yield Hit(
            f"Keras uses the {backend} backend, which is not installed",
            f"KERAS_BACKEND / ~/.keras/keras.json select {backend!r}; `import keras` will fail",
            _or_repair(f"pip install {need[backend][0]}, or export KERAS_BACKEND to an installed backend"),
        )


# --------------------------------------------------------------------------- host


@rule("python.no_venv", "warning", "Python runs outside a virtual environment")
def no_venv(f: Facts) -> Iterator[Hit]:
    py = f.host.python
    if not py.virtualenv and not py.conda_env:
        yield Hit(
            "Python is not in a virtual environment",
            f"{py.executable} (prefix {py.prefix}); installing frameworks here mixes them with "
            "the system's packages" + (f" (common inside a {f.host.container} container, where the "
                                       "image is the environment)" if f.host.container else ""),
            "python3 -m venv .venv && . .venv/bin/activate, then install the frameworks there",
            severity="info" if f.host.container else None,
        )


@rule("host.shm_small", "warning", "/dev/shm is too small for DataLoader workers")
def shm_small(f: Facts) -> Iterator[Hit]:
    shm = f.host.shm_bytes
    if shm is not None and shm < GiB and f.host.os == "linux":
        where = f" in a {f.host.container} container" if f.host.container else ""
        yield Hit(
            f"/dev/shm is only {shm / 1024**2:.0f} MiB{where}",
            "PyTorch DataLoader workers pass batches through shared memory and die with "
            "'Bus error' or 'unable to write to file </torch_...>' when it fills",
            "docker run --ipc=host (or --shm-size=16g); in Kubernetes mount an emptyDir with "
            "medium: Memory at /dev/shm",
        )


@rule("disk.low_space", "warning", "Little free disk where the project or the model caches live")
def low_disk(f: Facts) -> Iterator[Hit]:
    by_fs: dict[tuple[int | None, int | None], list[str]] = {}
    for d in f.host.disks:
        if d.free_bytes is not None:
            by_fs.setdefault((d.total_bytes, d.free_bytes), []).append(f"{d.purpose} ({d.path})")
    for (_, free), places in by_fs.items():
        if free is None or free >= 20 * GiB:
            continue
        yield Hit(
            f"Only {_gib(free)} free for {', '.join(p.split(' ')[0] for p in places)}",
            "; ".join(places) + ": one 7B model in bf16 is about 15 GiB, checkpoints as much again",
            "Free space, or move the caches to a larger disk: export HF_HOME=/big/disk/hf "
            "TORCH_HOME=/big/disk/torch PIP_CACHE_DIR=/big/disk/pip",
            severity="error" if free < 2 * GiB else None,
        )


_FRAMEWORK_RAM = {"torch": 8, "tensorflow": 8, "tensorflow-cpu": 8, "jax": 8}


@rule("host.low_ram", "warning", "Little RAM for the frameworks installed")
def low_ram(f: Facts) -> Iterator[Hit]:
    mem = f.host.memory
    total = mem.total_bytes
    if total is None:
        return
    if mem.cgroup_limit_bytes:
        total = min(total, mem.cgroup_limit_bytes)
    present = [p for p in _FRAMEWORK_RAM if p in f.software.packages]
    if not present:
        return
    want = max(_FRAMEWORK_RAM[p] for p in present) + 4 * (len(present) - 1)
    if total < want * GiB:
        limit = " (container limit)" if mem.cgroup_limit_bytes and mem.cgroup_limit_bytes == total else ""
        yield Hit(
            f"{_gib(total)} RAM{limit} is little for {', '.join(present)}",
            f"loading a checkpoint needs about twice its size in RAM; with {', '.join(present)} "
            f"installed, plan for at least {want} GiB to train anything beyond toy models",
            "Use a machine or container with more memory, add swap for peaks, and load weights "
            "with mmap (safetensors does)",
        )


@rule("cpu.quota", "info", "A CPU quota limits this container below the visible cores")
def cpu_quota(f: Facts) -> Iterator[Hit]:
    cpu = f.host.cpu
    if cpu.quota_cores and cpu.threads and cpu.quota_cores < cpu.threads:
        n = max(1, int(cpu.quota_cores))
        yield Hit(
            f"CPU quota of {cpu.quota_cores:g} cores, but {cpu.threads} are visible",
            "frameworks size their thread pools by the visible cores and then fight over the quota",
            f"export OMP_NUM_THREADS={n}; use at most {n} DataLoader workers",
        )


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cores(f: Facts) -> int | None:
    """The cores this process may use: the cgroup quota when one is set, else the logical CPUs."""
    cpu = f.host.cpu
    counts = [int(c) for c in (cpu.threads or cpu.cores,) if c]
    if cpu.quota_cores:
        counts.append(max(1, int(cpu.quota_cores)))
    return min(counts) if counts else None


def planned_ranks(f: Facts) -> int | None:
    """Training processes meant for this machine: ``doctor --nproc``, else a launcher's LOCAL_WORLD_SIZE."""
    if f.host.cpu.ranks:
        return f.host.cpu.ranks
    text = f.software.env.get("LOCAL_WORLD_SIZE", "")
    return int(text) if text.isdigit() and int(text) > 0 else None


def threads_fix(cores: int, ranks: int) -> str:
    n = max(1, cores // ranks)
    return f"export OMP_NUM_THREADS={n} MKL_NUM_THREADS={n}" + (f" (cores / {ranks} ranks)" if ranks > 1 else "")


@rule("cpu.overloaded", "warning", "The load average exceeds the usable cores")
def cpu_overloaded(f: Facts) -> Iterator[Hit]:
    load, cores = f.host.cpu.load_average, usable_cores(f)
    if not load or not cores or load[0] <= cores:
        return
    yield Hit(
        f"The CPU is oversubscribed: load {load[0]:.1f} on {cores} usable core(s)",
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min) on {cores} core(s): "
        "runnable threads wait for a core, and OpenMP threads that spin while waiting slow every job down",
        f"Run fewer jobs at once (see `top`), and give each process fewer threads: {threads_fix(cores, 1)}"
        if load[0] <= 2 * cores else
        f"Wait for other jobs or move them; meanwhile run each process with one thread: {threads_fix(1, 1)}",
    )


@rule("cpu.threads_oversubscribed", "warning", "Thread settings ask for more threads than the usable cores")
def threads_oversubscribed(f: Facts) -> Iterator[Hit]:
    cores, ranks = usable_cores(f), planned_ranks(f) or 1
    if not cores:
        return
    for var in THREAD_VARS:
        text = f.software.env.get(var, "").strip()
        if not text.isdigit() or int(text) * ranks <= cores:
            continue
        per = f" x {ranks} ranks = {int(text) * ranks}" if ranks > 1 else ""
        yield Hit(
            f"{var}={text}{per} threads on {cores} usable core(s)",
            f"{var}={text}{per}; usable cores: {cores}"
            + (f" (cgroup quota {f.host.cpu.quota_cores:g})" if f.host.cpu.quota_cores else "")
            + "; each thread pool sized beyond the cores makes threads wait for each other (a step can "
            "run many times slower)",
            threads_fix(cores, ranks),
        )


@rule("cpu.ranks_over_cores", "warning", "More training ranks than cores")
def ranks_over_cores(f: Facts) -> Iterator[Hit]:
    cores, ranks = usable_cores(f), planned_ranks(f)
    if not cores or not ranks or ranks <= cores:
        return
    yield Hit(
        f"{ranks} training ranks on {cores} usable core(s)",
        f"{ranks} ranks ({'--nproc' if f.host.cpu.ranks else 'LOCAL_WORLD_SIZE'}) but {cores} core(s): every "
        "rank needs at least one core for its compute and its collectives",
        f"lmdev train CONFIG --nproc {cores}, and {threads_fix(cores, cores)}",
    )


@rule("host.wsl_memory", "info", "WSL2 gives Linux only part of the Windows RAM")
def wsl_memory(f: Facts) -> Iterator[Hit]:
    if f.host.wsl:
        yield Hit(
            f"Running under WSL2 with {_gib(f.host.memory.total_bytes)} RAM visible",
            "WSL2 gives Linux half of the Windows RAM by default; the GPU driver comes from Windows "
            "(/usr/lib/wsl/lib), so no Linux NVIDIA driver may be installed inside",
            "Raise the limit in %UserProfile%\\.wslconfig ([wsl2] memory=48GB), then `wsl --shutdown`",
        )


@rule("probe.failed", "info", "A probe could not read part of the machine")
def probe_failed(f: Facts) -> Iterator[Hit]:
    for e in f.probe_errors:
        yield Hit(
            f"Could not read {e.collector}",
            e.message,
            "The rest of the report stands. For NVIDIA: check the driver with `nvidia-smi`; "
            "run `lmdev doctor --debug` to see the error in full.",
        )


# --------------------------------------------------------------------------- --deep


@rule("deep.import_failed", "error", "A framework fails to import")
def deep_import(f: Facts) -> Iterator[Hit]:
    for d in f.deep or []:
        if not d.ok:
            yield Hit(
                f"{d.framework} fails to import",
                d.error or "no output",
                f"pip install --force-reinstall {d.framework}; run `python -c 'import {d.framework}'` "
                "to see the full error",
            )


@rule("deep.gpu_not_seen", "error", "A framework sees no GPU on a GPU machine")
def deep_gpu(f: Facts) -> Iterator[Hit]:
    if not _nvidia(f):
        return
    for d in f.deep or []:
        if d.ok and d.cuda_available is False:
            yield Hit(
                f"{d.framework} sees no GPU, but {len(_nvidia(f))} NVIDIA GPU(s) are installed",
                f"{d.framework} {_unknown(d.version)}: devices {', '.join(d.devices) or 'none'}",
                "Check the findings above (CPU-only build, driver too old, CUDA_VISIBLE_DEVICES), "
                f"then reinstall {d.framework} for this driver's CUDA in a fresh virtual environment.",
            )


@rule("deep.op_failed", "error", "A tiny operation fails on a device")
def deep_op(f: Facts) -> Iterator[Hit]:
    for d in f.deep or []:
        for device, result in d.op_results.items():
            if result != "ok":
                yield Hit(
                    f"{d.framework} cannot compute on {device}",
                    result,
                    "A device that imports but cannot run a kernel usually means an architecture "
                    "or driver mismatch: see the findings above",
                )
