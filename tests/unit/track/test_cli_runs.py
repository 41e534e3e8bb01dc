"""`lmdev runs` in-process: list, show, compare, export, rm, and the errors a user can cause."""

import json

import pytest

import lmdev
from lmdev.cli import main


@pytest.fixture
def two_runs(home):
    for name, lr in (("small", 0.1), ("large", 0.01)):
        with lmdev.init(name, config={"lr": lr, "layers": 2}) as run:
            for i in range(3):
                run.log({"loss": lr * (3 - i)}, step=i)
    return home


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_and_show_json(two_runs, capsys):
    code, out, _ = cli(capsys, "runs", "list", "--json")
    assert code == 0
    doc = json.loads(out)
    assert [r["name"] for r in doc["runs"]] == ["large", "small"]
    code, out, _ = cli(capsys, "runs", "show", doc["runs"][1]["id"][:6], "--json")
    shown = json.loads(out)
    assert code == 0 and shown["name"] == "small" and shown["config"]["lr"] == 0.1
    assert shown["metrics"]["loss"] == [[0, pytest.approx(0.3)], [1, pytest.approx(0.2)], [2, pytest.approx(0.1)]]


def test_human_output(two_runs, capsys):
    code, out, _ = cli(capsys, "runs", "list")
    assert code == 0 and "small" in out and "finished" in out
    code, out, _ = cli(capsys, "runs", "show", "small")
    assert code == 0 and "lr = 0.1" in out and "loss" in out
    code, out, _ = cli(capsys, "runs", "compare", "small", "large")
    assert code == 0 and "config lr" in out and "layers" not in out  # only what differs


def test_compare_json(two_runs, capsys):
    code, out, _ = cli(capsys, "runs", "compare", "small", "large", "--json")
    doc = json.loads(out)
    assert doc["config"] == {"lr": [0.1, 0.01]}
    assert doc["metrics"]["loss"][0]["last"] == pytest.approx(0.1)


def test_export_and_rm(two_runs, capsys, tmp_path):
    out_file = tmp_path / "small.json"
    code, out, _ = cli(capsys, "runs", "export", "small", "--format", "json", "-o", str(out_file))
    assert code == 0 and json.loads(out_file.read_text())["name"] == "small"
    code, out, _ = cli(capsys, "runs", "rm", "small")
    assert code == 0 and "removed" in out
    code, out, _ = cli(capsys, "runs", "list", "--json")
    assert [r["name"] for r in json.loads(out)["runs"]] == ["large"]


def test_rm_refuses_a_running_run_without_force(home, capsys):
    run = lmdev.init("live")
    run.flush()
    code, _, err = cli(capsys, "runs", "rm", "live")
    assert code == 2 and "still running" in err and "--force" in err
    run.finish()


@pytest.mark.parametrize("argv, message", [
    (["runs", "show", "nope"], "no run matches 'nope'"),
    (["runs", "compare", "small"], "at least two runs"),
])
def test_user_errors_are_one_line_exit_2(two_runs, capsys, argv, message):
    code, out, err = cli(capsys, *argv)
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_store(home, capsys):
    code, out, _ = cli(capsys, "runs", "list", "--json")
    assert code == 0 and json.loads(out)["runs"] == []
    assert not home.exists()  # reading does not create a store
    code, _, err = cli(capsys, "runs", "show", "x")
    assert code == 2 and "no run store" in err


def test_corrupt_store_is_a_clear_error(home, capsys):
    home.mkdir(parents=True)
    (home / "lmdev.db").write_bytes(b"\x01" * 4096)
    code, _, err = cli(capsys, "runs", "list")
    assert code == 2 and str(home / "lmdev.db") in err and ".corrupt" in err
