"""`lmdev train` as a user runs it: the digits example end to end into a real store, and bad
input answered with exit 2, a one-line message and no traceback."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmdev.track import Store
from lmdev.train.config import load_config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "digits_mlp.yaml"


def train(*args: str, cwd: Path, home: Path, pythonpath: Path | None = None,
          timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, LMDEV_HOME=str(home), OMP_NUM_THREADS="1", NO_COLOR="1", COLUMNS="200")
    env.pop("LMDEV_TEST_CRASH_AT", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "lmdev", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False, timeout=timeout)


def assert_usage_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    assert res.stderr.startswith("lmdev: error: "), res.stderr
    return res.stderr


def test_digits_example_trains_and_is_recorded(tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = train(str(EXAMPLE), "--json", cwd=tmp_path, home=home)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)  # --json: one document on stdout, nothing else
    assert doc["status"] == "finished" and doc["steps"] == 500
    assert doc["val"]["val/accuracy"] >= 0.9
    assert doc["parameters"] == 64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    assert doc["device"] == "cpu" and doc["precision"] == "fp32"
    folder = Path(doc["checkpoint_dir"])
    assert folder.is_relative_to(home / "runs" / doc["run_id"])
    assert not (tmp_path / ".lmdev").exists() and not (tmp_path / "checkpoints").exists()

    with Store(home) as store:
        info = store.get_run(doc["run_id"])
        assert info.status == "finished" and info.name == "digits-mlp"
        assert info.config["model"]["hidden"] == [128, 64]
        metrics = store.metrics(info)
        for key in ("train/loss", "val/loss", "val/accuracy", "train/lr"):
            assert metrics.get(key), key
        assert [s for s, _, _ in metrics["train/loss"]] == list(range(10, 501, 10))
        assert [s for s, _, _ in metrics["val/accuracy"]] == [100, 200, 300, 400, 500]
        assert metrics["val/accuracy"][-1][1] == doc["val"]["val/accuracy"]
        assert metrics["train/loss"][-1][1] < metrics["train/loss"][0][1]
        artifacts = [a for a in store.artifacts(info) if a.kind == "checkpoint"]
        events = [e.message for e in store.events(info)]
        system = store.system(info)
    assert artifacts, "checkpoints are recorded as artifacts"
    for art in artifacts:
        path = Path(art.path)
        if path.exists():  # older checkpoints are pruned (keep: 3)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == art.sha256
            assert path.stat().st_size == art.size
    kept = sorted(p.name for p in folder.iterdir())
    assert kept == ["step-00000300", "step-00000400", "step-00000500"]
    recorded = {Path(a.path).parent.name for a in artifacts}
    assert set(kept) <= recorded
    assert any("checkpoint saved at step 500" in m for m in events)
    assert system, "system telemetry is sampled (telemetry on)"


def test_print_config_prints_the_resolved_yaml(tmp_path: Path) -> None:
    res = train(str(EXAMPLE), "--print-config", "--set", "optimizer.lr=0.05", "--set", "model.hidden=[32]",
                "--name", "renamed", cwd=tmp_path, home=tmp_path / "home")
    assert res.returncode == 0, res.stderr
    printed = yaml.safe_load(res.stdout)
    expected = load_config(EXAMPLE, ["optimizer.lr=0.05", "model.hidden=[32]"]).model_dump(mode="json")
    expected["name"] = "renamed"
    assert printed == expected
    assert printed["schedule"]["type"] == "constant"  # defaults are filled in
    assert not (tmp_path / "home").exists(), "printing the config trains nothing"


def test_every_config_error_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: {type: mlp, hidden: [32]}\noptimizer: {lr: 0}\ntrain: {max_steps: zero}\n"
                   "precision: fp8\nbatch: 3\n")
    err = assert_usage_error(train(str(cfg), "--set", "data.val_fraction=2", cwd=tmp_path, home=tmp_path / "h"))
    for path in ("optimizer.lr", "train.max_steps", "precision", "batch", "data.val_fraction"):
        assert f"  {path}: " in err, (path, err)
    assert "5 error(s)" in err


def test_unknown_model_and_loss_list_the_valid_names(tmp_path: Path) -> None:
    err = assert_usage_error(train(str(EXAMPLE), "--set", "model.type=resnet", "--set", "loss=hinge",
                                   cwd=tmp_path, home=tmp_path / "h"))
    assert "model:" in err and all(n in err for n in ("mlp", "cnn", "gpt", "python:"))
    assert "loss" in err and all(n in err for n in ("cross_entropy", "mse", "bce", "l1", "huber"))


def test_missing_data_file_names_the_path(tmp_path: Path) -> None:
    err = assert_usage_error(train(str(EXAMPLE), "--set", "data.type=csv:nowhere/table.csv",
                                   cwd=tmp_path, home=tmp_path / "h"))
    assert str(ROOT / "examples" / "nowhere" / "table.csv") in err  # relative to the config file


def test_missing_data_file_creates_no_run_and_draws_no_bar(tmp_path: Path) -> None:
    home = tmp_path / "h"
    res = train(str(EXAMPLE), "--set", "data.path=nowhere.csv", "--set", "data.type=csv",
                cwd=tmp_path, home=home)
    err = assert_usage_error(res)
    assert "nowhere.csv does not exist" in err and err.count("\n") == 1  # one line, from its start
    assert res.stdout == ""  # no progress bar (or run id) before the error
    if (home / "lmdev.db").exists():
        with Store(home) as store:
            assert store.list_runs() == []


def test_missing_config_file(tmp_path: Path) -> None:
    err = assert_usage_error(train("no-such.yaml", cwd=tmp_path, home=tmp_path / "h"))
    assert "no-such.yaml" in err and "does not exist" in err


def test_malformed_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("model: {type: mlp\n")
    err = assert_usage_error(train(str(cfg), cwd=tmp_path, home=tmp_path / "h"))
    assert "broken.yaml" in err


WRONG_MODEL = """
import torch

