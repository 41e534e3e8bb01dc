"""The dashboard's defences: read-only methods, Host allowlist, headers, no CORS, tokens,
and file downloads that never leave the run's folder."""

import os
import urllib.parse

import pytest
from fastapi.testclient import TestClient

from lmdev.cli.ui import resolve_token
from lmdev.errors import LmdevError
from lmdev.ui.guard import cookie_name
from lmdev.ui.server import create_app, is_loopback_name
from tests.unit.ui.conftest import BASE

TOKEN = "s3cret-token-0123456789abcdef"


@pytest.fixture
def authed(prepared):
    home, _ = prepared
    with TestClient(create_app(home, token=TOKEN, allowed_hosts={"127.0.0.2"}), base_url="http://127.0.0.2:6006") as c:
        yield c


# -- headers, methods, hosts -------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/api/runs", "/static/app.js", "/api/runs/nope", "/no/page"])
def test_security_headers_on_every_answer(client, path):
    h = client.get(path).headers
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    csp = h["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "access-control-allow-origin" not in h


def test_no_cors_even_when_asked(client):
    r = client.get("/api/runs", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = client.options("/api/runs", headers={"Origin": "http://evil.example",
                                               "Access-Control-Request-Method": "GET"})
    assert pre.status_code == 405 and "access-control-allow-origin" not in pre.headers


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_api_is_read_only(client, ids, method):
    for path in ("/api/runs", f"/api/runs/{ids['digits-mlp']}", "/"):
        r = client.request(method, path)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_head_is_allowed(client):
    assert client.head("/api/runs").status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:6006", "127.0.0.1.evil.example", "attacker:80", ""])
def test_host_header_allowlist_blocks_dns_rebinding(client, host):
    r = client.get("/api/runs", headers={"host": host})
    assert r.status_code == 400 and r.json()["error"]["kind"] == "host"


@pytest.mark.parametrize("host", ["127.0.0.1:6006", "localhost:6006", "[::1]:6006", "LOCALHOST"])
def test_loopback_hosts_are_accepted(client, host):
    assert client.get("/api/runs", headers={"host": host}).status_code == 200


# -- tokens ------------------------------------------------------------------------------------

def test_token_is_required_everywhere(authed):
    for path in ("/", "/api/runs", "/static/app.js", "/api/health"):
        r = authed.get(path)
        assert r.status_code == 401, path
    assert authed.get("/api/runs", params={"token": "wrong" + TOKEN}).status_code == 401
    assert authed.get("/api/runs", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_token_in_url_sets_a_strict_httponly_cookie_and_is_dropped(authed):
    r = authed.get("/", params={"token": TOKEN}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{cookie_name(6006)}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    # the client now holds the cookie: everything opens without the token in the URL
    assert authed.get("/api/runs").status_code == 200
    assert authed.get("/").status_code == 200


def test_bearer_token_works_for_scripts(authed):
    assert authed.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_token_comparison_is_constant_time(monkeypatch, prepared):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    home, _ = prepared
    with TestClient(create_app(home, token=TOKEN), base_url=BASE) as c:
        assert c.get("/api/runs", params={"token": TOKEN}).status_code == 200
    assert calls


def test_loopback_names():
    assert is_loopback_name("127.0.0.1") and is_loopback_name("localhost") and is_loopback_name("::1")
    assert not is_loopback_name("127.0.0.2") and not is_loopback_name("0.0.0.0") and not is_loopback_name("10.0.0.1")


def test_token_policy():
    assert resolve_token("127.0.0.1", None, False) is None
    generated = resolve_token("0.0.0.0", None, False)
    assert generated and len(generated) >= 32
    assert resolve_token("0.0.0.0", None, False) != generated  # fresh each time
    assert resolve_token("127.0.0.2", None, True) is None  # --no-auth, explicitly
    assert resolve_token("10.1.2.3", TOKEN, False) == TOKEN
    with pytest.raises(LmdevError):
        resolve_token("10.1.2.3", TOKEN, True)
    with pytest.raises(LmdevError):
        resolve_token("10.1.2.3", "short", False)


def test_bad_options_are_refused_before_serving(lmdev_cli, tmp_path):
    r = lmdev_cli("ui", "--host", "127.0.0.2", "--port", "70000", "--no-auth", env={"LMDEV_HOME": str(tmp_path)})
    assert r.returncode == 2 and "--port" in r.stderr  # bad port: refused before serving
    r = lmdev_cli("ui", "--host", "127.0.0.2", "--token", "x", env={"LMDEV_HOME": str(tmp_path)})
    assert r.returncode == 2 and "too weak" in r.stderr


# -- files: traversal ----------------------------------------------------------------------------

def _raw_get(client, path):
    """Send the path as is (no client-side normalisation of .. or percent signs)."""
    return client.get(path)


@pytest.fixture
def outside(prepared):
    home, ids = prepared
    secret = home.parent / "secret.txt"
    secret.write_text("top secret")
    run_dir = home / "runs" / ids["digits-mlp"]
    link = run_dir / "escape.txt"
    if not link.exists():
        os.symlink(secret, link)
    dlink = run_dir / "escape-dir"
    if not dlink.exists():
        os.symlink(home.parent, dlink)
    return ids["digits-mlp"], secret


@pytest.mark.parametrize("attack", [
    "../../../secret.txt",
    "..%2F..%2F..%2Fsecret.txt",
    "%2e%2e/%2e%2e/%2e%2e/secret.txt",
    "%252e%252e%252f%252e%252e%252fsecret.txt",
    "..%252f..%252f..%252fsecret.txt",
    "checkpoints/..%2F..%2F..%2F..%2Fsecret.txt",
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "..\\..\\secret.txt",
    "..%5C..%5Csecret.txt",
    "%00secret.txt",
    "escape.txt",
    "escape-dir/secret.txt",
])
def test_traversal_is_refused(client, outside, attack):
    run_id, _secret = outside
    r = client.get(f"/api/runs/{run_id}/files/{attack}")
    assert r.status_code in (400, 404), attack
    assert b"top secret" not in r.content and b"root:" not in r.content


def test_traversal_with_raw_dotdot_segments(prepared, outside):
    """A client that does not normalise '..' (curl --path-as-is)."""
    import httpx

    home, _ = prepared
    run_id, _ = outside
    app = create_app(home)
    transport = httpx.ASGITransport(app=app)
    import asyncio

    async def go():
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
            url = httpx.URL(BASE + f"/api/runs/{run_id}/files/x")
            url = url.copy_with(raw_path=f"/api/runs/{run_id}/files/../../../secret.txt".encode())
            return await c.get(url)

    r = asyncio.run(go())
    assert r.status_code in (400, 404) and b"top secret" not in r.content


def test_absolute_artifact_outside_the_store_has_no_download(prepared, tmp_path):
    from lmdev import track

    home = tmp_path / "store"
    elsewhere = tmp_path / "elsewhere.bin"
    elsewhere.write_bytes(b"private")
    run = track.init("ext", home=home, telemetry=False, flush_interval=0.05)
    run.log_artifact(elsewhere, kind="file")
    run.finish()
    with TestClient(create_app(home), base_url=BASE) as c:
        arts = c.get(f"/api/runs/{run.id}/artifacts").json()["artifacts"]
        assert arts[0]["path"] == str(elsewhere.resolve()) and arts[0]["download"] is None
        quoted = urllib.parse.quote(str(elsewhere.resolve()), safe="")
        r = c.get(f"/api/runs/{run.id}/files/{quoted}")
        assert r.status_code in (400, 404) and b"private" not in r.content


def test_a_file_of_the_run_downloads(client, ids):
    r = client.get(f"/api/runs/{ids['digits-mlp']}/files/stdout.log")
    assert r.status_code == 200 and r.text.endswith("done training\n")
    assert "attachment" in r.headers["content-disposition"]
