"""The dashboard's guards: the store's edges, same-origin redirects, port-scoped cookies, the token's
strength, the back-off after wrong tokens, damaged rows."""

import sqlite3
import time

import pytest
from fastapi.testclient import TestClient

from lmdev.cli.ui import resolve_token
from lmdev.errors import LmdevError
from lmdev.track.store import Store
from lmdev.track.types import RunInfo
from lmdev.ui.guard import (
    LoginThrottle,
    StreamGate,
    cookie_name,
    safe_redirect_path,
    token_bits,
)
from lmdev.ui.server import create_app
from tests.unit.ui.helpers import make_store

BASE = "http://127.0.0.1:6006"
TOKEN = "Zr3nqY0b9xK2fWm8PcLt7VhQ"  # 24 url-safe characters: 144 bits


def _doctor():
    return {"summary": {"status": "ok"}, "findings": [], "facts": {}}


@pytest.fixture
def own_store(tmp_path, monkeypatch):
    monkeypatch.setenv("LMDEV_TELEMETRY", "0")
    home = tmp_path / "store" / ".lmdev"
    ids = make_store(home)
    return home, ids


def test_output_of_a_run_whose_id_leaves_the_store_is_not_read(own_store, tmp_path):
    home, _ = own_store
    secret = tmp_path / "store" / "secret"  # <home>/runs/../../secret
    secret.mkdir()
    (secret / "stdout.log").write_text("TOP SECRET")
    with Store(home) as st:  # an id an older lmdev let through: runs/../../secret
        st.create_run(RunInfo(id="../../secret", name="evil", project="default", status="finished",
                              start_time=time.time()))
    assert (home / "runs" / "../../secret" / "stdout.log").exists()
    with TestClient(create_app(home, doctor=_doctor), base_url=BASE) as c:
        for path in ("/api/runs/evil/output", "/api/runs/evil", "/api/runs/evil/artifacts",
                     "/api/runs/evil/files/stdout.log"):
            r = c.get(path)
            assert r.status_code in (200, 404) and "TOP SECRET" not in r.text, path
        assert c.get("/api/runs/evil/output").json()["files"] == {}


@pytest.mark.parametrize("path,expected", [
    ("/", "/"), ("/index.html", "/index.html"), ("/x/y", "/x/y"),
    ("//evil.example/", "/"), ("/\\evil.example", "/"), ("https://evil.example/", "/"),
    ("", "/"), ("javascript:alert(1)", "/"), ("/a b", "/"), ("/\x00", "/"),
])
def test_safe_redirect_path(path, expected):
    assert safe_redirect_path(path) == expected


