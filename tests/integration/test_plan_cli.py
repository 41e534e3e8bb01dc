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
    parts = ("weights", "gradients", "optimizer", "activations", "attention_scores", "logits", "optimizer_step",
             "grad_buckets", "kv_cache", "allocator", "overhead")
    for part in parts:
        assert isinstance(mem[f"{part}_bytes"], int)
    assert mem["weights_bytes"] == 4 * 124439808 and mem["optimizer_bytes"] == 8 * 124439808
    assert mem["total_bytes"] == sum(mem[f"{p}_bytes"] for p in parts) - mem["overlap_bytes"]
    assert mem["allocator_bytes"] > 0 and mem["optimizer_step_bytes"] > 0
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
    (["plan", "gpt2", "--seq", "-5", "--hardware", "h100"], "--seq must be at least 1"),
    (["plan", "gpt2", "--task", "serve", "--concurrency", "0", "--hardware", "h100"], "--concurrency"),
    (["plan", "llama-3-8b", "--task", "infer", "--precision", "bf16", "--hardware", "t4"],
     "bf16 is not supported on t4"),
    (["plan", "llama-3-8b", "--task", "infer", "--precision", "fp8", "--hardware", "a100-80gb"],
     "fp8 is not supported on a100-80gb"),
])
def test_bad_input_exit_2_one_line_no_traceback(tmp_path, args, expect):
    r = lmdev(*args, home=tmp_path)
    assert r.returncode == 2
    assert expect in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == ""


@pytest.mark.parametrize("flag, value", [("--tokens", "nan"), ("--tokens", "inf"), ("--tokens", "-1"),
                                         ("--batch", "nan"), ("--seq", "1e309"), ("--mfu", "nan")])
def test_non_finite_numbers_exit_2_naming_the_option(tmp_path, flag, value):
    r = lmdev("plan", "gpt2", flag, value, "--hardware", "h100", home=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == ""
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("lmdev: error: argument " + flag)


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


@pytest.mark.parametrize("fields, named", [
    ({"hidden_size": 100, "num_attention_heads": 3}, "'hidden_size' (100) is not divisible by 'num_attention_heads'"),
    ({"num_key_value_heads": 3}, "'num_key_value_heads' (3) does not divide 'num_attention_heads'"),
    ({"vocab_size": -4}, "'vocab_size'"),
    ({"num_hidden_layers": 0}, "'num_hidden_layers'"),
])
def test_impossible_config_exits_2_naming_the_field(tmp_path, fields, named):
    cfg = tmp_path / "config.json"
    base = {"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
            "vocab_size": 100, "num_hidden_layers": 2}
    cfg.write_text(json.dumps({**base, **fields}))
    r = lmdev("plan", str(cfg), "--hardware", "l4", home=tmp_path)
    assert r.returncode == 2 and named in r.stderr and "Traceback" not in r.stderr


def test_nan_in_config_exits_2_naming_the_field(tmp_path):
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "llama", "hidden_size": NaN, "num_attention_heads": 4, "intermediate_size": 128, '
                   '"vocab_size": 100, "num_hidden_layers": 2}')
    r = lmdev("plan", str(cfg), "--hardware", "l4", home=tmp_path)
    assert r.returncode == 2 and "'hidden_size'" in r.stderr and "Traceback" not in r.stderr


def test_infer_and_serve_modes(tmp_path):
    r = lmdev("plan", "llama-3-8b", "--task", "infer", "--batch", "4", "--seq", "2000", "--new-tokens", "200",
              "--hardware", "h100-sxm", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["memory"]["kv_cache_bytes"] == 4 * 2200 * 131072
    assert d["step_time"]["decode_seconds_per_token"] > 0 and d["step_time"]["prefill_seconds"] > 0
    r = lmdev("plan", "llama-3-8b", "--task", "serve", "--seq", "500", "--context", "4000", "--concurrency", "8",
              "--hardware", "a100-80gb", home=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "room for" in r.stdout and "sequences" in r.stdout


def test_what_to_buy_names_the_recommended_hardware_and_exclusions(tmp_path):
    r = lmdev("plan", "llama-3-8b", "--task", "infer", "--precision", "bf16", "--hardware", "t4,l4,a100-80gb",
              "--json", home=tmp_path)
    assert r.returncode == 2  # the first hardware (t4) has no bf16
    r = lmdev("plan", "llama-3-8b", "--task", "infer", "--hardware", "t4,l4,a100-80gb", "--json", home=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["workload"]["precision"] == "fp16"  # the default where the first hardware has no bf16
    assert d["recommended_hardware"] == d["comparison"][0]
    r = lmdev("plan", "llama-3-8b", "--task", "infer", "--hardware", "a100-80gb,t4", "--json", home=tmp_path)
    d = json.loads(r.stdout)
    t4 = next(o for o in d["comparison"] if o["hardware"] == "t4")
    assert t4["precision"] == "fp16" and "bf16 not offered" in t4["note"]
    assert all(e["reason"] for e in d["excluded"])


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
    assert abs(m["memory_error"]) < 0.5  # tiny model: a sanity bound; the accuracy budget is benchmarks/plan_accuracy.py
    assert m["step_seconds"] > 0 and m["predicted_seconds"] > 0 and m["time_error"] is not None
    calib = json.loads((tmp_path / "plan" / "calibration.json").read_text())
    (key, entry), = calib["machines"].items()
    assert key == m["calibration_key"] and "/cpu/torch-" in key
    assert entry["time_factor"] == pytest.approx(m["step_seconds"] / m["predicted_seconds"])
    # a later plan uses what was learned, and says so
    r2 = lmdev("plan", str(cfg), "--precision", "fp32", "--batch", "2", "--seq", "128", "--json", home=tmp_path)
    d2 = json.loads(r2.stdout)
    assert d2["calibrated"] is True and d2["calibration"]["key"] == key
    assert d2["memory"]["total_bytes"] == pytest.approx(m["measured_bytes"], rel=0.01)
    r3 = lmdev("plan", str(cfg), "--precision", "fp32", "--batch", "2", "--seq", "128", home=tmp_path)
    assert "uses the calibration measured on this machine" in r3.stdout
