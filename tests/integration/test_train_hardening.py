"""Issue 11 through the real CLI: bad input exits 2 (a failed run exits 1) with one line and no
traceback; no silent ./checkpoints; a diverged run is not "finished"; --json stays JSON; a
stray module beside the config does not replace an installed one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, run_lmdev

pytestmark = pytest.mark.integration

SMALL = "name: small\nmodel: {type: mlp, hidden: [8]}\ndata: {type: digits, batch_size: 16}\n" \
        "train: {max_steps: 2, eval_every: 100, log_every: 1}\n"


def _lmdev(tmp_path: Path, *args: str) -> object:
    return run_lmdev(*args, cwd=tmp_path, env={"LMDEV_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"})


def _one_line_error(res: object, code: int = 2) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr + res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("lmdev: error:")]
    assert len(lines) == 1, res.stderr  # one error (a config's lists each bad field below it)
    return res.stderr


def test_no_checkpoints_folder_when_the_store_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(SMALL)
    (tmp_path / "not-a-folder").write_text("")
    res = run_lmdev("train", "c.yaml", "--no-telemetry", cwd=tmp_path,
                    env={"LMDEV_HOME": str(tmp_path / "not-a-folder" / "home")})
    line = _one_line_error(res)
    assert "run store" in line and "not started" in line
    assert not (tmp_path / "checkpoints").exists() and "run " not in res.stdout


def test_a_run_that_diverges_on_its_last_step_is_not_finished(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(SMALL.replace("max_steps: 2, eval_every: 100", "max_steps: 1, eval_every: 1")
                                     + "optimizer: {type: sgd, lr: 1.0e+30}\n")
    res = _lmdev(tmp_path, "train", "c.yaml", "--no-telemetry", "--json")
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"bare {c} in --json output"))
    assert doc["status"] == "diverged" and doc["val"]["val/loss"] is None
    assert doc["non_finite"]["val/loss"] == "nan" and doc["best_checkpoint"] is None
    from lmdev.track import Store

    with Store(tmp_path / "home") as store:
        info = store.get_run(doc["run_id"])
        assert info.status == "failed"
        assert any("diverged" in e.message for e in store.events(info))
    # the human summary, with a name that is rich markup (printed as text, not parsed)
    human = _lmdev(tmp_path, "train", "c.yaml", "--no-telemetry", "--name", "[/]odd[bold")
    assert human.returncode == 1 and "diverged" in human.stdout and "Traceback" not in human.stderr
    assert "[/]odd[bold" in human.stdout


def test_a_stray_module_beside_the_config_does_not_replace_an_installed_one(tmp_path: Path) -> None:
    """sklearn.py beside the config would, first on sys.path, replace scikit-learn (whose data file
    the digits set is read from) and run its code; the user's own module there still imports."""
    canary = tmp_path / "HIJACKED"
    (tmp_path / "sklearn.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    (tmp_path / "my_models.py").write_text(
        "import torch\nimport sklearn  # the installed one\n\n"
        "def build():\n    return torch.nn.Sequential(torch.nn.Linear(64, 10))\n")
    (tmp_path / "c.yaml").write_text(SMALL.replace("{type: mlp, hidden: [8]}", "'python:my_models:build'"))
    res = _lmdev(tmp_path, "train", "c.yaml", "--no-telemetry", "--json")
    assert res.returncode == 0, res.stderr
    assert not canary.exists()


@pytest.mark.parametrize("case", ["binary", "utf16", "dev-zero", "lr-1e400", "lr-infinity", "tuple-model",
                                  "bad-kwargs", "join-timeout-nan", "manifest"])
