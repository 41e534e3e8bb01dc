"""`lmdev runs` in-process: list, show, compare, export, rm, and the errors a user can cause."""

import json
import time

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
    code, out, _ = cli(capsys, "runs", "rm", "small", "--yes")
    assert code == 0 and "removed" in out
    code, out, _ = cli(capsys, "runs", "list", "--json")
    assert [r["name"] for r in json.loads(out)["runs"]] == ["large"]


def test_rm_refuses_a_running_run_without_force(home, capsys):
    run = lmdev.init("live")
    run.flush()
    code, _, err = cli(capsys, "runs", "rm", "live", "--yes")
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


# -- second round (issue 18): readable at 80 columns, human units, flattened configs, rm asks ----

LONG = ("handle-the-long-experiment-name-one", "handle-the-long-experiment-name-two")


@pytest.fixture
def long_runs(home):
    runs = []
    for i, name in enumerate(LONG):
        with lmdev.init(name, project="a-rather-long-project-name",
                        config={"optimizer": {"lr": 0.1 * (i + 1), "betas": [0.9, 0.99]}, "seed": 1}) as run:
            for step in range(3):
                run.log({"val/accuracy": 0.5 + step / 10, "val/loss": 1.0 / (step + 1),
                         "gpu/mem_bytes": 743_800_000.0}, step=step)
            run._add_system([(time.time() + k, 0, "host", "ram_used_bytes", 3.2e9 + k) for k in range(3)])
            runs.append(run.id)
    return runs


def test_list_at_80_columns_keeps_names_whole_and_wide_shows_all(long_runs, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli(capsys, "runs", "list")
    assert code == 0
    assert max(map(len, out.splitlines())) <= 80
    for name in LONG:
        assert name in out  # never cut
    assert "a-rather-long-project-name" not in out  # a less useful column made room
    code, out, _ = cli(capsys, "runs", "list", "--wide")
    assert code == 0 and "a-rather-long-project-name" in out and "started" in out
    for name in LONG:
        assert name in out


def test_bytes_are_in_human_units(long_runs, capsys):
    code, out, _ = cli(capsys, "runs", "show", LONG[0])
    assert code == 0
    assert "709 MiB" in out and "e+08" not in out
    code, out, _ = cli(capsys, "runs", "compare", *LONG)
    assert "709 MiB" in out and "e+08" not in out


def test_compare_flattens_config_sections(long_runs, capsys):
    code, out, _ = cli(capsys, "runs", "compare", *LONG)
    assert code == 0
    line = next(x for x in out.splitlines() if "optimizer.lr" in x)
    assert "0.1" in line and "0.2" in line
    assert "{" not in out and "betas" not in out and "seed" not in out  # only the leaves that differ


def test_show_system_in_text(long_runs, capsys):
    code, out, _ = cli(capsys, "runs", "show", LONG[0])
    assert code == 0 and "--system shows them" in out and "ram_used_bytes" not in out
    code, out, _ = cli(capsys, "runs", "show", LONG[0], "--system")
    assert code == 0
    line = next(x for x in out.splitlines() if "ram_used_bytes" in x)
    assert "GiB" in line and "e+09" not in line


def test_rm_without_a_terminal_needs_yes(two_runs, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))  # piped input is not a terminal: no asking
    code, out, err = cli(capsys, "runs", "rm", "small")
    assert code == 2 and "--yes" in err and err.count("\n") == 1
    code, out, _ = cli(capsys, "runs", "list", "--json")
    assert sorted(r["name"] for r in json.loads(out)["runs"]) == ["large", "small"]  # nothing deleted


@pytest.mark.integration
@pytest.mark.parametrize("answer, kept", [("n\n", True), ("y\n", False)])
def test_rm_asks_on_a_terminal(two_runs, answer, kept):
    import os
    import subprocess
    import sys

    master, slave = os.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "lmdev", "runs", "rm", "small"], stdin=slave,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        os.write(master, answer.encode())
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    assert "Delete 1 run" in err and "[y/N]" in err
    assert (proc.returncode, "removed" in out) == ((1, False) if kept else (0, True))
    listed = subprocess.run([sys.executable, "-m", "lmdev", "runs", "list", "--json"], capture_output=True,
                            text=True, timeout=60)
    assert ("small" in [r["name"] for r in json.loads(listed.stdout)["runs"]]) is kept


@pytest.fixture
def keras_and_lmdev(home):
    with lmdev.init("keras-run") as run:  # the spelling Keras' callback logs
        run.log({"val_loss": 0.5, "loss": 0.4}, step=0)
    with lmdev.init("engine-run") as run:  # the spelling lmdev's engine logs
        run.log({"val/loss": 0.3, "loss": 0.2}, step=0)
    return home


def test_keras_and_lmdev_metric_names_line_up(keras_and_lmdev, capsys):
    code, out, _ = cli(capsys, "runs", "compare", "keras-run", "engine-run")
    assert code == 0
    rows = [x for x in out.splitlines() if "val/loss" in x or "val_loss" in x]
    assert len(rows) == 1 and "0.5" in rows[0] and "0.3" in rows[0] and "also val_loss" in rows[0]
    code, out, _ = cli(capsys, "runs", "compare", "keras-run", "engine-run", "--json")
    doc = json.loads(out)
    assert [m["last"] for m in doc["metrics"]["val/loss"]] == [0.5, 0.3]
    assert doc["aliases"] == {"val/loss": ["val/loss", "val_loss"]}
    code, out, _ = cli(capsys, "runs", "list")
    assert out.count("val/loss=") == 2 and "val_loss" not in out
