"""`lmdev plan` and `lmdev bench` as a user runs them: a subprocess, its JSON, exit codes, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SRC = str(Path(__file__).resolve().parents[2] / "src")


def lmdev(*args: str, home: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC, COLUMNS="120")
    if home is not None:
        env["LMDEV_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "lmdev", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)


def test_plan_json_document(tmp_path):
    r = lmdev("plan", "gpt2", "--precision", "fp32", "--batch", "8", "--seq", "512", "--hardware", "rtx-4090",
              "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schema"] == "lmdev.plan/1"
    assert d["model"]["params"] == 124439808
    mem = d["memory"]
    for part in ("weights", "gradients", "optimizer", "activations", "logits", "kv_cache", "overhead"):
        assert isinstance(mem[f"{part}_bytes"], int)
    assert mem["weights_bytes"] == 4 * 124439808 and mem["optimizer_bytes"] == 8 * 124439808
    assert mem["total_bytes"] == sum(mem[f"{p}_bytes"] for p in ("weights", "gradients", "optimizer",
                                                                  "activations", "logits", "kv_cache",
                                                                  "overhead")) - mem["overlap_bytes"]
    assert d["fits"] is True and d["max_batch"] >= 8 and isinstance(d["recommendations"], list)
    assert d["compute"]["tokens_per_s"] > 0 and d["compute"]["seconds"] > 0


def test_plan_human_output_and_what_to_buy(tmp_path):
    r = lmdev("plan", "llama-3-70b", "--task", "qlora", "--seq", "2048", "--hardware", "rtx-4090,a100-80gb,h100-sxm",
              home=tmp_path)
    assert r.returncode == 0, r.stderr
    for text in ("Memory per device", "total", "What to buy", "a100-80gb", "rtx-4090"):
        assert text in r.stdout


@pytest.mark.parametrize("args, expect", [
    (["plan", "llama-3-8"], "did you mean"),
    (["plan", "gpt2", "--batch", "0", "--hardware", "h100"], "--batch must be at least 1"),
    (["plan", "gpt2", "--hardware", "h100-sxm,tpu9"], "unknown hardware 'tpu9'"),
    (["plan", "gpt2", "--task", "train", "--precision", "int4", "--hardware", "h100"], "--task qlora"),
    (["plan", "nowhere/config.json"], "no such file"),
    (["plan"], "no MODEL given"),
])
def test_bad_input_exit_2_one_line_no_traceback(tmp_path, args, expect):
    r = lmdev(*args, home=tmp_path)
    assert r.returncode == 2
    assert expect in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == ""


def test_unknown_hardware_lists_catalog(tmp_path):
    r = lmdev("plan", "gpt2", "--hardware", "quantum", home=tmp_path)
    assert r.returncode == 2 and "h100-sxm" in r.stderr and "rtx-4090" in r.stderr and "mi300x" in r.stderr


def test_malformed_config_names_the_field(tmp_path):
    cfg = tmp_path / "m"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                                 "num_attention_heads": 4, "intermediate_size": "wide",
                                                 "vocab_size": 100, "num_hidden_layers": 2}))
    r = lmdev("plan", str(cfg), "--hardware", "l4", home=tmp_path)
    assert r.returncode == 2 and "'intermediate_size'" in r.stderr and "Traceback" not in r.stderr


def test_sequence_beyond_maximum_is_a_warning(tmp_path):
    r = lmdev("plan", "gpt2", "--seq", "4096", "--hardware", "h100", "--json", home=tmp_path)
    assert r.returncode == 0
    assert "warning" in r.stderr and "1024" in r.stderr
    assert json.loads(r.stdout)["warnings"]


def test_help_does_not_import_torch():
    code = ("import sys; from lmdev.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "try:\n    main(['plan', 'gpt2', '--hardware', 'h100', '--json'])\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=SRC), timeout=120, check=False)
    assert r.returncode == 0, r.stderr


def test_list_models_and_hardware(tmp_path):
    r = lmdev("plan", "--list-models", "--json", home=tmp_path)
    names = {m["name"]: m for m in json.loads(r.stdout)}
    assert names["llama-3.1-405b"]["params"] == 405853388800
    r = lmdev("plan", "--list-hardware", "--json", home=tmp_path)
    assert {"h100-sxm", "mi300x"} <= {g["name"] for g in json.loads(r.stdout)}


def test_bench_quick_saves_and_plan_uses_it(tmp_path):
    pytest.importorskip("torch")
    r = lmdev("bench", "--quick", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schema"] == "lmdev.bench/1"
    fp32 = [row for row in d["cpu"]["matmul"]["fp32"] if row.get("flops")]
    assert fp32 and all(row["flops"] > 0 for row in fp32)
    assert d["cpu"]["memory_bandwidth_bytes_s"] > 0
    assert d["disk"]["write_bytes_s"] > 0 and d["disk"]["read_bytes_s"] > 0
    saved = json.loads((tmp_path / "bench" / "latest.json").read_text())
    assert saved["created"] == d["created"]
    r = lmdev("plan", "gpt2", "--precision", "fp32", "--json", home=tmp_path)
    d = json.loads(r.stdout)
    if d["hardware"]["kind"] == "cpu":
        assert d["compute"]["throughput_source"] == "bench"
        assert d["compute"]["peak_flops_per_device"] == max(row["flops"] for row in fp32)


def test_measure_tiny_model_on_cpu(tmp_path):
    pytest.importorskip("transformers")
    cfg = tmp_path / "tiny"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 352, "vocab_size": 2000, "num_hidden_layers": 2, "max_position_embeddings": 256}))
    r = lmdev("plan", str(cfg), "--precision", "fp32", "--batch", "2", "--seq", "128", "--hardware", "this",
              "--measure", "--json", home=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    if d["hardware"]["kind"] != "cpu":
        pytest.skip("this test measures on a CPU machine")
    m = d["measurement"]
    assert m["measured_bytes"] > 0 and m["predicted_bytes"] == d["memory"]["total_bytes"]
    assert abs(m["error"]) < 0.5  # tiny model: a sanity bound; the accuracy budget is benchmarks/plan_accuracy.py
    calib = json.loads((tmp_path / "plan" / "calibration.json").read_text())
    assert "cpu_bytes" in calib["machines"]["cpu"]
    # a later plan uses what was learned
    r2 = lmdev("plan", str(cfg), "--precision", "fp32", "--batch", "2", "--seq", "128", "--json", home=tmp_path)
    d2 = json.loads(r2.stdout)
    assert d2["calibrated"] is True
    assert d2["memory"]["overhead_bytes"] == int(calib["machines"]["cpu"]["cpu_bytes"])