def test_bad_train_and_checkpoint_input_is_one_line(tmp_path: Path, case: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(SMALL)
    args = ["train", str(cfg), "--no-telemetry"]
    needle = {"binary": "not UTF-8", "utf16": "not UTF-8", "dev-zero": "not a regular file",
              "lr-1e400": "optimizer.lr", "lr-infinity": "optimizer.lr", "tuple-model": "returned a tuple",
              "bad-kwargs": "model.kwargs do not fit", "join-timeout-nan": "--join-timeout",
              "manifest": "manifest.json"}[case]
    if case == "binary":
        cfg.write_bytes(os.urandom(512) + b"\x00")
    elif case == "utf16":
        cfg.write_bytes(SMALL.encode("utf-16"))
    elif case == "dev-zero":
        args = ["train", "/dev/zero"]
    elif case == "lr-1e400":
        args += ["--set", "optimizer.lr=1e400"]
    elif case == "lr-infinity":
        cfg.write_text(SMALL + "optimizer: {lr: Infinity}\n")
    elif case in ("tuple-model", "bad-kwargs"):
        (tmp_path / "tuple_models.py").write_text(
            "import torch\n\nclass Pair(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            "        self.l = torch.nn.Linear(64, 10)\n    def forward(self, x):\n        return self.l(x), x\n\n"
            "def build():\n    return Pair()\n")
        model = "{type: 'python:tuple_models:build'" + (", kwargs: {width: 3}}" if case == "bad-kwargs" else "}")
        cfg.write_text(SMALL.replace("{type: mlp, hidden: [8]}", model))
    elif case == "join-timeout-nan":
        args += ["--nproc", "2", "--dry-run", "--join-timeout", "nan"]
    elif case == "manifest":
        step = tmp_path / "step-00000001"
        step.mkdir()
        (step / "manifest.json").write_bytes(b"\xff\xfe[")
        args = ["checkpoint", "export", str(step), str(tmp_path / "out.safetensors")]
    res = _lmdev(tmp_path, *args)
    if case == "join-timeout-nan":  # argparse's own usage error: exit 2, no traceback
        assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
        return
    assert needle in _one_line_error(res)


@pytest.mark.parametrize("out", ["folder", "root", "symlink", "dev-full"])
def test_output_paths_that_are_not_files_are_refused(tmp_path: Path, out: str) -> None:
    target = {"folder": tmp_path, "root": Path("/"), "symlink": tmp_path / "link", "dev-full": Path("/dev/full")}[out]
    if out == "symlink":
        (tmp_path / "real").write_text("keep")
        target.symlink_to(tmp_path / "real")
    if out == "dev-full" and not target.exists():
        pytest.skip("no /dev/full here")
    res = _lmdev(tmp_path, "doctor", "--from", str(FIXTURES / "laptop-no-gpu.json"), "--html", str(target))
    _one_line_error(res)
    res = _lmdev(tmp_path, "checkpoint", "export", str(tmp_path), str(target))
    _one_line_error(res)
    if out == "symlink":
        assert (tmp_path / "real").read_text() == "keep" and target.is_symlink()
    if out == "dev-full":
        assert target.is_char_device()


@pytest.mark.parametrize("snapshot", [
    "[" * 100000 + "]" * 100000,
    '{"dists": {"torch": null}}',
    '{"nvml_snapshot": {"devices": [{"name": "X", "pcie_width_max": [1, [2]]}]}}',
    '{"disks": {"/": "lots"}}',
    '{"python": {"version": 3.11}}',
    '"just a string"',
    '{"disks": {"/": [NaN, Infinity]}}',
])
def test_doctor_from_odd_json_is_one_line(tmp_path: Path, snapshot: str) -> None:
    base = json.loads((FIXTURES / "h100-8x-nvlink.json").read_text())
    try:
        odd = json.loads(snapshot)
    except RecursionError:
        odd = None
    path = tmp_path / "snap.json"
    if isinstance(odd, dict):
        for key, value in odd.items():
            if key == "nvml_snapshot":
                base[key]["devices"][0].update(value["devices"][0])
            else:
                base[key] = value if not isinstance(value, dict) or not isinstance(base.get(key), dict) \
                    else {**base[key], **value}
        path.write_text(json.dumps(base))
    else:
        path.write_text(snapshot)
    line = _one_line_error(_lmdev(tmp_path, "doctor", "--from", str(path)))
    assert "snapshot" in line


@pytest.mark.parametrize("args", [
    ("verify", "{long}"),
    ("export", "{long}/step-00000010", "out.safetensors"),
    ("export", "{tmp}", "{long}/out.safetensors"),
])
def test_checkpoint_paths_with_a_part_over_255_bytes(tmp_path: Path, args: tuple[str, ...]) -> None:
    long = str(tmp_path / ("n" * 300))
    res = _lmdev(tmp_path, "checkpoint", *(a.format(long=long, tmp=tmp_path) for a in args))
    assert "File name too long" in _one_line_error(res)
