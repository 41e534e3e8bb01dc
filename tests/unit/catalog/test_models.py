"""Parameter counts of every preset: the closed formula against the published count and against
transformers' own count on the meta device (no weights are allocated, nothing is downloaded)."""

from __future__ import annotations

import pytest

from lmdev.catalog.models import (
    ModelSpec,
    active_param_count,
    closest_presets,
    find_preset,
    get_preset,
    param_count,
    presets,
    spec_from_hf_config,
)
from lmdev.errors import LmdevError

PRESETS = sorted(presets())


def test_required_presets_exist():
    for name in ["llama-3-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.2-1b", "llama-3.2-3b",
                 "qwen2.5-0.5b", "qwen2.5-7b", "qwen2.5-72b", "mistral-7b", "mixtral-8x7b", "gemma-2-2b",
                 "gemma-2-9b", "gemma-2-27b", "phi-3-mini", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl",
                 "bert-base", "bert-large"]:
        assert name in presets(), name
    for p in presets().values():
        assert p.source and p.hf_repo
        assert p.name == p.name.lower()


@pytest.mark.parametrize("name", PRESETS)
def test_formula_equals_published_count(name):
    p = presets()[name]
    assert param_count(p.spec) == p.published_params


def _hf_count(config: dict) -> int:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    cfg = dict(config)
    mtype = cfg.pop("model_type")
    hf = transformers.AutoConfig.for_model(mtype, **cfg)
    auto = transformers.AutoModel if mtype == "bert" else transformers.AutoModelForCausalLM
    with torch.device("meta"):
        model = auto.from_config(hf)
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


@pytest.mark.parametrize("name", PRESETS)
def test_formula_equals_transformers_count(name):
    p = presets()[name]
    assert param_count(p.spec) == _hf_count(p.config)


def test_aliases_and_case():
    assert find_preset("meta-llama/Meta-Llama-3-8B").name == "llama-3-8b"
    assert find_preset("Qwen/Qwen2.5-7B-Instruct").name == "qwen2.5-7b"
    assert find_preset("LLAMA-3-8B").name == "llama-3-8b"
    assert find_preset("nope") is None


def test_unknown_preset_suggests_closest():
    assert "llama-3-8b" in closest_presets("llama3-8b")
    with pytest.raises(LmdevError) as err:
        get_preset("lama-3-8b")
    assert "llama-3-8b" in (err.value.hint or "")


def test_moe_active_params():
    spec = presets()["mixtral-8x7b"].spec
    assert spec.moe and spec.n_experts == 8 and spec.experts_per_token == 2
    # Mixtral's published active count: 12.9B
    assert 12.8e9 < active_param_count(spec) < 13.0e9
    assert active_param_count(presets()["llama-3-8b"].spec) == presets()["llama-3-8b"].published_params


def test_gqa_and_head_dim():
    s = presets()["llama-3.2-3b"].spec
    assert (s.kv_heads, s.dim_head, s.q_dim, s.kv_dim) == (8, 128, 3072, 1024)
    g = presets()["gemma-2-2b"].spec
    assert g.mlp == "geglu" and g.norms_per_layer == 4 and g.tied_embeddings


@pytest.mark.parametrize("cfg, field", [
    ({"hidden_size": 8}, "model_type"),
    ({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
      "vocab_size": 100}, "num_hidden_layers"),
    ({"model_type": "llama", "hidden_size": "big", "num_attention_heads": 4, "intermediate_size": 128,
      "vocab_size": 100, "num_hidden_layers": 2}, "hidden_size"),
    ({"model_type": "gpt2", "n_embd": 64, "n_head": 4, "vocab_size": 100, "n_layer": -1}, "n_layer"),
])
def test_malformed_config_names_the_field(cfg, field):
    with pytest.raises(LmdevError) as err:
        spec_from_hf_config(cfg)
    assert repr(field) in err.value.message


def test_bad_heads_rejected():
    with pytest.raises(LmdevError):
        ModelSpec(name="x", n_layers=2, hidden=64, n_heads=6, n_kv_heads=4, ffn=128, vocab=10)
