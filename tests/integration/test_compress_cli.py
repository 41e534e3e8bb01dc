"""`lmdev compress` end to end: a real training run, the real CLI, the variant written, read back,
re-measured and recorded as a run linked to its source; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_lmdev

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FAST = ["--threads", "1", "--budget", "0.1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("compress")
    env = {"LMDEV_HOME": str(cwd / ".lmdev"), "LMDEV_TELEMETRY": "0", "OMP_NUM_THREADS": "1"}
    r = run_lmdev("train", str(REPO / "examples/digits_mlp.yaml"), "--set", "train.max_steps=200",
                  "--set", "checkpoint.every=200", cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    return cwd, env


def test_quantise_a_run_write_load_eval_and_record(trained):
    cwd, env = trained
    r = run_lmdev("compress", "digits-mlp", "--method", "quantize", "--backend", "torch.ao-int8", "-o", "out/int8",
                  "--json", *FAST, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "lmdev.compress/1" and doc["chosen"] == "torch.ao-int8"
    (v,) = doc["variants"]
    assert v["measurement"]["file_bytes"] < 0.5 * doc["baseline"]["measurement"]["file_bytes"]
    assert v["measurement"]["quality"]["top1_agreement"] > 0.95
    assert v["measurement"]["peak_memory_bytes"] > 0 and doc["baseline"]["measurement"]["peak_memory_bytes"] > 0
    out = cwd / "out/int8"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"]["backend"] == "torch.ao-int8" and manifest["run_id"] == doc["run_id"]

    from lmdev.compress import load
    from lmdev.train.data import load_digits

    x, y = load_digits()
    model = load(out)
    acc = (model(torch.from_numpy(x / 16.0).float()).argmax(1) == torch.from_numpy(y)).float().mean()
    assert acc > 0.8  # the int8 model still reads digits

    shown = run_lmdev("runs", "show", doc["run_id"], "--json", cwd=cwd, env=env)
    run = json.loads(shown.stdout)
    assert run["parent_id"] == doc["source"]["run_id"] and "lmdev-compress" in run["tags"]

    ev = run_lmdev("compress", "eval", "out/int8", "--json", "--no-memory", *FAST, cwd=cwd, env=env)
    assert ev.returncode == 0, ev.stderr
    again = json.loads(ev.stdout)
    assert again["variants"][0]["backend"] == "torch.ao-int8"
    assert again["variants"][0]["measurement"]["quality"]["accuracy"] == v["measurement"]["quality"]["accuracy"]

    # quantising the int8 variant again is refused
    twice = run_lmdev("compress", "out/int8", "--method", "quantize", *FAST, cwd=cwd, env=env)
    assert twice.returncode == 2 and "already quantised" in twice.stderr and "Traceback" not in twice.stderr


def test_bad_input_exits_2_and_writes_nothing(trained, tmp_path):
    cwd, env = trained
    r = run_lmdev("compress", "digits-mlp", "--method", "prune", "--ratio", "0.999", "-o", "out/p", *FAST,
                  cwd=cwd, env=env)
    assert r.returncode == 2 and "at least one must stay" in r.stderr
    assert not (cwd / "out/p").exists()

    hf = tmp_path / "pickled"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "gpt2"}')
    (hf / "pytorch_model.bin").write_bytes(b"\x80\x04K.")
    r = run_lmdev("compress", f"hf:{hf}", cwd=cwd, env=env)
    assert r.returncode == 2 and "pickled" in r.stderr

    r = run_lmdev("compress", "digits-mlp", "--method", "prune", "--backend", "torch-fp8", "-o", "out/f",
                  cwd=cwd, env=env)
    assert r.returncode == 2 and "does not apply to method prune" in r.stderr and "Traceback" not in r.stderr
    assert not (cwd / "out/f").exists()

    r = run_lmdev("compress", "no-such-run", cwd=cwd, env=env)
    assert r.returncode == 2 and "no run matches" in r.stderr
