"""SSH connections: asyncssh behind a small synchronous facade.

Host keys are checked against ``~/.ssh/known_hosts``; an unknown key is refused unless
``accept_new`` (then it is appended, as OpenSSH's ``StrictHostKeyChecking=accept-new``); a changed
key is always refused. Keys come from ``--key``, ssh-agent and the default identities; names,
users, ports, identity files and ProxyJump from ``~/.ssh/config`` apply. No password is asked for
or stored. Every failure a user can cause is an ``LmdevError`` naming what to check.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lmdev.errors import LmdevError
from lmdev.remote.hosts import Remote, load, parse_target

CONNECT_TIMEOUT_S = 7.0  # an unreachable host answers within 10 s, process start included
T = TypeVar("T")


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str


def known_hosts_path() -> Path:
    return Path("~/.ssh/known_hosts").expanduser()


class _Loop:
    """One event loop in a daemon thread, shared by every connection of this process."""

    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def get(cls) -> asyncio.AbstractEventLoop:
        with cls._lock:
            if cls._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="lmdev-ssh", daemon=True).start()
                cls._loop = loop
            return cls._loop


def call(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run a coroutine on the SSH loop and wait for it."""
    return asyncio.run_coroutine_threadsafe(coro, _Loop.get()).result(timeout)


def _host_pattern(host: str, port: int | None) -> str:
    return f"[{host}]:{port}" if port and port != 22 else host


def _make_client(accept_new: bool, verdict: dict[str, str]) -> type:
    import asyncssh

    class Client(asyncssh.SSHClient):  # type: ignore[misc]
        def validate_host_public_key(self, host: str, addr: str, port: int, key: Any) -> bool:
            path = known_hosts_path()
            trusted: list[Any] = []
            if path.is_file():
                trusted = list(asyncssh.read_known_hosts(str(path)).match(host, addr, port)[0])
            if trusted:
                verdict["host_key"] = "changed"
                return False
            if not accept_new:
                verdict["host_key"] = "unknown"
                return False
            names = sorted({_host_pattern(h, port) for h in (host, addr) if h})
            line = ",".join(names) + " " + key.export_public_key("openssh").decode().split("\n")[0]
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(line.strip() + "\n")
            verdict["host_key"] = "added"
            return True

    return Client


def _explain(exc: BaseException, where: str, verdict: dict[str, str]) -> LmdevError:
    import asyncssh

    kh = known_hosts_path()
    if isinstance(exc, asyncssh.HostKeyNotVerifiable) or verdict.get("host_key") in ("changed", "unknown"):
        if verdict.get("host_key") == "changed":
            return LmdevError(f"the host key of {where} has CHANGED since it was recorded in {kh}",
                              "someone may be intercepting the connection; if the host was really "
                              "reinstalled, remove the old key with `ssh-keygen -R HOST` and add it again")
        return LmdevError(f"the host key of {where} is unknown (not in {kh})",
                          "check its fingerprint, then connect once with --accept-new")
    if isinstance(exc, asyncssh.PermissionDenied):
        return LmdevError(f"authentication failed for {where}",
                          "check the user, --key PATH (or ssh-agent), and that the public key is in "
                          "the remote's ~/.ssh/authorized_keys; lmdev never asks for passwords")
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return LmdevError(f"cannot reach {where}: no answer within {CONNECT_TIMEOUT_S:g} s",
                          "check the host name and port, that the machine is up, and any firewall or VPN")
    if isinstance(exc, ConnectionRefusedError):
        return LmdevError(f"cannot reach {where}: connection refused",
                          "check the port and that sshd runs there")
    if isinstance(exc, OSError):
        return LmdevError(f"cannot reach {where}: {exc.strerror or exc}",
                          "check the host name (DNS, ~/.ssh/config), the network and the port")
    if isinstance(exc, asyncssh.ConnectionLost):
        return LmdevError(f"cannot reach {where}: the connection was closed before SSH could start",
                          "check the host name and port (is it an SSH server?), the network and any firewall")
    if isinstance(exc, asyncssh.Error):
        return LmdevError(f"SSH to {where} failed: {exc.reason}", "check the host with `ssh` by hand")
    raise exc


