"""Setup installs and remote commands leave an audit entry (secrets redacted) through
``audit.record``, which never fails the action it records."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lmdev.secure import audit

TOKEN = "hf_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7"


def _events(home: Path) -> list[dict]:
    return [json.loads(line) for line in (home / "audit.log").read_text().splitlines()]


def test_record_redacts_cuts_and_chains(_home: Path) -> None:
    audit.record("remote.exec", command=f"HF_TOKEN={TOKEN} python train.py", note="x" * 5000)
    (entry,) = _events(_home)
    assert entry["event"] == "remote.exec" and TOKEN not in entry["command"] and "[REDACTED]" in entry["command"]
    assert len(entry["note"]) == 1003 and audit.verify().ok


def test_record_never_raises(_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*a: object, **k: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(audit, "append", broken)
    with pytest.warns(Warning, match="disk on fire"):
        audit.record("setup.install", python="/x")


def test_a_setup_install_is_recorded_before_it_runs(_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmdev.setup import installer

    ran: list[list[str]] = []
    monkeypatch.setattr(installer, "run_tool", lambda cmd, what, timeout=3600: ran.append(cmd))
    target = installer.Target("/venv/bin/python", "3.11", tmp_path)
    installer.install_lock("pip", target, tmp_path / "pylock.toml")
    (entry,) = _events(_home)
    assert ran and entry["event"] == "setup.install" and entry["lock"] == str(tmp_path / "pylock.toml")


def test_a_remote_lmdev_command_is_recorded(_home: Path, tmp_path: Path) -> None:
    pytest.importorskip("asyncssh")
    import sys

    from lmdev.remote import ops
    from lmdev.remote.bootstrap import RemoteEnv
    from lmdev.remote.hosts import Remote
    from lmdev.remote.ssh import Connection

    class Local:  # runs the command here, the way asyncssh runs it there
        async def run(self, cmd: str, input: str | None = None, check: bool = False) -> object:
            done = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True)
            return type("R", (), {"exit_status": done.returncode, "stdout": done.stdout, "stderr": done.stderr})

    conn = Connection(Remote("gpu1", "127.0.0.1"), Local())
    env = RemoteEnv(str(tmp_path / "root"), sys.executable, {})
    result = ops.lmdev_on(conn, env, ["secure", "--help"])
    assert result.code == 0 and "audit" in result.stdout, result.stderr
    (entry,) = [e for e in _events(_home) if e["event"] == "remote.exec"]
    assert entry["remote"] == "gpu1" and "-m lmdev secure --help" in entry["command"]
