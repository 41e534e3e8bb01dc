"""The dashboard's read-only JSON API over a prepared store."""

import json
import math

import pytest

from fastapi.testclient import TestClient

from lmdev.ui.server import create_app
from tests.unit.ui.conftest import BASE


def test_runs_lists_the_runs_with_key_metrics(client, ids):
    r = client.get("/api/runs")
    assert r.status_code == 200
    runs = {row["name"]: row for row in r.json()["runs"]}
    assert set(runs) == {"digits-mlp", "tiny-gpt"}
    mlp = runs["digits-mlp"]
    assert mlp["id"] == ids["digits-mlp"]
    assert mlp["live_status"] == "finished" and mlp["tags"] == ["demo", "mlp"] and mlp["host"]
    assert mlp["duration"] is not None
    loss = mlp["metrics"]["train/loss"]
    assert loss["count"] == 200 and abs(loss["last"] - (2.0 * 2.718281828 ** (-199 / 40) + 0.1)) < 1e-6
    assert loss["best"] == loss["min"]  # lower is better for a loss
    acc = mlp["metrics"]["val/accuracy"]
    assert acc["best"] == acc["max"] and acc["higher_is_better"]
    assert runs["tiny-gpt"]["metrics"]["val/loss"]["count"] == 6


def test_runs_filters_by_status(client):
    assert client.get("/api/runs?status=running").json()["runs"] == []
    assert len(client.get("/api/runs?status=finished").json()["runs"]) == 2


def test_run_detail_by_id_prefix_and_name(client, ids):
    rid = ids["digits-mlp"]
    d = client.get(f"/api/runs/{rid}").json()
    assert d["id"] == rid and d["config"]["model"]["width"] == 64
    keys = {s["key"]: s for s in d["summaries"]}
    assert set(keys) == {"train/loss", "train/tokens_per_s", "val/loss", "val/accuracy", "train/grad_norm"}
    assert keys["train/grad_norm"]["nonfinite"] == 2
    assert d["system_keys"] == ["gpu:0/gpu_util_percent", "host/cpu_percent"]
    assert d["output_files"] == ["stdout.log"]
    assert client.get(f"/api/runs/{rid[:6]}").json()["id"] == rid
    assert client.get("/api/runs/tiny-gpt").json()["id"] == ids["tiny-gpt"]