def wrong_input(width=32):
    return torch.nn.Sequential(torch.nn.Linear(width, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))

def too_few_outputs():
    return torch.nn.Linear(64, 3)
"""


def test_model_and_data_shape_mismatch_names_both_shapes(tmp_path: Path) -> None:
    (tmp_path / "lmdev_cli_models.py").write_text(WRONG_MODEL)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: {type: 'python:lmdev_cli_models:wrong_input'}\ndata: {type: digits}\ndevice: cpu\n")
    err = assert_usage_error(train(str(cfg), "--json", cwd=tmp_path, home=tmp_path / "h", pythonpath=tmp_path))
    assert "(2, 64)" in err and "32" in err, err  # the data's batch of 64 features, the model's 32 inputs
    err = assert_usage_error(train(str(cfg), "--json", "--set", "model.type=python:lmdev_cli_models:too_few_outputs",
                                   cwd=tmp_path, home=tmp_path / "h", pythonpath=tmp_path))
    assert "outputs 3" in err and "10 classes" in err, err


def test_python_model_next_to_the_config_is_found_from_another_folder(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "lmdev_cli_models.py").write_text(WRONG_MODEL)
    (project / "cfg.yaml").write_text("model: {type: 'python:lmdev_cli_models:wrong_input', kwargs: {width: 64}}\n"
                                      "data: {type: digits}\ntrain: {max_steps: 2, eval_every: 2, log_every: 1}\n"
                                      "device: cpu\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = train(str(project / "cfg.yaml"), "--json", "--no-telemetry", cwd=elsewhere, home=tmp_path / "h")
    assert res.returncode == 0, res.stderr


def test_resume_of_an_unknown_run(tmp_path: Path) -> None:
    home = tmp_path / "h"
    err = assert_usage_error(train(str(EXAMPLE), "--resume", "nosuchrun", "--no-telemetry", cwd=tmp_path, home=home))
    assert "nosuchrun" in err or "store" in err
