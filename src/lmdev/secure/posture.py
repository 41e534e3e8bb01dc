"""``lmdev secure check``: the project's security posture, as findings with a fix each.

Checks: the store folder's permissions (0700), dashboards serving a non-loopback address without
a token, model files that are unsafe / unsigned / pickles where safetensors would do,
``trust_remote_code=True`` in code and configs, and secrets recorded in the store before
redaction existed (``fix=True`` scrubs them and tightens the permissions).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lmdev.fsutil import atomic_write_bytes
from lmdev.secure import audit
from lmdev.secure.redact import redact, redact_argv, redact_value
from lmdev.secure.scan import scan_file
from lmdev.secure.signing import SIGNATURE_NAME
from lmdev.secure.types import ScanResult

SKIP_DIRS = {".git", ".venv", "venv", "node_modules", "__pycache__", ".mypy_cache", ".pytest_cache", ".tox"}
CODE_EXTS = {".py", ".yaml", ".yml", ".json", ".toml", ".cfg", ".ipynb"}
REMOTE_CODE = re.compile(r"trust_remote_code\s*[=:]\s*[\"']?(?:True|true|1)\b")
TENSOR_ONLY = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter"}
MAX_CODE_BYTES = 2 * 1024 * 1024


@dataclass
class Issue:
    check: str          # store-permissions, dashboard, unsafe-model, unsigned, pickle, remote-code, secret
    severity: str       # error | warning
    path: str
    message: str
    fix: str
    fixed: bool = False


@dataclass
class Posture:
    root: str
    home: str
    issues: list[Issue] = field(default_factory=list)
    scanned: int = 0

    @property
    def errors(self) -> int:
        return sum(1 for i in self.issues if i.severity == "error" and not i.fixed)


def _files(root: Path, home: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and Path(folder, d) != home)
        for name in sorted(files):
            yield Path(folder, name)


def _store_permissions(home: Path, fix: bool) -> list[Issue]:
    if not home.is_dir():
        return []
    mode = stat.S_IMODE(home.stat().st_mode)
    if mode & 0o077 == 0:
        return []
    issue = Issue("store-permissions", "error", str(home), f"the store folder is mode {mode:o}: other users "
                  "can read configs, logs and checkpoints", f"chmod 700 {home}")
    if fix:
        os.chmod(home, 0o700)
        issue.fixed = True
    return [issue]


def _dashboards() -> list[Issue]:
    try:
        import psutil
    except ImportError:
        return []
    out = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "ui" not in cmd or not any("lmdev" in c for c in cmd[:3]):
            continue
        host = cmd[cmd.index("--host") + 1] if "--host" in cmd[:-1] else "127.0.0.1"
        if host not in ("127.0.0.1", "localhost", "::1") and "--no-auth" in cmd:
            out.append(Issue("dashboard", "error", f"pid {proc.info['pid']}", f"a dashboard serves {host} "
                             "without a token (--no-auth)", "restart it without --no-auth"))
    return out


def _model_issues(path: Path, result: ScanResult) -> list[Issue]:
    if result.verdict == "skipped":
        return []
    if result.verdict == "unsafe":
        return [Issue("unsafe-model", "error", str(path), result.findings[0].message,
                      f"delete it, or see `lmdev secure scan {path}`")]
    out = []
    storages = {c for c in result.callables if c.startswith("torch.") and c.endswith("Storage")}
    if (result.format in ("torch-zip", "torch-legacy", "pickle") and storages
            and set(result.callables) <= TENSOR_ONLY | storages):
        out.append(Issue("pickle", "warning", str(path), f"a {result.format} file holding only tensors",
                         "save it as safetensors (safetensors.torch.save_file)"))
    if not (path.parent / SIGNATURE_NAME).is_file() and not path.with_name(path.name + ".sig").is_file():
        out.append(Issue("unsigned", "warning", str(path), "neither the model file nor its folder is signed",
                         f"lmdev secure sign {path.parent}"))
    return out


def _remote_code(path: Path) -> list[Issue]:
    if path.suffix.lower() not in CODE_EXTS or path.stat().st_size > MAX_CODE_BYTES:
        return []
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for m in REMOTE_CODE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        out.append(Issue("remote-code", "warning", f"{path}:{line}", "trust_remote_code=True runs the model "
                         "repository's Python code", "drop it, or pin and review the code it loads"))
    return out


def _store_secrets(home: Path, fix: bool) -> list[Issue]:
    out: list[Issue] = []
    db = home / "lmdev.db"
    if db.is_file():
        out += _db_secrets(db, fix)
    runs = home / "runs"
    if runs.is_dir():
        for log in sorted(runs.glob("*/*.log")):
            text = log.read_text("utf-8", errors="surrogateescape")
            clean = redact(text)
            if clean != text:
                issue = Issue("secret", "error", str(log), "a secret in a recorded console log",
                              "lmdev secure check --fix")
                if fix:
                    atomic_write_bytes(log, clean.encode("utf-8", "surrogateescape"))
                    issue.fixed = True
                out.append(issue)
    return out


def _db_secrets(db: Path, fix: bool) -> list[Issue]:
    out = []
    conn = sqlite3.connect(db, timeout=10)
    try:
        rows = conn.execute("SELECT rowid, id, config, command FROM runs").fetchall()
        for rowid, run_id, config, command in rows:
            new_config = json.dumps(redact_value(json.loads(config or "{}")))
            new_command = json.dumps(redact_argv(json.loads(command))) if command else command
            if new_config != json.dumps(json.loads(config or "{}")) or new_command != command and command:
                issue = Issue("secret", "error", f"{db}:run {run_id}", "a secret in the run's config or "
                              "command line", "lmdev secure check --fix")
                if fix:
                    with conn:
                        conn.execute("UPDATE runs SET config = ?, command = ? WHERE rowid = ?",
                                     (new_config, new_command, rowid))
                    issue.fixed = True
                out.append(issue)
        for rowid, message in conn.execute("SELECT rowid, message FROM events").fetchall():
            if redact(message) != message:
                issue = Issue("secret", "error", f"{db}:event {rowid}", "a secret in a recorded event",
                              "lmdev secure check --fix")
                if fix:
                    with conn:
                        conn.execute("UPDATE events SET message = ? WHERE rowid = ?", (redact(message), rowid))
                    issue.fixed = True
                out.append(issue)
    finally:
        conn.close()
    return out


def check(root: Path, home: Path, fix: bool = False) -> Posture:
    posture = Posture(str(root), str(home))
    posture.issues += _store_permissions(home, fix)
    posture.issues += _dashboards()
    for path in _files(root.resolve(), home.resolve()):
        result = scan_file(path, explicit=False, log=False)
        posture.scanned += result.verdict != "skipped"
        posture.issues += _model_issues(path, result) + _remote_code(path)
    posture.issues += _store_secrets(home, fix)
    if fix:
        audit.append("check-fix", root=str(root), fixed=sum(i.fixed for i in posture.issues))
    return posture