class Connection:
    """A connection to one remote: run commands, stream output, copy files, forward ports."""

    def __init__(self, remote: Remote, conn: Any, jump: Any = None, host_key: str = "known") -> None:
        self.remote = remote
        self._conn = conn
        self._jump = jump
        self.host_key = host_key  # "known" or "added" (with --accept-new)

    # -- commands ------------------------------------------------------------------------------

    def run(self, command: str | list[str], input: str | None = None, timeout: float | None = 600,
            env: dict[str, str] | None = None) -> Result:
        cmd = command if isinstance(command, str) else shlex.join(command)
        if env:
            cmd = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + cmd
        async def go() -> Any:
            return await self._conn.run(cmd, input=input, check=False)

        try:
            r = call(go(), timeout)
        except Exception as exc:  # noqa: BLE001 - a dropped connection is the user's to know
            raise self._lost(exc) from None
        return Result(int(r.exit_status if r.exit_status is not None else 255),
                      str(r.stdout or ""), str(r.stderr or ""))

    def stream(self, command: str, on_line: Callable[[str], None]) -> int:
        """Run a command and call ``on_line`` for each line of its stdout (stderr is merged)."""
        import asyncssh

        async def go() -> int:
            proc = await self._conn.create_process(command, stderr=asyncssh.STDOUT)
            async for line in proc.stdout:
                on_line(line.rstrip("\n"))
            await proc.wait()
            return int(proc.exit_status if proc.exit_status is not None else 255)

        try:
            return call(go())
        except Exception as exc:  # noqa: BLE001
            raise self._lost(exc) from None

    def _lost(self, exc: BaseException) -> LmdevError:
        return LmdevError(f"the connection to {self.remote.name} ({self.remote.target}) was lost: "
                          f"{type(exc).__name__}: {exc}",
                          f"check the host with `lmdev remote check {self.remote.name}` and try again")

    # -- files ---------------------------------------------------------------------------------

    def put(self, pairs: list[tuple[Path, str]]) -> None:
        """Upload local files to remote paths (folders created as needed); each lands under a
        temporary name and is renamed into place, so a dropped upload leaves no half file."""
        async def go() -> None:
            async with self._conn.start_sftp_client() as sftp:
                made: set[str] = set()
                for local, remote_path in pairs:
                    parent = remote_path.rsplit("/", 1)[0]
                    if parent and parent not in made:
                        await sftp.makedirs(parent, exist_ok=True)
                        made.add(parent)
                    part = f"{parent}/.{remote_path.rsplit('/', 1)[-1]}.part" if parent else f".{remote_path}.part"
                    await sftp.put(str(local), part, preserve=True)
                    await sftp.posix_rename(part, remote_path)

        try:
            call(go())
        except Exception as exc:  # noqa: BLE001
            raise self._sftp_error(exc) from None

    def get(self, pairs: list[tuple[str, Path]]) -> None:
        async def go() -> None:
            async with self._conn.start_sftp_client() as sftp:
                for remote_path, local in pairs:
                    local.parent.mkdir(parents=True, exist_ok=True)
                    part = local.with_name(f".{local.name}.part")
                    await sftp.get(remote_path, str(part), preserve=True)
                    os.replace(part, local)  # never a half-copied file under its real name

        try:
            call(go())
        except Exception as exc:  # noqa: BLE001
            raise self._sftp_error(exc) from None

    def _sftp_error(self, exc: BaseException) -> LmdevError:
        text = str(exc)
        if "No space" in text or "quota" in text.lower() or "Failure" in text:
            return LmdevError(f"copying to {self.remote.name} failed: {text}",
                              "the remote disk may be full: free space there (df -h) and try again")
        return LmdevError(f"copying files with {self.remote.name} failed: {type(exc).__name__}: {text}",
                          "check the remote folder's permissions and free space")

    # -- ports ---------------------------------------------------------------------------------

    def forward(self, local_port: int, remote_port: int) -> Any:
        """Forward 127.0.0.1:local_port here to 127.0.0.1:remote_port on the remote."""
        async def go() -> Any:
            return await self._conn.forward_local_port("127.0.0.1", local_port, "127.0.0.1", remote_port)

        return call(go())

    def close(self) -> None:
        for c in (self._conn, self._jump):
            if c is not None:
                try:
                    c.close()
                    call(c.wait_closed(), 5)
                except Exception:  # noqa: BLE001 - closing a dead connection
                    pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def require_asyncssh() -> Any:
    try:
        import asyncssh
    except ImportError:
        raise LmdevError("lmdev remote needs asyncssh, which is not installed",
                         "pip install 'lmdev[remote]'") from None
    return asyncssh


async def _open(r: Remote, accept_new: bool, tunnel: Any = None) -> tuple[Any, str]:
    host, port, user, key = r.host, r.port, r.user, r.key
    asyncssh = require_asyncssh()

    verdict: dict[str, str] = {}
    kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, "login_timeout": CONNECT_TIMEOUT_S,
                              "client_factory": _make_client(accept_new, verdict),
                              "password_auth": False, "kbdint_auth": False}
    if port:
        kwargs["port"] = port
    if user:
        kwargs["username"] = user
    if key:
        kwargs["client_keys"] = [str(Path(key).expanduser())]
    if tunnel is not None:
        kwargs["tunnel"] = tunnel
    where = f"{user + '@' if user else ''}{host}{':' + str(port) if port else ''}"
    try:
        conn = await asyncio.wait_for(asyncssh.connect(host, **kwargs), CONNECT_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - translated into a one-line error
        raise _explain(exc, where, verdict) from None
    return conn, verdict.get("host_key", "known")


def connect(remote: Remote, accept_new: bool = False, jump: Remote | None = None) -> Connection:
    """Open a connection to ``remote`` (through ``jump`` or ``remote.jump`` when given)."""
    if jump is None and remote.jump:
        jump = load().remotes.get(remote.jump)  # another remote, with its own user, port and key
        if jump is None:
            user, host, port = parse_target(remote.jump)
            jump = Remote(name=remote.jump, host=host, user=user, port=port, key=remote.key)

    async def go() -> tuple[Any, Any, str]:
        tunnel = None
        if jump is not None:
            tunnel, _ = await _open(jump, accept_new)
        try:
            conn, verdict = await _open(remote, accept_new, tunnel)
        except BaseException:
            if tunnel is not None:
                tunnel.close()
            raise
        return conn, tunnel, verdict

    require_asyncssh()
    conn, tunnel, verdict = call(go())
    return Connection(remote, conn, tunnel, verdict)
