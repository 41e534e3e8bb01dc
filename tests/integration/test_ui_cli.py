"""`lmdev ui` as a process: the URL it prints, the token on a non-loopback address, --no-auth,
a port in use. Runs without a browser."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

pytest.importorskip("uvicorn", reason="the dashboard needs uvicorn (pip install 'lmdev[ui]')")
pytestmark = pytest.mark.integration


def start(home, *args):
    env = dict(os.environ, PYTHONUNBUFFERED="1", LMDEV_TELEMETRY="0")
    proc = subprocess.Popen([sys.executable, "-m", "lmdev", "ui", "--home", str(home), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise AssertionError(f"did not start: {line!r} {proc.stderr.read()}")
    return proc, line.split(" at ", 1)[1].strip()


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.stderr.read()


def status(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_loopback_needs_no_token(tmp_path):
    proc, url = start(tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:") and "token" not in url
        assert status(url + "api/health") == 200
    finally:
        stop(proc)


def test_non_loopback_address_gets_a_generated_token(tmp_path):
    proc, url = start(tmp_path, "--host", "127.0.0.2")
    try:
        base, token = url.split("?token=")
        assert base.startswith("http://127.0.0.2:") and len(token) >= 32
        assert status(base + "api/health") == 401
        assert status(base) == 401
        assert status(base + "api/health?token=" + "x" * len(token)) == 401
        assert status(base + "api/health?token=" + token) == 200
        assert status(base + "api/health", {"Authorization": f"Bearer {token}"}) == 200
    finally:
        err = stop(proc)
    assert token not in err  # printed once, on stdout


def test_no_auth_is_explicit_and_warns(tmp_path):
    proc, url = start(tmp_path, "--host", "127.0.0.2", "--no-auth")
    try:
        assert "token" not in url
        assert status(url + "api/health") == 200
    finally:
        err = stop(proc)
    assert "warning" in err and "--no-auth" in err


def test_a_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "lmdev", "ui", "--home", str(tmp_path), "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot serve" in r.stderr and "Traceback" not in r.stderr