def test_metrics_series_and_nonfinite_flags(client, ids):
    rid = ids["digits-mlp"]
    d = client.get(f"/api/runs/{rid}/metrics", params={"keys": "train/loss,train/grad_norm,nope"}).json()
    assert set(d["series"]) == {"train/loss", "train/grad_norm"}
    loss = d["series"]["train/loss"]
    assert loss["step"] == list(range(200)) and loss["count"] == 200 and not loss["downsampled"]
    assert all(isinstance(v, float) for v in loss["value"])
    g = d["series"]["train/grad_norm"]
    assert g["step"] == [200, 201, 202, 203]
    assert g["value"] == [None, 1.5, None, 1.2]  # gaps in the line
    assert g["flags"] == [[0, "nan"], [2, "inf"]] and g["nonfinite"] == 2
    # the JSON is strict: no NaN/Infinity literals
    json.loads(client.get(f"/api/runs/{rid}/metrics", params={"keys": "train/grad_norm"}).text,
               parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_metrics_are_downsampled_to_the_requested_points(client, ids):
    s = client.get(f"/api/runs/{ids['digits-mlp']}/metrics", params={"keys": "train/loss", "points": 40}).json()
    loss = s["series"]["train/loss"]
    assert loss["downsampled"] and loss["returned"] <= 40 and loss["count"] == 200
    assert loss["step"][0] == 0 and loss["step"][-1] == 199
    assert client.get(f"/api/runs/{ids['digits-mlp']}/metrics", params={"keys": "train/loss", "points": 10**9}).status_code == 422


def test_state_is_a_cheap_cursor(client, ids):
    s = client.get(f"/api/runs/{ids['digits-mlp']}/state").json()
    assert s["live_status"] == "finished" and s["cursor"]["points"] == 200 + 200 + 10 + 10 + 4
    assert s["cursor"]["events"] >= 2 and s["cursor"]["artifacts"] == 1


def test_stream_sends_the_state_as_server_sent_events(client, ids):
    with client.stream("GET", f"/api/runs/{ids['digits-mlp']}/stream") as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        body = "".join(res.iter_text())
    events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
    assert len(events) == 1  # a finished run: its state once, then the stream ends
    state = json.loads(events[0])
    assert state["live_status"] == "finished" and state["id"] == ids["digits-mlp"]
    assert state["cursor"] == client.get(f"/api/runs/{ids['digits-mlp']}/state").json()["cursor"]
    assert client.get("/api/runs/nope/stream").status_code == 404


def test_system_events_artifacts_output(client, ids):
    rid = ids["digits-mlp"]
    sysd = client.get(f"/api/runs/{rid}/system").json()["series"]
    assert sysd["host/cpu_percent"]["value"][:3] == [10.0, 11.0, 12.0]
    assert len(sysd["gpu:0/gpu_util_percent"]["time"]) == 10
    ev = client.get(f"/api/runs/{rid}/events").json()["events"]
    assert [e["message"] for e in ev if e["level"] != "debug"][:2] == ["checkpoint saved", "loss spike"]
    arts = client.get(f"/api/runs/{rid}/artifacts").json()["artifacts"]
    assert len(arts) == 1 and arts[0]["kind"] == "checkpoint" and arts[0]["size"] == 700
    import hashlib

    assert arts[0]["sha256"] == hashlib.sha256(b"weights" * 100).hexdigest()
    assert arts[0]["download"] == f"/api/runs/{rid}/files/checkpoints/step-200.safetensors"
    r = client.get(arts[0]["download"])
    assert r.status_code == 200 and r.content == b"weights" * 100
    assert r.headers["content-type"] == "application/octet-stream"
    out = client.get(f"/api/runs/{rid}/output", params={"bytes": 20}).json()["files"]["stdout.log"]
    assert out["tail"].endswith("done training\n") and out["truncated"] and len(out["tail"]) == 20


def test_compare_overlays_runs_and_diffs_configs(client, ids):
    both = f"{ids['digits-mlp']},{ids['tiny-gpt']}"
    d = client.get("/api/compare", params={"runs": both, "key": "val/loss"}).json()
    assert set(d["series"]) == {ids["digits-mlp"], ids["tiny-gpt"]}
    assert "val/loss" in d["common_keys"] and "val/accuracy" not in d["common_keys"]
    diff = {row["key"]: row["values"] for row in d["config_diff"]}
    assert diff == {"lr": [0.01, 0.001], "model.kind": ["mlp", "gpt"], "model.width": [64, 128]}


def test_unknown_run_is_a_404_not_a_crash(client):
    for path in ("/api/runs/nope", "/api/runs/nope/metrics?keys=a", "/api/runs/nope/state",
                 "/api/runs/nope/files/x", "/api/compare?runs=nope,also"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"]["kind"] == "not_found"
    assert client.get("/api/nothing/here").status_code == 404
    page = client.get("/no/such/page")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"]


def test_index_and_static_assets(client):
    r = client.get("/")
    assert r.status_code == 200 and "<script" in r.text
    assert "<script>" not in r.text  # no inline script: every script is a file
    for asset in ("/static/app.js", "/static/app.css", "/static/vendor/uPlot.iife.min.js",
                  "/static/vendor/uPlot.min.css", "/static/vendor/uPlot.LICENSE"):
        assert client.get(asset).status_code == 200, asset


def test_missing_store_is_explained(tmp_path):
    with TestClient(create_app(tmp_path / "nothing"), base_url=BASE) as c:
        h = c.get("/api/health").json()
        assert not h["ok"] and h["error"]["kind"] == "no_store" and "lmdev demo" in h["error"]["hint"]
        r = c.get("/api/runs")
        assert r.status_code == 503 and r.json()["error"]["kind"] == "no_store"
    assert not (tmp_path / "nothing" / "lmdev.db").exists()  # the dashboard creates nothing


def test_corrupt_store_is_explained(tmp_path):
    (tmp_path / "lmdev.db").write_bytes(b"this is not a database" * 100)
    with TestClient(create_app(tmp_path), base_url=BASE) as c:
        h = c.get("/api/health").json()
        assert not h["ok"] and h["error"]["kind"] == "store"
        assert "mv " in h["error"]["hint"]
        r = c.get("/api/runs")
        assert r.status_code == 503 and "not a readable SQLite database" in r.json()["error"]["message"]


def test_many_metric_keys(tmp_path):
    from lmdev import track

    run = track.init("wide", home=tmp_path, telemetry=False, flush_interval=0.05)
    for step in range(3):
        run.log({f"layer{i // 100}/param{i}/grad": float(i + step) for i in range(2000)}, step=step)
    run.finish()
    with TestClient(create_app(tmp_path), base_url=BASE) as c:
        d = c.get(f"/api/runs/{run.id}").json()
        assert len(d["summaries"]) == 2000
        keys = ",".join(s["key"] for s in d["summaries"][:150])
        m = c.get(f"/api/runs/{run.id}/metrics", params={"keys": keys}).json()
        assert len(m["series"]) == 150
        assert len(c.get("/api/runs").json()["runs"]) == 1


def test_machine_page_data(client, prepared):
    d = client.get("/api/machine").json()
    assert d["doctor"]["summary"]["status"] == "ok" and d["bench"] is None


def test_machine_with_the_real_doctor_and_saved_bench(tmp_path, prepared):
    _home, _ = prepared
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "latest.json").write_text('{"matmul": {"cpu": 1.0}}')
    with TestClient(create_app(tmp_path), base_url=BASE) as c:
        d = c.get("/api/machine").json()
        assert d["doctor"]["schema"] == "lmdev.doctor/1"
        for finding in d["doctor"]["findings"][:1]:
            assert {"id", "severity", "title", "evidence", "fix"} <= set(finding)
        assert d["bench"] == {"matmul": {"cpu": 1.0}}


def test_plan_uses_the_planner(client):
    o = client.get("/api/plan/options")
    if o.status_code == 404:  # the planner is not installed
        return
    opts = o.json()
    assert "this" in opts["hardware"] and opts["models"]
    model = opts["models"][0]
    p = client.get("/api/plan", params={"model": model, "hardware": opts["hardware"][1], "batch": 2, "seq": 128})
    assert p.status_code == 200
    plan = p.json()
    assert plan["schema"] == "lmdev.plan/1" and plan["memory"]["total_bytes"] > 0 and "fits" in plan
    bad = client.get("/api/plan", params={"model": "../../etc/passwd"})
    assert bad.status_code == 404  # only catalog presets: nothing the user types is read or run
    bad = client.get("/api/plan", params={"model": model, "precision": "fp7"})
    assert bad.status_code == 400 and "precision" in bad.json()["error"]["message"]


def test_runs_table_lines_up_keras_and_lmdev_metric_names(tmp_path):
    from lmdev import track

    home = tmp_path / ".lmdev"
    for name, key, value in (("keras-run", "val_loss", 0.5), ("engine-run", "val/loss", 0.3)):
        run = track.init(name, home=home, telemetry=False)
        run.log({key: value}, step=0)
        run.finish()
    with TestClient(create_app(home), base_url=BASE) as c:
        runs = {r["name"]: r["metrics"] for r in c.get("/api/runs").json()["runs"]}
        cmp = c.get("/api/compare", params={"runs": "keras-run,engine-run", "key": "val/loss"}).json()
    assert cmp["common_keys"] == ["val/loss"]  # the Compare page overlays them too
    assert sorted(s["value"][0] for s in cmp["series"].values()) == [0.3, 0.5]
    assert set(runs["keras-run"]) == set(runs["engine-run"]) == {"val/loss"}  # one column for both
    assert runs["keras-run"]["val/loss"]["last"] == 0.5 and runs["keras-run"]["val/loss"]["aliases"] == ["val_loss"]
    assert runs["engine-run"]["val/loss"]["aliases"] == ["val/loss"]


def test_plan_page_default_precision_fits_the_hardware(client):
    """A T4 has no bf16: the page's default ("auto") plans fp16 there instead of failing."""
    o = client.get("/api/plan/options")
    if o.status_code == 404:  # the planner is not installed
        return
    assert o.json()["precisions"][0] == "auto"
    model = o.json()["models"][0]
    t4 = next(h for h in o.json()["hardware"] if h.lower().startswith("t4"))
    p = client.get("/api/plan", params={"model": model, "hardware": t4, "batch": 1, "seq": 128})
    assert p.status_code == 200, p.text
    assert p.json()["workload"]["precision"] == "fp16"
    explicit = client.get("/api/plan", params={"model": model, "hardware": t4, "precision": "bf16"})
    assert explicit.status_code == 400


# -- second round: compare several keys, hyper-parameters, lineage ------------------------------


def test_compare_returns_several_keys_per_run(client, ids):
    runs = f"{ids['digits-mlp']},{ids['tiny-gpt']}"
    d = client.get("/api/compare", params={"runs": runs, "keys": "val/loss,train/loss"}).json()
    assert set(d["by_key"]) == {"val/loss", "train/loss"}
    assert set(d["by_key"]["train/loss"]) == set(ids.values())
    assert d["by_key"]["val/loss"][ids["tiny-gpt"]]["step"] == [0, 25, 50, 75, 100, 125]
    assert d["series"] == {} and d["runs"][0]["parent_id"] is None
    assert "train/tokens_per_s" in d["keys"] and "train/tokens_per_s" not in d["common_keys"]


def test_hparams_flattens_configs_against_a_final_metric(client, ids):
    d = client.get("/api/hparams", params={"metric": "val/loss"}).json()
    assert d["metric"] == "val/loss" and d["higher_is_better"] is False
    assert {"lr", "model.kind", "model.width"} <= set(d["params"]) and "epochs" not in d["params"]
    rows = {r["name"]: r for r in d["runs"]}
    assert rows["tiny-gpt"]["config"]["model.width"] == 128
    assert rows["tiny-gpt"]["value"] == pytest.approx(4.0 * math.exp(-125 / 60) + 0.6)
    assert "val/loss" in d["metrics"]


def test_lineage_endpoint_and_a_fork_continuing_its_parent(prepared, tmp_path):
    from lmdev import track
    from tests.unit.ui.helpers import make_store

    home = tmp_path / ".lmdev"
    ids = make_store(home)
    fork = track.init("mlp-fork", home=home, telemetry=False, parent=ids["digits-mlp"])
    for step in range(100, 110):
        fork.log({"train/loss": 9.0}, step=step)
    fork.finish()
    app = create_app(home, doctor=lambda: {})
    with TestClient(app, base_url=BASE) as c:
        lin = c.get(f"/api/runs/{ids['digits-mlp']}/lineage").json()
        assert [f["id"] for f in lin["forks"]] == [fork.id] and lin["parent"] is None
        assert c.get(f"/api/runs/{fork.id}").json()["lineage"]["parent"]["id"] == ids["digits-mlp"]
        m = c.get(f"/api/runs/{fork.id}/metrics", params={"keys": "train/loss", "lineage": 1}).json()
        assert m["series"]["train/loss"]["step"] == list(range(100, 110))
        inherited = m["inherited"]["train/loss"]
        assert inherited["step"] == list(range(100))  # the parent's points before the fork
        assert inherited["value"][0] == pytest.approx(2.1)
        plain = c.get(f"/api/runs/{fork.id}/metrics", params={"keys": "train/loss"}).json()
        assert plain["inherited"] == {}


def test_media_endpoint_lists_keys_and_items(tmp_path):
    import numpy as np

    from lmdev import track
    from lmdev.track.media import Histogram, Table, Text

    home = tmp_path / ".lmdev"
    run = track.init("media", home=home, telemetry=False)
    for step in (0, 5):
        run.log({"w": Histogram(np.arange(100.0), bins=4), "t": Text(f"at {step}"),
                 "tab": Table(["a"], [[step]])}, step=step)
    run.finish()
    with TestClient(create_app(home, doctor=lambda: {}), base_url=BASE) as c:
        assert {m["key"]: m["kind"] for m in c.get(f"/api/runs/{run.id}").json()["media_keys"]} == \
            {"w": "histogram", "t": "text", "tab": "table"}
        d = c.get(f"/api/runs/{run.id}/media").json()
        assert {k["key"]: (k["count"], k["first_step"], k["last_step"]) for k in d["keys"]}["w"] == (2, 0, 5)
        hist = [i for i in d["items"] if i["key"] == "w"]
        assert [i["step"] for i in hist] == [0, 5] and sum(hist[0]["payload"]["counts"]) == 100
        assert len(hist[0]["payload"]["edges"]) == 5
        only = c.get(f"/api/runs/{run.id}/media", params={"kind": "text", "limit": 1}).json()
        assert [(i["key"], i["payload"]["text"]) for i in only["items"]] == [("t", "at 5")] and only["truncated"]
        assert c.get(f"/api/runs/{run.id}/state").json()["cursor"]["media"] == 6


def test_a_fork_continues_its_parent_up_to_its_fork_step(tmp_path):
    from lmdev import track

    home = tmp_path / ".lmdev"
    base = track.init("base", home=home, telemetry=False)
    for step in range(10):
        base.log({"loss": float(step)}, step=step)
    base.finish()
    fork = track.init("fork", fork=f"{base.id}@4", home=home, telemetry=False)
    fork.log({"loss": 100.0})
    fork.finish()
    grand = track.init("grand", fork=f"{fork.id}@5", home=home, telemetry=False)
    grand.log({"loss": 200.0})
    grand.finish()
    with TestClient(create_app(home, doctor=lambda: {}), base_url=BASE) as c:
        m = c.get(f"/api/runs/{grand.id}/metrics", params={"keys": "loss", "lineage": 1}).json()
        assert m["series"]["loss"]["step"] == [6]
        inherited = m["inherited"]["loss"]
        assert inherited["step"] == [0, 1, 2, 3, 4, 5]  # the base up to 4, then the fork's step 5
        assert inherited["value"] == [0.0, 1.0, 2.0, 3.0, 4.0, 100.0]
        lin = c.get(f"/api/runs/{grand.id}/lineage").json()
        assert lin["parent"]["id"] == fork.id and lin["parent"]["step"] == 5 and lin["parent"]["kind"] == "fork"
        d = c.get("/api/compare", params={"runs": f"{base.id},{grand.id}", "keys": "loss", "lineage": 1}).json()
        assert d["runs"][1]["fork_step"] == 5 and list(d["inherited"]["loss"]) == [grand.id]


def test_explanations_endpoint_lists_what_explain_kept(tmp_path):
    from lmdev import track
    from lmdev.explain import Attribution, Explanation, record_explanation

    home = tmp_path / ".lmdev"
    run = track.init("explained", home=home, telemetry=False)
    run.log({"loss": 1.0}, step=0)
    run.finish()
    with TestClient(create_app(home, doctor=lambda: {}), base_url=BASE) as c:
        assert c.get(f"/api/runs/{run.id}/explanations").json()["explanations"] == []
    names = ["age", "<b>speed</b>"]
    for step, method in ((20, "saliency"), (10, "integrated-gradients")):
        exp = Explanation(run.id, "explained", step, "mlp", "table", method, names,
                          items=[Attribution("val row 3", "1", [0.1, float("nan")], "1", values=[0.5, 2.0])],
                          importance=[("<b>speed</b>", 2.5), ("age", 0.1)], sample=64)
        path = record_explanation(exp, home)
        assert path == home / "runs" / run.id / "explain" / f"{step}-{method}.json"
    (path.parent / "99-broken.json").write_text("{not json")
    with TestClient(create_app(home, doctor=lambda: {}), base_url=BASE) as c:
        d = c.get(f"/api/runs/{run.id}/explanations").json()
        assert [(x["step"], x["method"], x["file"]) for x in d["explanations"]] == \
            [(10, "integrated-gradients", "10-integrated-gradients.json"), (20, "saliency", "20-saliency.json")]
        first = d["explanations"][0]
        assert first["schema"] == "lmdev.explain/1" and first["importance"][0] == {"feature": "<b>speed</b>", "score": 2.5}
        assert first["items"][0]["scores"] == [0.1, None]  # NaN is stored as null
        assert [s["file"] for s in d["skipped"]] == ["99-broken.json"]
        # recorded on the run without reopening it
        state = c.get(f"/api/runs/{run.id}").json()
        assert state["status"] == "finished"
        arts = c.get(f"/api/runs/{run.id}/artifacts").json()["artifacts"]
        assert [(a["kind"], a["download"].rsplit("/", 1)[-1]) for a in arts] == \
            [("explanation", "20-saliency.json"), ("explanation", "10-integrated-gradients.json")]
        events = [e["message"] for e in c.get(f"/api/runs/{run.id}/events").json()["events"]]
        assert "explained step 10 with integrated-gradients (1 input(s))" in events
        assert c.get("/api/runs/nope/explanations").status_code == 404
