"""`lmdev doctor` and the CLI as a user runs them: real subprocesses on this machine."""

import json
import subprocess
import sys

import jsonschema
import pytest

from tests.conftest import FIXTURES, ROOT, run_lmdev

SCHEMA = json.loads((ROOT / "docs" / "schemas" / "doctor.schema.json").read_text())


def test_help_lists_commands_and_version():
    res = run_lmdev("--help")
    assert res.returncode == 0
    assert "doctor" in res.stdout and "demo" in res.stdout
    ver = run_lmdev("--version")
    assert ver.returncode == 0 and ver.stdout.startswith("lmdev ")


@pytest.mark.parametrize("argv", [["--help"], ["doctor", "--json"]])
def test_no_framework_is_imported(argv):
    code = (
        "import sys, io, contextlib\n"
        "from lmdev.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv,needle", [
    (["doctor", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["doctor", "--deep-timeout", "0"], "must be greater than 0"),
    (["doctor", "--deep-timeout", "abc"], "not a number"),
    (["nosuchcommand"], "invalid choice"),
])
def test_bad_usage_exits_2_with_one_line(argv, needle):
    res = run_lmdev(*argv)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_json_matches_the_documented_schema():
    res = run_lmdev("doctor", "--json")
    doc = json.loads(res.stdout)  # stdout holds one JSON document and nothing else
    jsonschema.validate(doc, SCHEMA)
    assert res.returncode == (1 if doc["summary"]["errors"] else 0)
    assert doc["facts"]["host"]["cpu"]["threads"] >= 1
    assert doc["facts"]["host"]["memory"]["total_bytes"] > 0
    assert doc["facts"]["deep"] is None


def test_human_report_sections():
    res = run_lmdev("doctor")
    assert res.returncode in (0, 1)
    for section in ("Host", "Accelerators", "Software", "Findings"):
        assert section in res.stdout


def test_html_report_is_self_contained(tmp_path):
    page = tmp_path / "report.html"
    res = run_lmdev("doctor", "--html", str(page))
    assert res.returncode in (0, 1), res.stderr
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    assert "Findings" in html and "Host" in html
    lowered = html.lower()
    for external in ("<script", "<link", "src=", "@import", "url("):
        assert external not in lowered
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file


def test_html_escapes_what_it_shows(tmp_path):
    from lmdev.diagnose.report import doctor, to_html
    from lmdev.probe.source import FixtureSource

    src = FixtureSource.load(FIXTURES / "this-cpu-box.json")
    src.hostname = "<script>alert(1)</script>"
    html = to_html(doctor(src))
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_html_into_missing_folder_is_a_clean_error(tmp_path):
    target = tmp_path / "nope" / "report.html"
    res = run_lmdev("doctor", "--html", str(target))
    assert res.returncode == 2
    assert "does not exist" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not target.exists()


def test_record_then_diagnose_the_snapshot(tmp_path):
    snap = tmp_path / "machine.json"
    live = run_lmdev("doctor", "--json", "--record", str(snap))
    replay = run_lmdev("doctor", "--json", "--from", str(snap))
    a, b = json.loads(live.stdout), json.loads(replay.stdout)
    assert [f["id"] for f in a["findings"]] == [f["id"] for f in b["findings"]]
    assert a["facts"]["host"]["cpu"] == b["facts"]["host"]["cpu"]
    assert a["facts"]["software"]["packages"] == b["facts"]["software"]["packages"]
    assert live.returncode == replay.returncode


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]", '{"no_such_field": 1}'])
def test_bad_snapshot_is_a_clean_error(tmp_path, content):
    snap = tmp_path / "snap.json"
    if content is not None:
        snap.write_text(content)
    res = run_lmdev("doctor", "--from", str(snap))
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and str(snap) in res.stderr


def test_rules_listing():
    from lmdev.diagnose.rules import RULES

    res = run_lmdev("doctor", "--rules")
    assert res.returncode == 0
    for r in RULES:
        assert r.id in res.stdout


@pytest.mark.integration
def test_deep_imports_torch_in_a_subprocess():
    pytest.importorskip("torch")
    res = run_lmdev("doctor", "--deep", "--json", "--deep-timeout", "180")
    doc = json.loads(res.stdout)
    jsonschema.validate(doc, SCHEMA)
    torch_check = next(d for d in doc["facts"]["deep"] if d["framework"] == "torch")
    assert torch_check["ok"], torch_check
    assert torch_check["op_results"]["cpu"] == "ok"
    assert torch_check["import_seconds"] > 0
    assert "cpu" in torch_check["devices"]


def test_demo_runs_doctor_then_trains_and_tracks_two_models(tmp_path):
    res = run_lmdev("demo", "--quick", cwd=tmp_path, env={"LMDEV_HOME": str(tmp_path / ".lmdev"),
                                                           "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert "lmdev doctor" in res.stdout and "What you can do now" in res.stdout and "lmdev compress" in res.stdout
    from lmdev.track.store import Store

    with Store(tmp_path / ".lmdev") as store:
        runs = {r.name: r for r in store.list_runs()}
        assert set(runs) == {"demo-digits-mlp", "demo-arithmetic-gpt"}
        assert all(r.status == "finished" for r in runs.values())
        for r in runs.values():
            assert f"lmdev runs show {r.id}" in res.stdout
            assert "val/loss" in store.metrics(r, ["val/loss"])


@pytest.mark.integration
def test_oversubscription_and_the_saved_bench(tmp_path):
    """More ranks and threads than this machine has cores are flagged with a fix; the latest
    `lmdev bench` (saved under LMDEV_HOME) is shown beside its peaks, in JSON and on screen."""
    bench = {"schema": "lmdev.bench/1", "created": "2026-12-03T09:00:00+00:00", "quick": True, "hostname": "h",
             "cpu": {"peak_flops": {"fp32": 2e11}, "matmul": {"fp32": [{"size": 512, "flops": 5e10}]},
                     "memory_bandwidth_bytes_s": 1e10}, "gpus": []}
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "latest.json").write_text(json.dumps(bench))
    env = {"LMDEV_HOME": str(tmp_path), "OMP_NUM_THREADS": "4096"}
    res = run_lmdev("doctor", "--json", "--nproc", "4096", env=env)
    doc = json.loads(res.stdout)
    jsonschema.validate(doc, SCHEMA)
    ids = {f["id"]: f for f in doc["findings"]}
    assert "OMP_NUM_THREADS=" in ids["cpu.threads_oversubscribed"]["fix"]
    assert ids["cpu.ranks_over_cores"]["title"].startswith("4096 training ranks on ")
    assert doc["facts"]["host"]["cpu"]["ranks"] == 4096
    (row,) = [r for r in doc["bench"]["rows"] if r["dtype"] == "fp32"]
    assert row["measured_flops"] == 5e10 and row["peak_flops"] == 2e11 and row["percent"] == 25.0
    text = run_lmdev("doctor", env={"LMDEV_HOME": str(tmp_path)}).stdout
    assert "Bench beside the peaks" in text and "50.00 GFLOP/s" in text and "25%" in text
    bad = run_lmdev("doctor", "--nproc", "0")
    assert bad.returncode == 2 and "--nproc" in bad.stderr
