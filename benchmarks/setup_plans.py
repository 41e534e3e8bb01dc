"""The plan table of docs/figures/setup-plans.md: what `lmdev setup torch tensorflow jax --dry-run`
chooses for every machine fixture doctor has and every profile of `lmdev setup --for`.

    PYTHONPATH=src python benchmarks/setup_plans.py > table.md
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmdev.probe.collect import collect  # noqa: E402
from lmdev.probe.source import FixtureSource  # noqa: E402
from lmdev.setup.plan import SetupPlan, make_plan  # noqa: E402
from lmdev.setup.profile import PROFILES, MachineProfile, profile_from_facts  # noqa: E402


def profiles() -> dict[str, MachineProfile]:
    out = {p.stem: profile_from_facts(collect(FixtureSource.load(p)))
           for p in sorted((ROOT / "tests" / "fixtures" / "machines").glob("*.json"))}
    out.update(PROFILES)
    return out


def cell(plan: SetupPlan, framework: str) -> str:
    for env in plan.environments:
        if framework in env.backends:
            req = next(r for r in env.requirements if r.name.split("[")[0] in (framework, f"{framework}-cpu")
                       or r.spec.startswith(framework))
            return f"{env.backends[framework]} `{req.spec}`"
    return "-"


def row(name: str, profile: MachineProfile) -> str:
    plan = make_plan(profile, ["torch", "tensorflow", "jax"])
    m = plan.machine
    gpus = ", ".join(f"{g['count']}x {g['name']}" + (f" sm_{g['compute_capability'].replace('.', '')}"
                                                      if g["compute_capability"] else "") for g in m["gpus"]) or "none"
    envs = ", ".join(".venv" + e.suffix for e in plan.environments)
    warnings = "; ".join(plan.warnings).replace("|", "\\|")
    return (f"| {name} | {gpus} | {m['driver'] or '-'} ({m['cuda_driver'] or '-'}) | {cell(plan, 'torch')} | "
            f"{cell(plan, 'tensorflow')} | {cell(plan, 'jax')} | {envs} | {warnings} |")


def main() -> None:
    print("| machine | GPUs | driver (CUDA) | torch | tensorflow | jax | environments | warnings |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, profile in profiles().items():
        print(row(name, profile))


if __name__ == "__main__":
    main()
