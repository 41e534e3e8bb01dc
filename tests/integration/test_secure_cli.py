"""``lmdev secure`` end to end: real subprocesses, real files, kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_lmdev
from tests.unit.secure import corpus

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"LMDEV_HOME": str(tmp_path / "home"), "LMDEV_TRUST": ""}


def test_scan_json_exits_1_naming_the_unsafe_files(tmp_path, env):
    canary = tmp_path / "CANARY"
    corpus.write_all({k: v for k, v in corpus.malicious(canary).items() if k.endswith(".pkl")}, tmp_path / "m")
    corpus.write_all({"plain.pkl": corpus.benign()["plain_p4.pkl"]}, tmp_path / "m")
    proc = run_lmdev("secure", "scan", str(tmp_path / "m"), "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    jsonschema = pytest.importorskip("jsonschema")
    schema = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "secure-scan.schema.json"
    jsonschema.validate(doc, json.loads(schema.read_text()))
    verdicts = {Path(f["path"]).name: f["verdict"] for f in doc["files"]}
    assert verdicts.pop("plain.pkl") == "safe" and set(verdicts.values()) == {"unsafe"}
    assert not canary.exists()
    ok = run_lmdev("secure", "scan", str(tmp_path / "m" / "plain.pkl"), env=env)
    assert ok.returncode == 0 and "0 unsafe" in ok.stdout


def test_run_guard_refuses_an_unsafe_pickle_in_the_script(tmp_path, env):
    canary = tmp_path / "CANARY"
    (tmp_path / "evil.pkl").write_bytes(corpus.global_call("os", "system", f"touch {canary}", 2))
    (tmp_path / "good.npy").write_bytes(corpus._npy_bytes(__import__("numpy").arange(3)))
    script = tmp_path / "train.py"
    script.write_text("import pickle, numpy\n"
                      "print('good', numpy.load('good.npy', allow_pickle=True).tolist())\n"
                      "with open('evil.pkl', 'rb') as f:\n    pickle.load(f)\n")
    proc = run_lmdev("run", "--guard", "--no-telemetry", "--no-autolog", str(script), cwd=tmp_path, env=env)
    assert proc.returncode != 0
    assert "good [0, 1, 2]" in proc.stdout
    assert "os.system" in proc.stderr and "refusing" in proc.stderr
    assert not canary.exists()
    unguarded = script.with_name("plain.py")
    unguarded.write_text("import pickle\nprint(pickle.loads(pickle.dumps({'ok': 1})))\n")
    proc = run_lmdev("run", "--guard", "--no-telemetry", "--no-autolog", str(unguarded), cwd=tmp_path, env=env)
    assert proc.returncode == 0 and "{'ok': 1}" in proc.stdout


def test_kill_9_during_audit_writes_leaves_no_torn_entry(tmp_path, env):
    code = ("from lmdev.secure import audit\n"
            "import sys\nprint('ready', flush=True)\n"
            "while True:\n    audit.append('stress', blob='x' * 3000)\n")
    child = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, **env), stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"ready"
    log = Path(env["LMDEV_HOME"]) / "audit.log"
    while not log.exists() or log.stat().st_size < 100_000:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    proc = run_lmdev("secure", "audit", "verify", "--json", env=env)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 0 and doc["ok"] and doc["entries"] > 10 and not doc["torn_tail"]
    assert log.read_bytes().endswith(b"\n")


def test_audit_verify_names_the_edited_entry(tmp_path, env):
    (tmp_path / "f.pkl").write_bytes(b"\x80\x04K\x01.")
    for _ in range(3):
        run_lmdev("secure", "scan", str(tmp_path / "f.pkl"), env=env)
    log = Path(env["LMDEV_HOME"]) / "audit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"verdict":"safe"', b'"verdict":"SAFE"')
    log.write_bytes(b"".join(lines))
    proc = run_lmdev("secure", "audit", "verify", env=env)
    assert proc.returncode == 1 and "entry 2" in proc.stdout and "edited" in proc.stdout


def test_sign_verify_and_encrypt_decrypt_from_the_cli(tmp_path, env):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w" * 100)
    assert run_lmdev("secure", "keygen", "--signing", env=env).returncode == 0
    assert run_lmdev("secure", "sign", str(folder), env=env).returncode == 0
    assert run_lmdev("secure", "verify", str(folder), env=env).returncode == 0
    (folder / "model.safetensors").write_bytes(b"v" * 100)
    proc = run_lmdev("secure", "verify", str(folder), env=env)
    assert proc.returncode == 1 and "changed: model.safetensors" in proc.stdout
    assert run_lmdev("secure", "keygen", env=env).returncode == 0
    assert run_lmdev("secure", "encrypt", str(folder), env=env).returncode == 0
    proc = run_lmdev("secure", "decrypt", str(tmp_path / "model.tar.age"), "--out", str(tmp_path / "back"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "back" / "model.safetensors").read_bytes() == b"v" * 100
    bad = run_lmdev("secure", "decrypt", str(folder / "model.safetensors"), env=env)
    assert bad.returncode == 2 and "not an age-encrypted file" in bad.stderr


def test_check_finds_old_secrets_and_fix_scrubs_them(tmp_path, env):
    home = Path(env["LMDEV_HOME"])
    script = tmp_path / "s.py"
    script.write_text("print('hello')\n")
    assert run_lmdev("run", "--no-telemetry", "--no-autolog", str(script), env=env, cwd=tmp_path).returncode == 0
    token = "hf_" + "Zz9Yy8Xx7Ww6Vv5Uu4Tt3Ss2Rr1Qq0Pp9Oo8"
    conn = sqlite3.connect(home / "lmdev.db")  # a run recorded before redaction existed
    with conn:
        conn.execute("UPDATE runs SET config = ?", (json.dumps({"hf_token": token}),))
    conn.close()
    (tmp_path / "load.py").write_text("model = from_pretrained('x', trust_remote_code=True)\n")
    os.chmod(home, 0o755)
    proc = run_lmdev("secure", "check", str(tmp_path), "--json", env=env, cwd=tmp_path)
    doc = json.loads(proc.stdout)
    checks = {i["check"] for i in doc["issues"]}
    assert proc.returncode == 1 and {"secret", "store-permissions", "remote-code"} <= checks
    fixed = run_lmdev("secure", "check", str(tmp_path), "--fix", "--json", env=env, cwd=tmp_path)
    assert json.loads(fixed.stdout)["errors"] == 0
    assert token not in (home / "lmdev.db").read_bytes().decode("latin-1")
    assert (home.stat().st_mode & 0o777) == 0o700


def test_a_refused_load_exits_2_and_trust_lets_it_through(tmp_path, env):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_head": 2,
                                                    "n_embd": 64, "vocab_size": 100, "n_positions": 64}))
    (folder / "extra.pkl").write_bytes(corpus.global_call("os", "system", "true", 2))
    proc = run_lmdev("plan", str(folder), "--json", env=env)
    assert proc.returncode == 2 and "refusing" in proc.stderr and "--trust" in proc.stderr
    proc = run_lmdev("--trust", str(folder / "extra.pkl"), "plan", str(folder), "--json", env=env)
    assert proc.returncode in (0, 1), proc.stderr
    assert '"event":"trust"' in (Path(env["LMDEV_HOME"]) / "audit.log").read_text()
