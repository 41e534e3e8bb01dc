"""The files ``lmdev init`` writes: a pyproject with the stack, a starter training config, a script
that logs to the run store, a .gitignore and a README. The lock comes from ``lmdev setup``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lmdev.catalog.frameworks import STACK_PACKAGES
from lmdev.errors import LmdevError
from lmdev.fsutil import atomic_write_text
from lmdev.setup.plan import keras_backend_for, normalise_stacks

TRAIN_CONFIG = """\
# A starter config for `lmdev train train.yaml`: an MLP on scikit-learn's bundled digits.
name: {name}-mlp
seed: 0
model: {{type: mlp, hidden: [128, 64], activation: relu}}
data: {{type: digits, batch_size: 64, val_fraction: 0.2}}
loss: cross_entropy
optimizer: {{type: sgd, lr: 0.1}}
train: {{max_steps: 500, eval_every: 100, log_every: 10}}
checkpoint: {{every: 100, keep: 3}}
precision: auto        # fp32 | bf16 | fp16 | auto
device: auto           # auto | cpu | cuda | cuda:N | mps
"""

TRAIN_SCRIPT = '''\
"""A starter training script that logs to lmdev's run store (./.lmdev); see `lmdev runs list`."""

import lmdev
import numpy as np


def main(steps: int = 200, lr: float = 0.1) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8))
    true_w = rng.normal(size=8)
    y = x @ true_w + 0.1 * rng.normal(size=512)
    w = np.zeros(8)
    with lmdev.init(name="{name}-starter", project="{name}", config={{"lr": lr, "steps": steps}}) as run:
        for step in range(steps):
            grad = 2 * x.T @ (x @ w - y) / len(y)
            w -= lr * grad
            run.log({{"train/loss": float(np.mean((x @ w - y) ** 2))}}, step=step)


if __name__ == "__main__":
    main()
'''

README = """\
# {name}

Created by `lmdev init` with the stack: {stacks}.

```bash
lmdev setup                 # (re)create .venv from the plan for this machine, lock it, verify it
lmdev setup --frozen        # install exactly pylock.toml (hashes checked)
lmdev setup --verify        # check the environment on every device
lmdev train train.yaml      # train the starter config, tracked in .lmdev/
python train.py             # the starter script (needs lmdev in the environment)
lmdev runs list             # what was recorded
lmdev setup export --dockerfile -o Dockerfile
```

`pylock.toml` is the lock (PEP 751) and `setup-plan.json` the plan it came from: commit both.
"""

GITIGNORE = ".venv/\n.venv-*/\n.lmdev/\n__pycache__/\n*.pyc\n"


def project_name(folder: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip("-._").lower()
    return name or "project"


def dependencies(stacks: list[str]) -> list[str]:
    """The project's dependencies (names only: the build and versions are setup's, in the lock)."""
    deps: list[str] = []
    if {"torch", "lightning", "hf"} & set(stacks) or ("keras" in stacks and keras_backend_for(stacks) == "torch"):
        deps += list(STACK_PACKAGES["torch"])
    for stack in stacks:
        deps += [d for d in STACK_PACKAGES[stack] if d not in deps]
    return deps


def pyproject(name: str, stacks: list[str], torch_index: str | None) -> str:
    deps = "".join(f"    {json.dumps(d)},\n" for d in dependencies(stacks))
    setup = f"stacks = {json.dumps(stacks)}\n" + (f"torch-index = {json.dumps(torch_index)}\n" if torch_index else "")
    return (f"[project]\nname = {json.dumps(name)}\nversion = \"0.1.0\"\nrequires-python = \">=3.10\"\n"
            f"dependencies = [\n{deps}]\n\n"
            "# lmdev setup reads this table: stacks, and where packages come from (torch-index with\n"
            "# {backend}, index-url, extra-index-urls, find-links, constraints)\n"
            f"[tool.lmdev.setup]\n{setup}")


def write_project(folder: Path, stacks: list[str] | None, *, force: bool = False,
                  torch_index: str | None = None) -> list[Path]:
    """Write the project's files into ``folder``; refuse to overwrite unless ``force``."""
    stacks = normalise_stacks(stacks)
    name = project_name(folder)
    files = {
        "pyproject.toml": pyproject(name, stacks, torch_index),
        "train.yaml": TRAIN_CONFIG.format(name=name),
        "train.py": TRAIN_SCRIPT.format(name=name),
        ".gitignore": GITIGNORE,
        "README.md": README.format(name=name, stacks=", ".join(stacks)),
    }
    existing = [f for f in files if (folder / f).exists()]
    if existing and not force:
        raise LmdevError(f"{folder / existing[0]} exists", "choose an empty folder, or pass --force")
    folder.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(folder / f, text) for f, text in files.items()]
