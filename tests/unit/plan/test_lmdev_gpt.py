"""The training engine's own `gpt` model: its config maps onto the planner's ModelSpec with the exact
parameter count of the model lmdev.train builds."""

from __future__ import annotations

import json

import pytest

from lmdev.catalog.models import param_count, spec_from_lmdev_gpt
from lmdev.errors import LmdevError
from lmdev.plan.memory import Workload, estimate_memory
from lmdev.plan.model_input import resolve_model

CASES = [
    {"type": "gpt", "vocab_size": 256},  # the engine's defaults
    {"type": "gpt", "vocab_size": 1000, "n_layer": 3, "n_head": 8, "n_kv_head": 2, "n_embd": 256,
     "block_size": 512, "tie_embeddings": False},
    {"type": "gpt", "vocab_size": 5000, "n_layer": 2, "n_head": 4, "n_embd": 128, "norm": "layernorm",
     "position": "learned", "mlp": "gelu", "bias": True, "dropout": 0.1},
    {"type": "gpt", "vocab_size": 700, "n_layer": 2, "n_head": 4, "n_embd": 96, "norm": "layernorm",
     "mlp": "swiglu", "ffn_hidden": 200, "bias": False},
    {"type": "gpt", "vocab_size": 256, "n_layer": 2, "n_head": 3, "head_dim": 32, "n_embd": 128},  # heads pruned
    {"type": "gpt", "vocab_size": 256, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "head_dim": 16,
     "n_embd": 128},  # key/value groups pruned
]


@pytest.mark.parametrize("model", CASES)
def test_param_count_equals_the_engines_model(model):
    torch = pytest.importorskip("torch")
    try:
        from lmdev.train.config import GPTConfig
        from lmdev.train.models import GPT
    except ImportError:
        pytest.skip("lmdev.train is not available")
    cfg = GPTConfig.model_validate(model)
    with torch.device("meta"):
        net = GPT(cfg)
    assert param_count(spec_from_lmdev_gpt(model)) == sum(p.numel() for p in net.parameters())


def test_training_config_file(tmp_path):
    p = tmp_path / "train.json"
    p.write_text(json.dumps({"model": {"type": "gpt", "n_layer": 2, "n_embd": 64, "n_head": 4},
                             "data": {"type": "text:corpus.txt", "tokenizer": "byte"}}))
    spec, source = resolve_model(str(p))
    assert spec.vocab == 256 and spec.family == "lmdev-gpt" and "training config" in source
    assert estimate_memory(spec, Workload(task="train", precision="fp32", seq=128), device="cpu").total_bytes > 0


def test_vocab_needed():
    with pytest.raises(LmdevError, match="vocab_size"):
        spec_from_lmdev_gpt({"type": "gpt"})
    with pytest.raises(LmdevError, match="'model.n_layer'"):
        spec_from_lmdev_gpt({"type": "gpt", "vocab_size": 10, "n_layer": 0})
