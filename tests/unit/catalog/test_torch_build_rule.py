"""The one rule "which PyTorch CUDA build for this driver and these GPUs" (lmdev.catalog.frameworks),
read by doctor's fix lines and by `lmdev setup`'s planner: the boundary drivers, and the two always
agree."""

from __future__ import annotations

import dataclasses

import pytest

from lmdev.catalog.cuda import CUDA_MIN_DRIVER, arch_supported, max_cuda_for_driver, torch_arch_list, version_tuple
from lmdev.catalog.frameworks import TORCH_RELEASES, torch_cuda_build, torch_wheel_for
from lmdev.diagnose.rules import RULES
from lmdev.probe.types import AcceleratorFacts, Facts, GpuFacts, SoftwareFacts, TorchBuild
from lmdev.setup.plan import make_plan
from lmdev.setup.profile import PROFILES


@pytest.mark.parametrize("driver_cuda, ccs, variant", [
    ("12.6", ["8.9"], "cu126"),
    ("13.0", ["12.0"], "cu130"),
    ("12.8", ["12.0"], "cu128"),
    ("12.8", ["6.1"], "cu126"),  # Pascal left the cu128 wheels
    (None, ["7.0"], "cu128"),  # Volta left the cu130 wheels; torch 2.9.1's newest that has it
    (None, ["8.0", "9.0"], "cu130"),
    (None, ["3.5"], None),  # Kepler: no current wheel at all
    ("12.4", ["12.0"], None),  # an RTX 5090 needs a 570+ driver first
])
def test_torch_wheel_for(driver_cuda, ccs, variant):
    assert torch_wheel_for(driver_cuda, ccs) == variant


# every boundary of CUDA_MIN_DRIVER from 11.8 on: (driver, its CUDA, the torch and build for an H100)
BOUNDARIES = [
    ("520.61.05", "11.8", "2.7.1", "cu118"),
    ("525.60.13", "12.0", "2.7.1", "cu118"),
    ("530.30.02", "12.1", "2.7.1", "cu118"),
    ("535.54.03", "12.2", "2.7.1", "cu118"),
    ("545.23.06", "12.3", "2.7.1", "cu118"),
    ("550.54.14", "12.4", "2.7.1", "cu118"),
    ("555.42.02", "12.5", "2.7.1", "cu118"),
    ("560.28.03", "12.6", "2.9.1", "cu126"),
    ("570.26", "12.8", "2.9.1", "cu128"),
    ("575.51.03", "12.9", "2.9.1", "cu128"),  # 2.9 has no cu129: its cu128 beats 2.8's cu129
    ("580.65.06", "13.0", "2.9.1", "cu130"),
]


@pytest.mark.parametrize("driver, cuda, torch, variant", BOUNDARIES)
def test_boundary_drivers_get_a_build_they_run_outright(driver, cuda, torch, variant):
    assert max_cuda_for_driver(driver) == cuda
    build = torch_cuda_build(cuda, ["9.0"])
    assert (build.release.version, build.tag) == (torch, variant)
    assert version_tuple(build.cuda) <= version_tuple(cuda)  # never minor-version compatibility
    assert arch_supported("9.0", torch_arch_list(build.cuda))
    # one driver version below the boundary: the build of the CUDA before it
    below = max_cuda_for_driver(driver[:-1] + str(int(driver[-1]) - 1)) if driver[-1] != "0" else None
    if below and below != cuda:
        lower = torch_cuda_build(below, ["9.0"])
        assert lower is None or version_tuple(lower.cuda) <= version_tuple(below)


def test_a_12_4_driver_names_the_newer_build_it_could_run_only_through_minor_compatibility():
    build = torch_cuda_build("12.4", ["9.0"])
    assert build.tag == "cu118" and build.compat_only == (TORCH_RELEASES[0], "12.6")
    plan = make_plan(dataclasses.replace(PROFILES["h100-driver535"]), ["torch"])
    assert any("minor-version compatibility" in w and "560.28.03" in w for w in plan.warnings)


def _doctor_fix(driver: str, cuda: str, cc: str) -> str:
    facts = Facts(accelerators=AcceleratorFacts(driver_version=driver, cuda_driver_version=cuda,
                                                gpus=[GpuFacts(index=0, name="GPU", vendor="nvidia",
                                                               compute_capability=cc)]),
                  software=SoftwareFacts(torch=TorchBuild(version="2.9.1+cpu", cpu_only=True)))
    rule = next(r for r in RULES if r.id == "torch.cpu_build_on_gpu")
    [hit] = list(rule.check(facts))
    return hit.fix


@pytest.mark.parametrize("cc", ["6.1", "7.0", "8.0", "8.9", "9.0", "12.0"])
@pytest.mark.parametrize("driver, cuda", [(d, c) for c, d in CUDA_MIN_DRIVER if version_tuple(c) >= (11, 8)])
def test_doctor_and_setup_choose_the_same_build(driver, cuda, cc):
    profile = dataclasses.replace(PROFILES["h100-driver535"], driver=driver, cuda_driver=cuda,
                                  gpus=(dataclasses.replace(PROFILES["h100-driver535"].gpus[0], compute_capability=cc),))
    planned = make_plan(profile, ["torch"]).environments[0].backends["torch"]
    doctor = torch_wheel_for(cuda, [cc])
    assert planned == (doctor or "cpu")
    fix = _doctor_fix(driver, cuda, cc)
    if doctor:
        assert f"/whl/{doctor}" in fix
    else:
        assert "upgrade the NVIDIA driver" in fix
