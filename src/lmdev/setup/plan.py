"""The setup plan: per framework a backend and versions, each choice with its reason and source.

:func:`make_plan` is a pure function of a :class:`MachineProfile`, the stacks asked for and the
index configuration: the same inputs give the same plan, byte for byte (:meth:`SetupPlan.to_json`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from lmdev.catalog import frameworks as fw
from lmdev.catalog.cuda import (
    arch_name,
    min_cuda_for_arch,
    min_driver_for_cuda,
    version_tuple,
)
from lmdev.errors import LmdevError
from lmdev.setup.config import DEFAULT_TORCH_INDEX
from lmdev.setup.profile import MachineProfile

SCHEMA_VERSION = 1
STACKS = ("torch", "lightning", "keras", "tensorflow", "jax", "hf")
SRC_TORCH = "PyTorch release notes and install matrix (lmdev.catalog.frameworks.TORCH_RELEASES)"
SRC_ARCH = "PyTorch wheel architecture lists (lmdev.catalog.cuda.TORCH_ARCHS)"
SRC_DRIVER = "NVIDIA CUDA Toolkit release notes, Table 3 (lmdev.catalog.cuda.CUDA_MIN_DRIVER)"
SRC_TF = "tensorflow.org/install/source#gpu (lmdev.catalog.frameworks.TENSORFLOW_RELEASES)"
SRC_JAX = "JAX installation guide (lmdev.catalog.frameworks.JAX_CUDA)"


@dataclass
class Choice:
    framework: str
    what: str  # backend, version, environment, keras-backend
    value: str
    reason: str
    source: str


@dataclass
class Requirement:
    name: str  # the distribution
    spec: str  # a PEP 508 requirement: "torch==2.9.*"
    pinned_index: str | None = None  # the only index this package may come from (torch family)


@dataclass
class EnvPlan:
    name: str  # "main", or the framework that needed its own environment
    suffix: str  # "" for the target environment; "-tensorflow" for .venv-tensorflow
    backends: dict[str, str]  # framework -> backend
    requirements: list[Requirement]
    env_vars: dict[str, str] = field(default_factory=dict)  # KERAS_BACKEND


@dataclass
class SetupPlan:
    stacks: list[str]
    python: str
    machine: dict[str, Any]
    environments: list[EnvPlan]
    choices: list[Choice]
    warnings: list[str]
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SetupPlan:
        envs = [EnvPlan(e["name"], e["suffix"], dict(e["backends"]),
                        [Requirement(**r) for r in e["requirements"]], dict(e.get("env_vars", {})))
                for e in d["environments"]]
        return cls(list(d["stacks"]), d["python"], dict(d["machine"]), envs,
                   [Choice(**c) for c in d["choices"]], list(d["warnings"]),
                   d.get("schema_version", SCHEMA_VERSION))


@dataclass
class TorchPick:
    release: fw.TorchRelease
    backend: str  # cpu, cu128, rocm6.4, mps, xpu
    newest: bool  # the newest release and its newest fitting variant: newer releases are accepted
    reason: str
    source: str


class _Planner:
    """Accumulates choices and warnings while the plan is made."""

    def __init__(self, profile: MachineProfile, torch_index: str) -> None:
        self.p = profile
        self.torch_index = torch_index
        self.choices: list[Choice] = []
        self.warnings: list[str] = []

    def choose(self, framework: str, what: str, value: str, reason: str, source: str) -> str:
        self.choices.append(Choice(framework, what, value, reason, source))
        return value

    def nvidia(self) -> list[str]:
        return [g.compute_capability for g in self.p.gpus
                if g.vendor == "nvidia" and g.compute_capability]

    def gpu_label(self) -> str:
        return ", ".join(f"{g.count}x {g.name}" + (f" (sm_{g.compute_capability.replace('.', '')})"
                                                   if g.compute_capability else "")
                         for g in self.p.gpus)


def normalise_stacks(stacks: list[str] | None) -> list[str]:
    """The stacks asked for, checked and in canonical order; none means ``torch``."""
    wanted = [s.strip().lower() for s in (stacks or ["torch"]) if s.strip()]
    unknown = [s for s in wanted if s not in STACKS]
    if unknown:
        raise LmdevError(f"unknown stack {unknown[0]!r}", "choose from " + ", ".join(STACKS))
    return [s for s in STACKS if s in wanted] or ["torch"]


def keras_backend_for(stacks: list[str]) -> str:
    return "tensorflow" if "tensorflow" in stacks else "jax" if "jax" in stacks else "torch"


def make_plan(profile: MachineProfile, stacks: list[str] | None = None,
              torch_index: str = DEFAULT_TORCH_INDEX) -> SetupPlan:
    """The plan for ``stacks`` on the machine ``profile`` describes."""
    stacks = normalise_stacks(stacks)
    pl = _Planner(profile, torch_index)
    if profile.os == "linux" and profile.glibc and version_tuple(profile.glibc)[:2] < (2, 28):
        pl.warnings.append(f"glibc {profile.glibc}: current PyTorch, TensorFlow and JAX wheels are "
                           "manylinux_2_28 (glibc 2.28+) and will not resolve here; upgrade the OS or "
                           "work in a container (`lmdev setup export --dockerfile`)")
    keras_backend = keras_backend_for(stacks) if "keras" in stacks else None
    frameworks = _frameworks(stacks, keras_backend)
    tf = _plan_tensorflow(pl) if "tensorflow" in frameworks else None
    tf_gpu = bool(tf and tf[1] != "cpu")
    jax = _plan_jax(pl, max_major=12 if tf_gpu else None) if "jax" in frameworks else None
    torch = None
    if "torch" in frameworks:
        cap = 12 if tf_gpu or (jax and jax[1] == "cuda12") else None
        torch = _plan_torch(pl, cap)
    envs = _environments(pl, stacks, keras_backend, torch, tf, jax)
    return SetupPlan(stacks, profile.python, profile.to_dict(), envs, pl.choices, pl.warnings)


def _frameworks(stacks: list[str], keras_backend: str | None) -> list[str]:
    out = []
    if any(s in fw.NEEDS_TORCH for s in stacks) or keras_backend == "torch":
        out.append("torch")
    if "tensorflow" in stacks:
        out.append("tensorflow")
    if "jax" in stacks:
        out.append("jax")
    return out


# --------------------------------------------------------------------------- PyTorch


def _plan_torch(pl: _Planner, max_major: int | None) -> TorchPick:
    pick = _pick_torch(pl, max_major)
    pl.choose("torch", "backend", pick.backend, pick.reason, pick.source)
    series = ".".join(pick.release.version.split(".")[:2])
    pl.choose("torch", "version", f">={pick.release.version}" if pick.newest else f"=={series}.*",
              (f"the newest release with a {pick.backend} build for Python {pl.p.python}; a newer "
               "release on the index is accepted" if pick.newest else
               f"{pick.release.version} is the newest release whose {pick.backend} build fits this "
               f"machine; later releases dropped what it needs")
              + f"; torchvision {pick.release.torchvision} and triton {pick.release.triton} pair "
              "with it (torchvision's metadata pins torch exactly)", SRC_TORCH)
    return pick


def _releases_for_python(pl: _Planner) -> list[fw.TorchRelease]:
    releases = [r for r in fw.TORCH_RELEASES if fw.python_supported(pl.p.python, r.python)]
    if not releases:
        raise LmdevError(f"no PyTorch release in lmdev's catalog has wheels for Python {pl.p.python}",
                         "choose a supported Python with --python (3.10 to 3.13)")
    return releases


def _pick_torch(pl: _Planner, max_major: int | None) -> TorchPick:
    p, releases = pl.p, _releases_for_python(pl)
    if p.backend:
        return _forced_torch(pl, releases)
    vendors = p.vendors()
    if "nvidia" in vendors and p.os in ("linux", "windows"):
        return _cuda_torch(pl, releases, max_major)
    if "amd" in vendors and p.os == "linux" and not p.wsl:
        return _rocm_torch(pl, releases)
    if p.os == "darwin" and p.arch == "arm64":
        return TorchPick(releases[0], "mps", True, "Apple silicon: PyPI's macOS arm64 wheels include "
                         "the MPS backend", SRC_TORCH)
    if "intel" in vendors and p.os in ("linux", "windows"):
        return TorchPick(releases[0], "xpu", True, f"Intel GPU ({pl.gpu_label()}): the xpu wheels "
                         "carry SYCL kernels for Arc and Data Center GPU Max", SRC_TORCH)
    why = "no GPU found" if not p.gpus else f"no GPU build of PyTorch for {pl.gpu_label()} on {p.os}"
    return TorchPick(releases[0], "cpu", True, why + ": the CPU build (no CUDA libraries to download)",
                     SRC_TORCH)


def _forced_torch(pl: _Planner, releases: list[fw.TorchRelease]) -> TorchPick:
    b = pl.p.backend or "cpu"
    for r in releases:
        offered = (b in ("cpu", "mps") or (b == "xpu" and r.xpu)
                   or b in {fw.variant_tag("cuda", c) for c in r.cuda}
                   or b in {fw.variant_tag("rocm", v) for v in r.rocm})
        if offered:
            return TorchPick(r, b, r is releases[0], f"requested with --for {b}", SRC_TORCH)
    raise LmdevError(f"no PyTorch release in lmdev's catalog publishes a {b} build for Python "
                     f"{pl.p.python}", "choose another backend or Python")


def _cuda_torch(pl: _Planner, releases: list[fw.TorchRelease], max_major: int | None) -> TorchPick:
    p, ccs = pl.p, pl.nvidia()
    if not p.cuda_driver:
        pl.warnings.append(f"NVIDIA GPU(s) ({pl.gpu_label()}) but no working driver: install the "
                           "NVIDIA driver, then run `lmdev setup --repair`")
        return TorchPick(releases[0], "cpu", True, "no NVIDIA driver answers: the CPU build until one "
                         "is installed", SRC_DRIVER)
    have = version_tuple(p.cuda_driver)[:2]
    too_new = [cc for cc in ccs if version_tuple(min_cuda_for_arch(cc))[:2] > have]
    if too_new:
        need = min_driver_for_cuda(min_cuda_for_arch(too_new[0]))
        pl.warnings.append(f"driver {p.driver} (CUDA {p.cuda_driver}) predates sm_"
                           f"{too_new[0].replace('.', '')} ({arch_name(too_new[0])}): upgrade the "
                           f"driver to {need} or newer, then run `lmdev setup --repair`")
        return TorchPick(releases[0], "cpu", True, f"no CUDA build runs on this GPU with driver "
                         f"{p.driver}: the CPU build until the driver is upgraded", SRC_DRIVER)
    build = fw.torch_cuda_build(p.cuda_driver, ccs, releases, p.arch, max_major)
    if build is None:
        pl.warnings.append(f"no PyTorch CUDA build in the catalog runs on {pl.gpu_label()} with driver "
                           f"{p.driver}: using the CPU build")
        return TorchPick(releases[0], "cpu", True, "no CUDA build fits both the driver and the GPUs",
                         f"{SRC_DRIVER}; {SRC_ARCH}")
    if build.compat_only:
        rel, cuda = build.compat_only
        pl.warnings.append(f"driver {p.driver} runs CUDA up to {p.cuda_driver}: torch {rel.version}'s "
                           f"cu{cuda.replace('.', '')} build would run only through CUDA minor-version "
                           f"compatibility (Triton/torch.compile kernels can fail), so torch "
                           f"{build.release.version} ({build.tag}) is planned; upgrade the driver to "
                           f"{min_driver_for_cuda(cuda)} or newer for torch {rel.version}, then run "
                           "`lmdev setup --upgrade`")
    return TorchPick(build.release, build.tag, build.newest,
                     _cuda_reason(pl, build.cuda, fw.torch_archs(build.release, build.cuda), max_major),
                     f"{SRC_DRIVER}; {SRC_ARCH}")


def _cuda_reason(pl: _Planner, cuda: str, archs: list[str], max_major: int | None) -> str:
    ccs = sorted(set(pl.nvidia()))
    text = (f"driver {pl.p.driver} supports CUDA up to {pl.p.cuda_driver} (CUDA {cuda} needs "
            f"{min_driver_for_cuda(cuda)}+); the cu{cuda.replace('.', '')} build carries code for "
            + ", ".join(f"sm_{cc.replace('.', '')}" for cc in ccs)
            + f" (its list: {', '.join(archs)}); newer CUDA builds were skipped where the driver or "
            "the architecture list rules them out")
    if max_major:
        text += f"; CUDA {max_major} kept so the other frameworks share one CUDA major"
    return text


def _rocm_torch(pl: _Planner, releases: list[fw.TorchRelease]) -> TorchPick:
    gfx = sorted({fw.amd_gfx(g.name) or "unknown" for g in pl.p.gpus if g.vendor == "amd"})
    for r in releases:
        for rocm in reversed(r.rocm):
            if all(x in fw.rocm_archs(rocm) for x in gfx):
                return TorchPick(r, fw.variant_tag("rocm", rocm), r is releases[0],
                                 f"AMD GPU(s) {pl.gpu_label()} ({', '.join(gfx)}): the ROCm {rocm} "
                                 f"build carries {', '.join(gfx)}",
                                 "PyTorch ROCm builder arch list (lmdev.catalog.frameworks.ROCM_ARCHS)")
    pl.warnings.append(f"no PyTorch ROCm build in the catalog lists {', '.join(gfx)}: using the CPU build")
    return TorchPick(releases[0], "cpu", True, "no ROCm build carries this GPU's target", SRC_TORCH)


# --------------------------------------------------------------------------- TensorFlow, JAX


def _plan_tensorflow(pl: _Planner) -> tuple[fw.TensorflowRelease, str]:
    p = pl.p
    rels = [r for r in fw.TENSORFLOW_RELEASES if fw.python_supported(p.python, r.python)]
    if not rels:
        raise LmdevError(f"no TensorFlow release in lmdev's catalog supports Python {p.python}",
                         "choose Python 3.10 to 3.13 with --python")
    r, ccs = rels[0], pl.nvidia()
    gpu_ok = (p.os == "linux" and ccs and p.cuda_driver and version_tuple(p.cuda_driver)[0] >= 12
              and all(version_tuple(cc) >= version_tuple(r.min_cc) for cc in ccs))
    if p.backend:
        gpu_ok = p.backend.startswith("cu")
    if gpu_ok:
        pl.choose("tensorflow", "backend", "cu12", f"tensorflow[and-cuda] {r.version} brings CUDA "
                  f"{r.cuda} and cuDNN {r.cudnn} as nvidia-*-cu12 wheels; the driver runs CUDA 12 and "
                  f"every GPU is sm_{r.min_cc.replace('.', '')} or newer", SRC_TF)
        return r, "cu12"
    why = ("no NVIDIA GPU" if not ccs else "GPU builds are Linux/WSL2 only since 2.11"
           if p.os != "linux" else "the driver or a GPU is too old for its CUDA 12 build")
    pl.choose("tensorflow", "backend", "cpu", f"{why}: TensorFlow {r.version} on the CPU", SRC_TF)
    return r, "cpu"


def _plan_jax(pl: _Planner, max_major: int | None) -> tuple[str, str]:
    p, ccs = pl.p, pl.nvidia()
    if (p.os == "linux" and ccs and p.driver and not p.backend) or (p.backend or "").startswith("cu"):
        for j in fw.JAX_CUDA:
            if max_major and j.cuda_major > max_major:
                continue
            if (p.driver and version_tuple(p.driver) < version_tuple(j.min_driver)) or \
                    any(version_tuple(cc) < version_tuple(j.min_cc) for cc in ccs):
                continue
            if j.cuda_major == 13 and p.backend and not p.backend.startswith("cu13"):
                continue
            pl.choose("jax", "backend", j.extra, f"jax[{j.extra}]: the driver ({p.driver or 'any'}) "
                      f"meets {j.min_driver} and every GPU is sm_{j.min_cc.replace('.', '')}+", SRC_JAX)
            return fw.JAX_VERSION, j.extra
    pl.choose("jax", "backend", "cpu", "no NVIDIA GPU on Linux with a CUDA 12/13 driver: CPU JAX",
              SRC_JAX)
    return fw.JAX_VERSION, "cpu"


# --------------------------------------------------------------------------- environments


def _torch_reqs(pl: _Planner, pick: TorchPick) -> list[Requirement]:
    r = pick.release
    index = None if pick.backend == "mps" else pl.torch_index.replace("{backend}", pick.backend)
    if pick.newest:
        return [Requirement("torch", f"torch>={r.version}", index),
                Requirement("torchvision", "torchvision", index)]
    series = ".".join(r.version.split(".")[:2])
    tv = ".".join(r.torchvision.split(".")[:2])
    return [Requirement("torch", f"torch=={series}.*", index),
            Requirement("torchvision", f"torchvision=={tv}.*", index)]


def _environments(pl: _Planner, stacks: list[str], keras_backend: str | None,
                  torch: TorchPick | None, tf: tuple[fw.TensorflowRelease, str] | None,
                  jax: tuple[str, str] | None) -> list[EnvPlan]:
    main = EnvPlan("main", "", {}, [])
    separate: list[EnvPlan] = []
    if torch:
        main.backends["torch"] = torch.backend
        main.requirements += _torch_reqs(pl, torch)
    if tf:
        rel, backend = tf
        env = _separate_or_main(pl, main, separate, "tensorflow",
                                torch if backend != "cpu" else None, rel.cudnn)
        env.backends["tensorflow"] = backend
        name = "tensorflow[and-cuda]" if backend != "cpu" else (
            "tensorflow-cpu" if pl.p.os == "linux" and pl.p.arch == "x86_64" else "tensorflow")
        env.requirements.append(Requirement(name.split("[")[0], f"{name}=={rel.version.rsplit('.', 1)[0]}.*"))
    if jax:
        series, backend = jax
        env = _separate_or_main(pl, main, separate, "jax", torch if backend != "cpu" else None,
                                next(j.cudnn for j in fw.JAX_CUDA if j.extra == backend)
                                if backend != "cpu" else None, minimum=True)
        env.backends["jax"] = backend
        env.requirements.append(Requirement("jax", f"jax[{backend}]=={series}.*" if backend != "cpu"
                                            else f"jax=={series}.*"))
    _add_libraries(pl, stacks, keras_backend, main, separate)
    return [main, *separate]


def _separate_or_main(pl: _Planner, main: EnvPlan, separate: list[EnvPlan], framework: str,
                      torch: TorchPick | None, cudnn: str | None, minimum: bool = False) -> EnvPlan:
    """The environment ``framework`` goes in: the main one unless its cuDNN disagrees with torch's."""
    if torch and cudnn and torch.backend.startswith("cu"):
        have = version_tuple(torch.release.cudnn)
        clash = have < version_tuple(cudnn) if minimum else have != version_tuple(cudnn)
        if clash:
            env = EnvPlan(framework, f"-{framework}", {}, [])
            separate.append(env)
            pl.choose(framework, "environment", f".venv-{framework}",
                      f"torch {torch.release.version} pins nvidia-cudnn {torch.release.cudnn}; "
                      f"{framework} needs cuDNN {'>=' if minimum else '=='}{cudnn}: one environment "
                      "cannot hold both, so it gets its own", f"{SRC_TORCH}; {SRC_TF if framework == 'tensorflow' else SRC_JAX}")
            return env
    return main


def _add_libraries(pl: _Planner, stacks: list[str], keras_backend: str | None, main: EnvPlan,
                   separate: list[EnvPlan]) -> None:
    for stack in ("lightning", "hf"):
        if stack in stacks:
            main.requirements += [Requirement(s.split(">")[0].split("=")[0], s)
                                  for s in fw.STACK_PACKAGES[stack]]
    if keras_backend:
        env = next((e for e in [main, *separate] if keras_backend in e.backends), main)
        env.requirements.append(Requirement("keras", "keras>=3"))
        env.env_vars["KERAS_BACKEND"] = keras_backend
        pl.choose("keras", "keras-backend", keras_backend,
                  f"Keras 3 runs on {keras_backend}, the framework this setup installs with it "
                  "(KERAS_BACKEND is set for verification; export it in your shell)",
                  "keras.io/getting_started")
