"""MODEL arguments, the measurement worker's model, and the per-machine calibration store."""

from __future__ import annotations

import json

import pytest

from lmdev.catalog.models import ModelSpec, param_count, presets
from lmdev.errors import LmdevError
from lmdev.plan.measure import Measurement, learn, load_calibration
from lmdev.plan.memory import Workload, estimate_memory
from lmdev.plan.model_input import resolve_model


def test_preset_and_alias():
    spec, source = resolve_model("meta-llama/Llama-3.1-70B")
    assert spec.name == "llama-3.1-70b" and "preset" in source


def test_config_json_file_and_folder(tmp_path):
    cfg = dict(presets()["qwen2.5-0.5b"].config)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    a, _ = resolve_model(str(tmp_path))
    b, src = resolve_model(str(tmp_path / "config.json"))
    assert param_count(a) == param_count(b) == 494032768 and "config" in src


def test_folder_without_config(tmp_path):
    with pytest.raises(LmdevError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_invalid_json_names_the_position(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{"model_type": "llama",\n "hidden_size": }')
    with pytest.raises(LmdevError, match="line 2"):
        resolve_model(str(p))


def test_malformed_field_named(tmp_path):
    cfg = dict(presets()["llama-3.2-1b"].config, num_attention_heads=0)
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    with pytest.raises(LmdevError, match="'num_attention_heads'"):
        resolve_model(str(p))


def test_missing_file_and_unknown_preset():
    with pytest.raises(LmdevError, match="no such file"):
        resolve_model("nowhere/config.json")
    with pytest.raises(LmdevError) as err:
        resolve_model("mistral-7")
    assert "mistral-7b" in err.value.hint


def test_lmdev_training_config(tmp_path):
    p = tmp_path / "train.json"
    p.write_text(json.dumps({"model": {"name": "mine", "n_layers": 2, "hidden": 64, "n_heads": 4, "ffn": 256,
                                       "vocab": 500, "mlp": "swiglu"}, "data": {"path": "x"}}))
    spec, src = resolve_model(str(p))
    assert spec.name == "mine" and spec.n_layers == 2 and "lmdev config" in src
    p.write_text(json.dumps({"model": {"n_layers": 2, "hidden": 64, "n_heads": 4, "ffn": 256, "vocab": 5,
                                       "width": 3}}))
    with pytest.raises(LmdevError, match="'width'"):
        resolve_model(str(p))


@pytest.mark.parametrize("spec", [
    ModelSpec(name="l", family="llama", n_layers=2, hidden=64, n_heads=4, n_kv_heads=2, ffn=176, vocab=300,
              mlp="swiglu", activation="silu", max_positions=128),
    ModelSpec(name="g", family="gpt2", n_layers=2, hidden=64, n_heads=4, ffn=256, vocab=300, max_positions=128,
              mlp="gelu", activation="gelu_new", tied_embeddings=True, norm="layernorm", qkv_bias=True,
              out_bias=True, mlp_bias=True, learned_positions=True),
])
def test_worker_builds_the_planned_model(spec):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lmdev.plan.worker import hf_config

    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf_config(spec.to_dict(), "sdpa"))
    assert sum(p.numel() for p in model.parameters()) == param_count(spec)


def test_calibration_is_stored_per_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("LMDEV_HOME", str(tmp_path))
    spec = presets()["gpt2"].spec
    w = Workload(task="infer", precision="fp32", batch=1, seq=64)
    pred = estimate_memory(spec, w, device="cpu")
    m = Measurement(device="cpu", predicted_bytes=pred.total_bytes, measured_bytes=pred.total_bytes + 50_000_000,
                    step_seconds=0.2, layers_measured=12, extrapolated=False)
    learned = learn("host/cpu/torch-9", m, pred, predicted_seconds=0.1)
    assert learned["cpu_bytes"] == pred.overhead_bytes + 50_000_000
    assert learned["time_factor"] == pytest.approx(2.0)  # measured twice as long as predicted
    assert load_calibration("host/cpu/torch-9")["cpu_bytes"] == learned["cpu_bytes"]
    assert load_calibration("host/cpu/torch-10") == {}  # another framework version: measured again
    again = estimate_memory(spec, w, device="cpu", overhead=load_calibration("host/cpu/torch-9"))
    assert again.total_bytes == m.measured_bytes
    # a training shape: glibc's retained share of the heap-served transients is what is learned
    wt = Workload(task="train", precision="fp32", batch=2, seq=256)
    pt = estimate_memory(spec, wt, device="cpu")
    base = pt.total_bytes - pt.allocator_bytes
    mt = Measurement(device="cpu", predicted_bytes=pt.total_bytes, measured_bytes=base + pt.allocator_basis_bytes // 2,
                     step_seconds=1.0, layers_measured=12, extrapolated=False)
    assert learn("host2/cpu/torch-9", mt, pt)["cpu_heap_fraction"] == pytest.approx(0.5, abs=1e-6)
    again = estimate_memory(spec, wt, device="cpu", overhead=load_calibration("host2/cpu/torch-9"))
    assert again.total_bytes == pytest.approx(mt.measured_bytes, rel=1e-6)
    gpu = Measurement(device="cuda:0", predicted_bytes=1, measured_bytes=1, step_seconds=0.1, layers_measured=1,
                      extrapolated=False, detail={"context_bytes": 400e6, "peak_allocated_bytes": 1000,
                                                  "peak_reserved_bytes": 1100})
    g = learn("host/h100-sxm/torch-9", gpu, pred)
    transient = (pred.activations_bytes + pred.attention_scores_bytes + pred.logits_bytes + pred.kv_cache_bytes
                 + pred.optimizer_step_bytes)
    assert g["context_bytes"] == 400e6 and g["reserve_fraction"] == pytest.approx(100 / transient)
    assert (tmp_path / "plan" / "calibration.json").is_file()
