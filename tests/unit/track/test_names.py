"""Names are checked once, where they enter lmdev (lmdev.names), and no run id leads out of the store."""

import os
import sqlite3
import time

import pytest

import lmdev
from lmdev import names
from lmdev.cli import main
from lmdev.errors import LmdevError
from lmdev.track.store import Store
from lmdev.track.types import RunInfo


def cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("bad", ["", ".", "..", "../../victim", "a/b", "a\\b", "-rf", "x" * 65, "a\x00b",
                                 "/etc", "ünï", "a b"])
def test_bad_run_ids_are_refused(bad):
    with pytest.raises(names.InvalidName):
        names.check_run_id(bad)
    assert not names.is_run_id(bad)


@pytest.mark.parametrize("good", ["a1b2c3d4e5f6", "my-run_2.v3", "X", "0" * 64])
def test_good_run_ids_pass(good):
    assert names.check_run_id(good) == good


def test_text_names_refuse_control_characters_and_length():
    assert names.check_run_name("[bold]not markup[/]") == "[bold]not markup[/]"  # escaped when shown
    for bad in ("", "a\nb", "a\x00b", "a\x1b[31m", " padded", "x" * 201):
        with pytest.raises(names.InvalidName):
            names.check_run_name(bad)
    with pytest.raises(names.InvalidName):
        names.check_tags("one-string")
    with pytest.raises(names.InvalidName):
        names.check_metric_key("loss\n")
    assert names.check_metric_key("val/loss [x]") == "val/loss [x]"


def test_init_refuses_a_run_id_that_leaves_the_store(home, tmp_path):
    victim = tmp_path / "victim"
    with pytest.raises(LmdevError, match="run_id"):
        lmdev.init("x", run_id="../../victim")
    assert not victim.exists() and not (home / "runs").exists()


def test_init_refuses_lmdev_run_id_from_the_environment(home, monkeypatch):
    monkeypatch.setenv("LMDEV_RUN_ID", "../../x")
    with pytest.raises(LmdevError, match="LMDEV_RUN_ID"):
        lmdev.init("x")


def test_init_refuses_bad_names_projects_and_tags(home):
    for kwargs in ({"name": "a\nb"}, {"name": "ok", "project": "p\x00"}, {"name": "ok", "tags": ["t\r"]}):
        with pytest.raises(ValueError):  # InvalidName is a ValueError and an LmdevError
            lmdev.init(**kwargs)


def test_log_refuses_a_metric_key_with_control_characters(home):
    with lmdev.init("keys") as run:
        with pytest.raises(ValueError, match="control character"):
            run.log({"loss\x00": 1.0})
        run.log({"loss": 1.0, "[red]markup[/]": 2.0})
    with Store() as st:
        assert set(st.metrics(st.get_run(run.id))) == {"loss", "[red]markup[/]"}


def test_lmdev_run_with_a_bad_lmdev_run_id_exits_2(home, monkeypatch, tmp_path, capsys):
    script = tmp_path / "s.py"
    script.write_text("print('hi')\n")
    monkeypatch.setenv("LMDEV_RUN_ID", "../../x")
    code, _, err = cli(capsys, "run", str(script))
    assert code == 2 and "LMDEV_RUN_ID" in err and "Traceback" not in err


def _plant(home, run_id, name):
    """A run row as an older lmdev could have written it (no check on the id)."""
    with Store(home) as st:
        st.create_run(RunInfo(id=run_id, name=name, project="default", status="finished",
                              start_time=time.time()))


def test_runs_rm_never_deletes_outside_the_store(home, tmp_path, capsys):
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    (victim / "keep" / "data.txt").write_text("precious")
    _plant(home, "../../victim", "evil")  # home/runs/../../victim is tmp_path/victim
    assert (home / "runs" / "../../victim").resolve() == victim.resolve()
    code, _, err = cli(capsys, "runs", "rm", "evil")
    assert code == 1 and "not a valid run id" in err
    assert (victim / "keep" / "data.txt").read_text() == "precious"
    code, out, _ = cli(capsys, "runs", "list", "--json")
    assert "evil" not in out  # the row is gone, the folder outside is untouched


def test_runs_rm_does_not_follow_a_symlinked_run_folder(home, tmp_path, capsys):
    with lmdev.init("linked") as run:
        pass
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.txt").write_text("precious")
    (home / "runs").mkdir(parents=True, exist_ok=True)
    os.symlink(outside, home / "runs" / run.id)
    code, _, err = cli(capsys, "runs", "rm", run.id)
    assert code == 1 and "outside the store" in err
    assert (outside / "data.txt").read_text() == "precious"


def test_an_empty_or_ambiguous_prefix_matches_nothing(home, capsys):
    for name in ("one", "two"):
        with lmdev.init(name, run_id=f"ab{name}"):
            pass
    code, _, err = cli(capsys, "runs", "rm", "")
    assert code == 2 and "empty" in err
    code, _, err = cli(capsys, "runs", "rm", "  ")
    assert code == 2
    code, _, err = cli(capsys, "runs", "rm", "ab")
    assert code == 2 and "matches 2 runs" in err
    code, _, err = cli(capsys, "runs", "rm", "AB")  # prefixes are exact, not case-folded
    assert code == 2 and "no run matches" in err
    with sqlite3.connect(home / "lmdev.db") as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2


def test_the_empty_prefix_with_a_single_run_deletes_nothing(home, capsys):
    with lmdev.init("only") as run:
        pass
    code, _, _ = cli(capsys, "runs", "rm", "")
    assert code == 2
    assert Store(home).get_run(run.id).name == "only"