def test_the_login_redirect_stays_on_this_dashboard(own_store):
    home, _ = own_store
    app = create_app(home, token=TOKEN, allowed_hosts={"127.0.0.1"}, doctor=_doctor)
    with TestClient(app, base_url=BASE) as c:
        for raw in ("//evil.example/?token=", "//evil.example/x?token=", "/\\evil.example/?token="):
            r = c.get(BASE + raw + TOKEN, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/", r.headers["location"]
        r = c.get(f"/?token={TOKEN}&x=1", follow_redirects=False)
        assert r.headers["location"] == "/?x=1"  # the rest of the query stays, on a safe path only
        r = c.get(f"{BASE}//evil.example/?token={TOKEN}&x=1", follow_redirects=False)
        assert r.headers["location"] == "/"
        r = c.get(f"/static/app.css?token={TOKEN}", follow_redirects=False)
        assert r.headers["location"] == "/static/app.css"


def test_the_cookie_name_holds_the_port_so_two_dashboards_keep_their_tokens(own_store):
    home, _ = own_store
    other = "Hq8TzW1rLm4XcV9bN2kPyD5s"
    a = create_app(home, token=TOKEN, allowed_hosts={"127.0.0.1"}, doctor=_doctor)
    b = create_app(home, token=other, allowed_hosts={"127.0.0.1"}, doctor=_doctor)
    with TestClient(a, base_url="http://127.0.0.1:6006") as ca, \
            TestClient(b, base_url="http://127.0.0.1:6007") as cb:
        ra = ca.get(f"/?token={TOKEN}", follow_redirects=False)
        rb = cb.get(f"/?token={other}", follow_redirects=False)
        assert ra.headers["set-cookie"].startswith(cookie_name(6006) + "=")
        assert rb.headers["set-cookie"].startswith(cookie_name(6007) + "=")
        assert cookie_name(6006) != cookie_name(6007)
        # a browser sends both cookies to both ports: each dashboard finds its own
        jar = {cookie_name(6006): TOKEN, cookie_name(6007): other}
        ca.cookies.update(jar)
        cb.cookies.update(jar)
        assert ca.get("/api/health").status_code == 200 and cb.get("/api/health").status_code == 200


@pytest.mark.parametrize("weak", ["s3cret-token-0123", "0123456789abcdef0123456789abcde", "a" * 64,
                                  "abababababababababababababababab", "short"])
def test_weak_tokens_are_refused(weak):
    assert token_bits(weak) < 128
    with pytest.raises(LmdevError, match="too weak"):
        resolve_token("10.0.0.1", weak, False)


@pytest.mark.parametrize("strong", [TOKEN, "9f86d081884c7d659a2feaa0c55ad015", "k#8Lp!2vQz&9Rt@4Wm^7Yb"])
def test_tokens_of_128_bits_are_accepted(strong):
    assert resolve_token("10.0.0.1", strong, False) == strong


def test_failed_logins_back_off_per_client():
    now = [1000.0]
    t = LoginThrottle(free=3, clock=lambda: now[0])
    for i in range(3):
        t.failed("1.2.3.4", f"guess{i}")
    assert t.wait_left("1.2.3.4") == 0  # the first few are free
    t.failed("1.2.3.4", "guess3")
    assert t.wait_left("1.2.3.4") == 1.0
    t.failed("1.2.3.4", "guess3")  # the same wrong token again (a stale cookie) counts once
    assert t.wait_left("1.2.3.4") == 1.0
    t.failed("1.2.3.4", "guess4")
    assert t.wait_left("1.2.3.4") == 2.0  # doubles
    assert t.wait_left("5.6.7.8") == 0  # per client
    now[0] += 2.0
    assert t.wait_left("1.2.3.4") == 0
    t.succeeded("1.2.3.4")
    t.failed("1.2.3.4", "guess5")
    assert t.wait_left("1.2.3.4") == 0


def test_wrong_tokens_make_the_server_answer_429_even_to_the_right_one(own_store):
    home, _ = own_store
    now = [0.0]
    app = create_app(home, token=TOKEN, allowed_hosts={"127.0.0.1"}, doctor=_doctor,
                     logins=LoginThrottle(free=5, clock=lambda: now[0]))
    with TestClient(app, base_url=BASE) as c:
        for i in range(5):
            assert c.get("/api/health", params={"token": f"wrong-{i}"}).status_code == 401
        assert c.get("/api/health", params={"token": "wrong-5"}).status_code == 401
        r = c.get("/api/health", params={"token": TOKEN})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        now[0] += 60
        assert c.get("/api/health", params={"token": TOKEN}).status_code == 200


def test_stream_gate_caps_in_all_and_per_client():
    g = StreamGate(total=4, per_client=2)
    assert g.enter("a") and g.enter("a") and not g.enter("a")
    assert g.enter("b") and g.enter("c") and not g.enter("d")
    g.leave("a")
    assert g.enter("d") and g.count() == 4


def test_past_the_cap_a_stream_is_answered_429_so_the_page_polls(own_store):
    home, ids = own_store
    gate = StreamGate(total=1, per_client=1)
    gate.enter("testclient")  # the one place is taken
    with TestClient(create_app(home, doctor=_doctor, streams=gate), base_url=BASE) as c:
        r = c.get(f"/api/runs/{ids['digits-mlp']}/stream")
        assert r.status_code == 429 and r.json()["error"]["kind"] == "streams"
        assert "/state" in r.json()["error"]["hint"]
    gate.leave("testclient")
    with TestClient(create_app(home, doctor=_doctor, streams=gate), base_url=BASE) as c:
        with c.stream("GET", f"/api/runs/{ids['digits-mlp']}/stream") as r:
            assert r.status_code == 200
            list(r.iter_lines())
    assert gate.count() == 0  # the finished stream gave its place back


@pytest.mark.parametrize("sql", [
    "UPDATE runs SET config = '{bad' WHERE id = ?",
    "UPDATE runs SET start_time = 'noon' WHERE id = ?",
    "UPDATE metrics SET vals = x'01' WHERE run = (SELECT rid FROM runs WHERE id = ?)",
    "UPDATE metrics SET steps = x'0102030405' WHERE run = (SELECT rid FROM runs WHERE id = ?)",
])
def test_a_damaged_run_does_not_make_the_dashboard_answer_500(own_store, sql):
    home, ids = own_store
    bad = ids["digits-mlp"]
    with sqlite3.connect(home / "lmdev.db") as conn:
        conn.execute(sql, (bad,))
    with TestClient(create_app(home, doctor=_doctor), base_url=BASE) as c:
        r = c.get("/api/runs")
        assert r.status_code == 200
        names = [x["name"] for x in r.json()["runs"]]
        assert "tiny-gpt" in names
        for path in (f"/api/runs/{bad}", f"/api/runs/{bad}/metrics?keys=train/loss,val/loss",
                     f"/api/runs/{bad}/state", f"/api/runs/{bad}/events",
                     f"/api/compare?runs={bad},{ids['tiny-gpt']}&key=train/loss"):
            r = c.get(path)
            assert r.status_code < 500, (path, r.status_code, r.text)


def test_a_huge_limit_is_a_bad_request_not_a_store_error(client):
    r = client.get("/api/runs", params={"limit": 10**30})
    assert r.status_code == 422


def test_read_only_dashboard_writes_nothing_to_the_store(own_store):
    home, ids = own_store
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in home.iterdir()}
    with TestClient(create_app(home, doctor=_doctor, read_only=True), base_url=BASE) as c:
        assert {r["name"] for r in c.get("/api/runs").json()["runs"]} == {"digits-mlp", "tiny-gpt"}
        assert c.get(f"/api/runs/{ids['digits-mlp']}").status_code == 200
        assert c.get(f"/api/runs/{ids['digits-mlp']}/output").json()["files"]["stdout.log"]["size"] > 0
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in home.iterdir()}
    assert after == before  # no -wal, no -shm, no new mtime
