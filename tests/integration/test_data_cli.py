"""`lmdev data check` as a user runs it, and the data check `lmdev train` runs first: findings
with their rows, exit 1 on a severe finding, the report stored with the run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lmdev.data.planted import make_table, write_csv
from lmdev.track import Store
from tests.conftest import run_lmdev

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    p = make_table(1200, features=6, classes=3, seed=11)
    write_csv(d / "train.csv", p.x, p.y)
    write_csv(d / "val.csv", p.val_x, p.val_y)
    clean = make_table(600, features=6, classes=3, seed=12, dup_share=0, flip_share=0, leak_share=0,
                       leak_column=False, constant_column=False)
    write_csv(d / "clean.csv", clean.x, clean.y)
    write_csv(d / "clean_val.csv", clean.val_x, clean.val_y)
    return d, p


def env(home: Path) -> dict:
    return {"LMDEV_HOME": str(home), "OMP_NUM_THREADS": "1"}


def test_json_report_of_planted_problems(files, tmp_path):
    d, p = files
    res = run_lmdev("data", "check", str(d / "train.csv"), "--val", str(d / "val.csv"), "--json",
                    "--out", str(tmp_path / "out"), env=env(tmp_path))
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    ids = {(f["id"], f["split"]): f for f in doc["findings"]}
    assert {("split.overlap", "val"), ("rows.duplicate", "train"), ("label.errors", "train"),
            ("feature.leak", "train"), ("column.constant", "train")} <= set(ids)
    overlap = ids[("split.overlap", "val")]
    listed = {int(r) for r in Path(overlap["rows_file"]).read_text().split()}
    assert listed == p.leaked and overlap["rows"] == sorted(p.leaked)[:10]
    assert doc["status"] == "severe" and res.stderr == ""


def test_human_output_names_rows_and_fixes(files, tmp_path):
    d, _ = files
    res = run_lmdev("data", "check", str(d / "train.csv"), "--val", str(d / "val.csv"), env=env(tmp_path))
    assert res.returncode == 1
    assert "SEVERE" in res.stdout and "fix:" in res.stdout and "rows (val):" in res.stdout
    assert list((tmp_path / "data-checks").glob("*/report.json"))  # the default --out is in LMDEV_HOME


def test_bundled_digits_pass(tmp_path):
    res = run_lmdev("data", "check", "digits", "--json", env=env(tmp_path))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["splits"][0]["rows"] == 1797


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    res = run_lmdev("data", "check", str(tmp_path / "missing.csv"), env=env(tmp_path))
    assert res.returncode == 2 and res.stderr.startswith("lmdev: error: ") and "Traceback" not in res.stderr


def config(d: Path, train: str, val: str, check: str) -> Path:
    path = d / f"{train}-{check}.yaml"
    path.write_text(f"name: dc-{check}\nmodel: {{type: mlp, hidden: [16]}}\n"
                    f"data: {{type: 'csv:{train}', val: '{val}', target: label, batch_size: 32, check: {check}}}\n"
                    "train: {max_steps: 10, eval_every: 10, log_every: 5}\ncheckpoint: {every: 10}\ndevice: cpu\n")
    return path


def test_train_uses_the_validation_file_and_stores_the_report(files, tmp_path):
    d, _ = files
    res = run_lmdev("train", str(config(d, "clean.csv", "clean_val.csv", "warn")), "--no-telemetry",
                    env=env(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "data check: ok" in res.stdout
    with Store(tmp_path) as store:
        run = store.list_runs()[0]
        artifacts = [a for a in store.artifacts(run) if a.kind == "data-check"]
        events = [e.message for e in store.events(run)]
    assert len(artifacts) == 1
    report = json.loads(Path(artifacts[0].path).read_text())
    assert [(s["name"], s["rows"]) for s in report["splits"]] == [("train", 600), ("val", 120)]
    assert any("'val_examples': 120" in m for m in events), events  # the file, not a random fifth


def test_train_with_check_fail_refuses_severe_data(files, tmp_path):
    d, _ = files
    res = run_lmdev("train", str(config(d, "train.csv", "val.csv", "fail")), "--no-telemetry", env=env(tmp_path))
    assert res.returncode == 1
    assert "data check found" in res.stderr and "Traceback" not in res.stderr
    with Store(tmp_path) as store:
        run = store.list_runs()[0]
        assert run.status == "failed"
        assert any("data check:" in e.message and e.level == "error" for e in store.events(run))
        assert not os.path.exists(tmp_path / "runs" / run.id / "checkpoints")
