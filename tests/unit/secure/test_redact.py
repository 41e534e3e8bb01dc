"""Secrets never reach the run store: output, environment, configs and command lines."""

from __future__ import annotations

import io
import json
import sqlite3

from lmdev.secure.redact import MASK, RedactingWriter, redact, redact_argv, redact_value

HF = "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3f"
OPENAI = "sk-proj-" + "Xy12Ab34Cd56Ef78Gh90Ij12Kl34"
AWS_ID, AWS_SECRET = "AKIA" + "IOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
WANDB = "0123456789abcdef0123456789abcdef01234567"
SECRETS = (HF, OPENAI, AWS_ID, AWS_SECRET, GITHUB, WANDB, "hunter2hunter2")


def test_tokens_in_console_output_are_masked():
    text = (f"logging in with {HF}\nclient = OpenAI(api_key='{OPENAI}')\n"
            f"AWS_ACCESS_KEY_ID={AWS_ID}\naws_secret_access_key = {AWS_SECRET}\n"
            f"git clone https://{GITHUB}@github.com/x/y\nWANDB_API_KEY={WANDB}\nDB_PASSWORD: hunter2hunter2\n")
    out = redact(text)
    assert not any(s in out for s in SECRETS)
    assert out.count(MASK) == 7


def test_ordinary_values_are_kept():
    text = "learning_rate=0.001 key_size=64 tokenizer=gpt2 max_tokens=512 sha=0123abc"
    assert redact(text) == text


def test_env_and_config_values_under_secret_names_are_masked():
    env = {"HF_TOKEN": HF, "WANDB_API_KEY": WANDB, "PATH": "/usr/bin", "OMP_NUM_THREADS": "4"}
    assert redact_value(env) == {"HF_TOKEN": MASK, "WANDB_API_KEY": MASK, "PATH": "/usr/bin",
                                 "OMP_NUM_THREADS": "4"}
    config = {"optim": {"lr": 0.1}, "hub": {"token": "abc123def456"}, "note": f"uses {OPENAI}"}
    assert redact_value(config) == {"optim": {"lr": 0.1}, "hub": {"token": MASK}, "note": f"uses {MASK}"}


def test_command_lines_hide_secret_flags():
    argv = ["train.py", "--hf-token", HF, "--lr", "3e-4", "--password=hunter2hunter2", "--api-key", "zzzzzzzz"]
    assert redact_argv(argv) == ["train.py", "--hf-token", MASK, "--lr", "3e-4", f"--password={MASK}",
                                 "--api-key", MASK]


def test_a_token_split_across_writes_is_still_masked():
    raw = io.BytesIO()
    raw.close = lambda: None  # type: ignore[method-assign]
    w = RedactingWriter(raw)
    line = f"token={HF} done\n".encode()
    for i in range(0, len(line), 5):
        w.write(line[i:i + 5])
    w.close()
    assert HF.encode() not in raw.getvalue() and MASK.encode() in raw.getvalue()


def test_the_run_store_records_redacted_config_and_command(_home, monkeypatch):
    import sys

    import lmdev

    monkeypatch.setattr(sys, "argv", ["train.py", "--token", HF])
    run = lmdev.init("r", config={"hub_token": HF, "lr": 0.1, "notes": f"key {OPENAI}"}, telemetry=False)
    run.log_config({"wandb_api_key": WANDB})
    run.event(f"pushed with {GITHUB}")
    lmdev.finish()
    conn = sqlite3.connect(_home / "lmdev.db")
    config, command = conn.execute("SELECT config, command FROM runs").fetchone()
    events = " ".join(m for (m,) in conn.execute("SELECT message FROM events"))
    stored = config + command + events
    assert not any(s in stored for s in SECRETS)
    assert json.loads(config)["lr"] == 0.1


def test_numbers_under_key_like_names_are_kept():
    assert redact_value({"num_key": 5, "rope_key": None, "api_key": "abc12345"}) == \
        {"num_key": 5, "rope_key": None, "api_key": MASK}
