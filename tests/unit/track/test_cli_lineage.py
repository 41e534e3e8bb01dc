"""`lmdev runs show` and `runs list` show what the new API records: summary, resumes, forks, media."""

import json

import lmdev
from tests.conftest import run_lmdev


def _lineage(home):
    with lmdev.init("parent", config={"lr": 0.1}) as parent:
        for i in range(6):
            parent.log({"loss": 1.0 / (i + 1), "w": lmdev.Histogram([i, i + 1], bins=2)} if i == 5 else
                       {"loss": 1.0 / (i + 1)})
        parent.summary["best"] = 0.5
    again = lmdev.init(resume=f"{parent.id}@3")
    again.log({"loss": 0.01})
    again.finish()
    child = lmdev.init(fork=f"{parent.id}@2", config={"lr": 0.01})
    child.log({"loss": 0.2})
    child.finish()
    return parent.id, child.id


def test_runs_show_prints_summary_lineage_and_media(home):
    parent, child = _lineage(home)
    env = {"LMDEV_HOME": str(home)}
    out = run_lmdev("runs", "show", parent, env=env)
    assert out.returncode == 0, out.stderr
    assert "best = 0.5" in out.stdout
    assert "resumed 1 time(s), at step 3 (3 replaced)" in out.stdout  # two losses and the histogram
    assert f"fork {child} (parent, finished) from step 2" in out.stdout
    shown = run_lmdev("runs", "show", child, env=env).stdout
    assert f"forked from {parent} (parent) at step 2" in shown
    doc = json.loads(run_lmdev("runs", "show", parent, "--json", env=env).stdout)
    assert doc["summary"]["best"] == 0.5 and doc["summary"]["loss"] == 0.01
    assert doc["lineage"]["resumes"][0]["step"] == 3 and doc["lineage"]["forks"][0]["id"] == child
    assert doc["media"] == {}  # the histogram at step 5 was rewound away
    listed = run_lmdev("runs", "list", "--wide", env=env).stdout
    assert f"⑂{parent[:8]}@2" in listed
