"""``lmdev remote ui``: the remote dashboard on the remote's 127.0.0.1, forwarded here over SSH.

No port is opened on the remote's network: the dashboard binds the remote's loopback and the SSH
connection carries it to a local port. The tunnel is health-checked; after a drop it reconnects
(restarting the remote dashboard if it died) on the same local port; on exit the remote dashboard
is stopped and the forward closed.
"""

from __future__ import annotations

import re
import shlex
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmdev.errors import LmdevError
from lmdev.remote import bootstrap, hosts, ssh
from lmdev.remote.bootstrap import RemoteEnv
from lmdev.remote.ops import JobSpec, agent, start_job
from lmdev.remote.ssh import Connection

_URL = re.compile(r"serving .* at http://127\.0\.0\.1:(\d+)/")


def healthy(local_port: int, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{local_port}/api/health", timeout=timeout) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def free_local_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tunnel:
    name: str
    local_port: int = 0
    log: Callable[[str], None] = print
    conn: Connection | None = None
    env: RemoteEnv | None = None
    job: str | None = None
    remote_port: int | None = None
    listener: Any = None
    reconnects: int = 0

    def open(self) -> str:
        """Connect, start (or find) the remote dashboard, forward it; returns the local URL."""
        self.local_port = self.local_port or free_local_port()
        remote = hosts.get(self.name)
        self.conn = ssh.connect(remote)
        self.env = bootstrap.ensure(self.conn)
        if self.job is None or agent(self.conn, self.env, "state", self.job)["exit_code"] is not None:
            self._start_ui()
        try:
            self.listener = self.conn.forward(self.local_port, int(self.remote_port or 0))
        except OSError as exc:
            raise LmdevError(f"cannot listen on local port {self.local_port}: {exc.strerror or exc}",
                             "pass another --port") from None
        deadline = time.monotonic() + 30
        while not healthy(self.local_port):
            if time.monotonic() > deadline:
                raise LmdevError(f"the dashboard on {self.name} does not answer through the tunnel",
                                 f"look at its log: {self.env.root}/jobs/{self.job}/out.log")
            time.sleep(0.2)
        return f"http://127.0.0.1:{self.local_port}/"

    def _start_ui(self) -> None:
        assert self.conn and self.env
        store = f"{self.env.root}/home"
        argv = ["{python}", "-m", "lmdev", "ui", "--host", "127.0.0.1", "--port", "0", "--home", store]
        self.job = start_job(self.conn, self.env, JobSpec(argv, self.env.root, kind="ui"))
        log = f"{self.env.root}/jobs/{self.job}/out.log"
        deadline = time.monotonic() + 60
        while True:
            text = self.conn.run(f"cat {shlex.quote(log)} 2>/dev/null", timeout=30).stdout
            m = _URL.search(text)
            if m:
                self.remote_port = int(m.group(1))
                return
            state = agent(self.conn, self.env, "state", self.job)
            if state["exit_code"] is not None or time.monotonic() > deadline:
                raise LmdevError(f"the dashboard did not start on {self.name}: {text.strip()[-300:]}",
                                 "the remote needs lmdev's ui extra (fastapi, uvicorn)")
            time.sleep(0.3)

    def _drop(self) -> None:
        for thing in (self.listener, self.conn):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # noqa: BLE001 - closing what is already dead
                    pass
        self.listener = self.conn = None

    def watch(self, interval: float = 2.0, tries: int = 30) -> None:
        """Health-check forever; reconnect after a drop. Returns only by KeyboardInterrupt."""
        while True:
            time.sleep(interval)
            if healthy(self.local_port):
                continue
            self.log(f"lmdev: the tunnel to {self.name} dropped; reconnecting")
            self._drop()
            for attempt in range(tries):
                try:
                    self.open()
                    self.reconnects += 1
                    self.log(f"lmdev: reconnected to {self.name} (http://127.0.0.1:{self.local_port}/)")
                    break
                except LmdevError as exc:
                    self.log(f"lmdev: reconnect {attempt + 1}/{tries} failed: {exc.message}")
                    self._drop()
                    time.sleep(min(10.0, 1.0 + attempt))
            else:
                raise LmdevError(f"cannot reach {self.name} again after {tries} tries",
                                 f"check it with `lmdev remote check {self.name}`")

    def close(self) -> None:
        """Stop the remote dashboard and close the forward (best effort on a dead connection)."""
        try:
            if self.conn is None and self.job:
                self.conn = ssh.connect(hosts.get(self.name))
                self.env = bootstrap.ensure(self.conn)
            if self.conn and self.env and self.job:
                agent(self.conn, self.env, "stop", self.job, timeout=30)
        except LmdevError as exc:
            self.log(f"lmdev: could not stop the dashboard on {self.name}: {exc.message}")
        finally:
            self._drop()
