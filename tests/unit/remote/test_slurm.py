"""The sbatch script and how Slurm's answers become a job state."""

from pathlib import Path

import pytest

from lmdev.errors import LmdevError
from lmdev.remote import slurm


def test_script_carries_options_folder_store_and_pid(tmp_path):
    spec = {"cwd": "/home/me/proj", "sbatch": {"partition": "gpu", "time": "01:00:00"}}
    text = slurm.script(tmp_path / "job1", spec, ["/v/bin/python", "-m", "lmdev", "train", "a b.yaml"],
                        {"LMDEV_HOME": "/home/me/.lmdev-remote/home"})
    lines = text.splitlines()
    assert lines[0] == "#!/bin/sh" and "#SBATCH --partition=gpu" in lines and "#SBATCH --time=01:00:00" in lines
    assert f"#SBATCH --output={tmp_path}/job1/out.log" in lines
    assert "export LMDEV_HOME=/home/me/.lmdev-remote/home" in lines
    assert lines[-1] == "exec /v/bin/python -m lmdev train 'a b.yaml'"
    assert lines[-2].startswith("echo $$ > ")


@pytest.mark.parametrize("key, value", [("bad key", "x"), ("time", "1\n#SBATCH --uid=0")])
def test_script_refuses_injected_options(tmp_path, key, value):
    with pytest.raises(LmdevError, match="bad --sbatch"):
        slurm.script(tmp_path, {"cwd": "/", "sbatch": {key: value}}, ["true"], {})


def _fake(folder: Path, squeue: str, sacct: str) -> dict:
    folder.mkdir(exist_ok=True)
    for name, out in (("squeue", squeue), ("sacct", sacct)):
        (folder / name).write_text(f"#!/bin/sh\nprintf '%s' '{out}'\n")
        (folder / name).chmod(0o755)
    return {"slurm_id": "42", "slurm_bin": str(folder)}


@pytest.mark.parametrize("squeue, sacct, want", [
    ("PENDING\n", "", ("PENDING", None)),
    ("RUNNING\n", "", ("RUNNING", None)),
    ("", "COMPLETED|0:0\n", ("COMPLETED", 0)),
    ("", "FAILED|3:0\n", ("FAILED", 3)),
    ("", "CANCELLED by 1000|0:15\n", ("CANCELLED", 143)),
    ("", "TIMEOUT|0:0\n", ("TIMEOUT", 1)),
    ("", "", ("UNKNOWN", None)),
])
def test_state_from_squeue_and_sacct(tmp_path, squeue, sacct, want):
    assert slurm.state(_fake(tmp_path / "bin", squeue, sacct)) == want


def test_missing_slurm_commands_name_the_option(tmp_path):
    with pytest.raises(LmdevError, match="--slurm-bin"):
        slurm.state({"slurm_id": "1", "slurm_bin": str(tmp_path)})
