"""``lmdev setup --repair``: take doctor's findings about the environment and apply the smallest
change that fixes each (re-plan the frameworks that are installed, re-install what differs from the
plan's resolution, remove clashing duplicates), then re-run doctor and the verification."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmdev.diagnose.types import Finding
from lmdev.setup import installer as inst
from lmdev.setup.lock import normalise

# Findings that a re-planned install of the frameworks fixes.
REPLAN = {"torch.cpu_build_on_gpu", "torch.cuda_newer_than_driver", "torch.arch_not_compiled",
          "torch.companion_mismatch", "cuda.framework_major_mismatch", "keras.backend_missing",
          "nccl.missing", "deep.op_failed", "deep.no_gpu", "deep.import_failed"}
# Distributions that shadow nvidia-ml-py's pynvml module (doctor's nvml.pynvml_clash).
PYNVML_IMPOSTORS = ("pynvml", "nvidia-ml-py3")
REPAIRABLE = REPLAN | {"nvml.pynvml_clash"}


@dataclass
class RepairPlan:
    findings: list[Finding]
    stacks: list[str]
    uninstall: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return bool(self.findings or self.uninstall)


def stacks_installed(packages: dict[str, str]) -> list[str]:
    """The setup stacks an environment already holds (torch when none)."""
    marks = {"torch": "torch", "lightning": "lightning", "keras": "keras", "tensorflow": "tensorflow",
             "tensorflow-cpu": "tensorflow", "jax": "jax", "transformers": "hf"}
    found = {stack for pkg, stack in marks.items() if pkg in packages}
    return sorted(found) or ["torch"]


def duplicate_nccl(packages: dict[str, str], torch_cuda_major: int | None) -> list[str]:
    """nvidia-nccl wheels beyond the one torch's CUDA major needs (two load different libnccl)."""
    nccl = sorted(p for p in packages if p.startswith("nvidia-nccl"))
    if len(nccl) < 2:
        return []
    keep = f"nvidia-nccl-cu{torch_cuda_major}" if torch_cuda_major else nccl[-1]
    return [p for p in nccl if p != keep]


def plan_repair(findings: list[Finding], prefix: Path, torch_cuda_major: int | None) -> RepairPlan:
    packages = {normalise(k): v for k, v in inst.installed(prefix).items()}
    fixable = [f for f in findings if f.id in REPAIRABLE]
    uninstall = []
    if any(f.id == "nvml.pynvml_clash" for f in fixable):
        uninstall += [p for p in PYNVML_IMPOSTORS if p in packages]
    uninstall += duplicate_nccl(packages, torch_cuda_major)
    return RepairPlan(fixable, stacks_installed(packages), sorted(set(uninstall)))


def uninstall(installer: str, target: inst.Target, names: list[str]) -> None:
    if not names:
        return
    if installer == "uv":
        cmd = [inst.uv_binary(), "pip", "uninstall", "--no-config", "--quiet", "--python", target.python, *names]
    else:
        import sys

        cmd = [sys.executable, "-m", "pip", "--python", target.python, "uninstall", "--yes", "--quiet", *names]
    inst.run_tool(cmd, "uninstalling " + " ".join(names))


def env_source(prefix: Path):  # -> LocalSource reading ``prefix``'s packages
    """Doctor's source for this machine with the software of the environment at ``prefix`` (which
    may not be the one lmdev runs in)."""
    import os

    from lmdev.probe.source import Distribution, LocalSource
    from lmdev.probe.types import PythonFacts

    class EnvSource(LocalSource):
        def __init__(self) -> None:
            super().__init__()
            from lmdev.setup.engine import venv_python_version

            self.python = PythonFacts(version=venv_python_version(prefix) or self.python.version,
                                      executable=str(prefix / "bin" / "python"), prefix=str(prefix),
                                      virtualenv=str(prefix))
            self._by_name: dict[str, Distribution] = {}
            for sp in inst.site_packages(prefix):
                for entry in sorted(os.listdir(sp)):
                    if entry.endswith(".dist-info"):
                        name, _, version = entry[: -len(".dist-info")].partition("-")
                        self._by_name.setdefault(normalise(name), Distribution(normalise(name), version, str(sp / entry)))

        def distributions(self) -> list[Distribution]:
            return list(self._by_name.values())

        def package_file(self, dist: str, relative: str) -> str | None:
            d = self._by_name.get(normalise(dist))
            return self.read_text(os.path.join(os.path.dirname(d.path), relative)) if d and d.path else None

        def dist_files(self, dist: str) -> list[str] | None:
            d = self._by_name.get(normalise(dist))
            record = self.read_text(os.path.join(d.path, "RECORD")) if d and d.path else None
            return [ln.split(",")[0] for ln in record.splitlines() if ln.strip()] if record else None

    return EnvSource()
