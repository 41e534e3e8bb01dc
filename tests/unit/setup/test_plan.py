"""The planner over every machine doctor has a fixture for and the extra profiles of the issue:
golden plans (byte for byte), and each chosen build checked against the compatibility data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmdev.catalog.cuda import arch_supported, version_tuple
from lmdev.catalog.frameworks import TORCH_RELEASES, torch_archs
from lmdev.errors import LmdevError
from lmdev.probe.collect import collect
from lmdev.probe.source import FixtureSource
from lmdev.setup.plan import SetupPlan, make_plan
from lmdev.setup.profile import (
    PROFILES,
    MachineProfile,
    named_profile,
    profile_from_facts,
)

ROOT = Path(__file__).resolve().parents[3]
MACHINES = sorted((ROOT / "tests" / "fixtures" / "machines").glob("*.json"))
GOLDEN = Path(__file__).parent / "golden"
STACKS = {"torch": ["torch"], "all": ["torch", "keras", "tensorflow", "jax", "hf"]}


def fixture_profile(path: Path) -> MachineProfile:
    return profile_from_facts(collect(FixtureSource.load(path)))


def all_profiles() -> dict[str, MachineProfile]:
    out = {p.stem: fixture_profile(p) for p in MACHINES}
    out.update(PROFILES)
    return out


PROFILE_NAMES = sorted(all_profiles())


def torch_backend(plan: SetupPlan) -> str:
    return next(e.backends["torch"] for e in plan.environments if "torch" in e.backends)


@pytest.mark.parametrize("stacks", sorted(STACKS))
@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_golden_plan(name, stacks):
    """The plan for each machine is the recorded one, byte for byte (regenerate with
    LMDEV_REGEN_GOLDEN=1 after a deliberate catalog change, and review the diff)."""
    profile = all_profiles()[name]
    text = make_plan(profile, STACKS[stacks]).to_json()
    assert make_plan(profile, STACKS[stacks]).to_json() == text  # deterministic
    golden = GOLDEN / f"{name}.{stacks}.json"
    if os.environ.get("LMDEV_REGEN_GOLDEN"):
        golden.write_text(text)
    assert golden.read_text() == text


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_cuda_choice_fits_driver_and_every_gpu(name):
    profile = all_profiles()[name]
    plan = make_plan(profile, ["torch"])
    backend = torch_backend(plan)
    if not backend.startswith("cu"):
        return
    cuda = f"{backend[2:-1]}.{backend[-1]}"
    assert version_tuple(cuda)[:2] <= version_tuple(profile.cuda_driver)[:2], "driver must run the runtime"
    spec = plan.environments[0].requirements[0].spec
    release = next(r for r in TORCH_RELEASES if spec.endswith(r.version) or spec == f"torch=={r.version.rsplit('.', 1)[0]}.*")
    for g in profile.gpus:
        if g.vendor == "nvidia":
            assert arch_supported(g.compute_capability, torch_archs(release, cuda)), (g, backend)


def test_gtx1080ti_with_driver_570_never_gets_a_build_without_sm61():
    plan = make_plan(PROFILES["gtx1080ti"], ["torch"])
    assert torch_backend(plan) == "cu126"  # cu128 (which uv's auto picks from the driver) lacks sm_61
    assert plan.environments[0].requirements[0].spec == "torch==2.9.*"
    assert "sm_61" in plan.choices[0].reason


def test_rtx5090_needs_cu128_and_a_570_driver():
    assert torch_backend(make_plan(PROFILES["rtx5090"], ["torch"])) in ("cu128", "cu129", "cu130")
    old = make_plan(PROFILES["rtx5090-driver560"], ["torch"])
    assert torch_backend(old) == "cpu"
    assert any("570.26" in w and "--repair" in w for w in old.warnings)


def test_h100_with_driver_535_gets_a_build_its_driver_runs_outright():
    plan = make_plan(PROFILES["h100-driver535"], ["torch"])
    assert torch_backend(plan) == "cu118"
    assert plan.environments[0].requirements[0].spec == "torch==2.7.*"


def test_other_vendors_and_platforms():
    assert torch_backend(make_plan(PROFILES["mi300x"], ["torch"])) == "rocm6.4"
    m2 = make_plan(PROFILES["m2"], ["torch"])
    assert torch_backend(m2) == "mps" and m2.environments[0].requirements[0].pinned_index is None
    assert torch_backend(make_plan(PROFILES["wsl2"], ["torch"])) == "cu128"
    assert torch_backend(make_plan(PROFILES["cpu-only"], ["torch"])) == "cpu"
    assert torch_backend(make_plan(PROFILES["gh200"], ["torch"])) == "cu128"
    assert torch_backend(make_plan(PROFILES["arc-a770"], ["torch"])) == "xpu"


def test_tensorflow_and_torch_on_gpu_get_separate_environments_when_cudnn_pins_clash():
    plan = make_plan(fixture_profile(ROOT / "tests/fixtures/machines/rtx4090-cpu-torch.json"),
                     ["torch", "tensorflow"])
    assert [e.name for e in plan.environments] == ["main", "tensorflow"]
    assert plan.environments[1].suffix == "-tensorflow"
    assert any(c.what == "environment" and "cuDNN" in c.reason for c in plan.choices)
    # one CUDA major across the frameworks
    assert torch_backend(plan).startswith("cu12")


def test_frameworks_share_one_environment_on_cpu_with_keras_on_its_backend():
    plan = make_plan(PROFILES["cpu-only"], ["keras", "jax"])
    [env] = plan.environments
    assert env.env_vars == {"KERAS_BACKEND": "jax"} and set(env.backends) == {"jax"}


def test_bad_input_is_an_lmdev_error():
    with pytest.raises(LmdevError, match="unknown stack"):
        make_plan(PROFILES["cpu-only"], ["pytorch-nightly"])
    with pytest.raises(LmdevError, match="Python 3.8"):
        make_plan(PROFILES["cpu-only"].with_python("3.8"), ["torch"])
    with pytest.raises(LmdevError, match="unknown profile"):
        named_profile("cu999", "3.11")


def test_forced_backend_profile():
    plan = make_plan(named_profile("cu118", "3.12"), ["torch"])
    assert torch_backend(plan) == "cu118"
    assert plan.environments[0].requirements[0].spec == "torch==2.7.*"


def test_plan_round_trips_through_json():
    plan = make_plan(PROFILES["gtx1080ti"], ["torch", "keras"])
    import json

    assert SetupPlan.from_dict(json.loads(plan.to_json())).to_json() == plan.to_json()


def test_every_plan_matches_the_documented_schema():
    import json

    import jsonschema

    schema = json.loads((ROOT / "docs" / "schemas" / "setup-plan.schema.json").read_text())
    for profile in all_profiles().values():
        for stacks in STACKS.values():
            jsonschema.validate(json.loads(make_plan(profile, stacks).to_json()), schema)


def test_an_old_glibc_is_named_before_the_resolver_fails():
    import dataclasses

    plan = make_plan(dataclasses.replace(PROFILES["cpu-only"], glibc="2.17"), ["torch"])
    assert any("glibc 2.17" in w and "manylinux_2_28" in w for w in plan.warnings)
    assert not make_plan(dataclasses.replace(PROFILES["cpu-only"], glibc="2.35"), ["torch"]).warnings
