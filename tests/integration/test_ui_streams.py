"""`lmdev ui` with sixty live streams open: they are capped in all and per client, the others are told
to poll, and /api/health still answers."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("uvicorn", reason="the dashboard needs uvicorn (pip install 'lmdev[ui]')")

import lmdev
from lmdev.ui.guard import MAX_STREAMS, MAX_STREAMS_PER_CLIENT

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(home, port):
    env = dict(os.environ, PYTHONUNBUFFERED="1", LMDEV_TELEMETRY="0")
    proc = subprocess.Popen([sys.executable, "-m", "lmdev", "ui", "--home", str(home), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()  # "lmdev ui: serving ... at URL" once it listens
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(f"lmdev ui did not start: {line} {proc.stderr.read()}")
    return proc


def _open_stream(port, run_id, source):
    s = socket.create_connection(("127.0.0.1", port), timeout=20, source_address=(source, 0))
    s.sendall(f"GET /api/runs/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = b""
    while b"\r\n" not in head:
        chunk = s.recv(1024)
        if not chunk:
            break
        head += chunk
    return s, int(head.split(b" ", 2)[1])


def test_sixty_streams_are_capped_and_health_still_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("LMDEV_TELEMETRY", "0")
    home = tmp_path / ".lmdev"
    run = lmdev.init("live", home=home, flush_interval=0.05)  # running: this process is alive
    run.log({"loss": 1.0})
    run.flush()
    port = _free_port()
    proc = _serve(home, port)
    socks = []
    try:
        statuses = []
        sources = ["127.0.0.2"] * (MAX_STREAMS_PER_CLIENT + 2)  # one client past its own cap
        sources += [f"127.0.0.{3 + i // 5}" for i in range(60 - len(sources))]  # then many clients
        for source in sources:
            s, status = _open_stream(port, run.id, source)
            socks.append(s)
            statuses.append(status)
        first = statuses[:MAX_STREAMS_PER_CLIENT + 2]
        assert first.count(200) == MAX_STREAMS_PER_CLIENT and first.count(429) == 2
        assert statuses.count(200) == MAX_STREAMS and statuses.count(429) == 60 - MAX_STREAMS
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=20) as r:
            assert json.load(r)["ok"] is True
        for s in socks:
            s.close()
        socks = []
        for _ in range(100):  # the closed streams give their places back
            s, status = _open_stream(port, run.id, "127.0.0.99")
            s.close()
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        run.finish()
