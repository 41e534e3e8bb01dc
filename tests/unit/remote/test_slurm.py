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


def test_several_nodes_run_lmdev_train_under_srun_with_each_nodes_rank(tmp_path):
    import shlex
    import subprocess

    fake_python = tmp_path / "python"  # prints the arguments it gets, one a line
    fake_python.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake_python.chmod(0o755)
    spec = {"cwd": "/p", "sbatch": {"nodes": "2"}, "slurm_bin": "/opt/slurm/bin"}
    text = slurm.script(tmp_path / "j", spec, [str(fake_python), "-m", "lmdev", "train", "c.yaml"], {})
    lines = text.splitlines()
    assert "#SBATCH --nodes=2" in lines and "#SBATCH --ntasks-per-node=1" in lines
    assert "/opt/slurm/bin/scontrol show hostnames" in text
    srun = shlex.split(lines[-1])
    assert srun[:2] == ["exec", "/opt/slurm/bin/srun"] and srun[-3:-1] == ["sh", "-c"]
    # what srun runs on each node, there with that node's SLURM_NODEID
    env = {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "LMDEV_MASTER_ADDR": "node01", "LMDEV_MASTER_PORT": "21234"}
    got = subprocess.run(["sh", "-c", srun[-1]], env=env, capture_output=True, text=True, check=True).stdout.split()
    assert got == ["-m", "lmdev", "train", "c.yaml", "--nnodes", "2", "--node-rank", "1",
                   "--master-addr", "node01", "--master-port", "21234"]
    assert slurm.nodes({"sbatch": {"nodes": "3-4"}}) == 3
    with pytest.raises(LmdevError, match="nodes"):
        slurm.nodes({"sbatch": {"nodes": "many"}})
