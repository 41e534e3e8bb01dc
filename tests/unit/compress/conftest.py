"""Small sources built in-process: the digits data, an lmdev MLP or GPT built from its config."""

from __future__ import annotations

import pytest
import torch

from lmdev.compress.source import Source, from_config


def make_source(model_cfg: dict, data_cfg: dict | None = None, train_steps: int = 0) -> Source:
    return from_config({"name": "t", "model": model_cfg, "data": data_cfg or {"type": "digits", "batch_size": 64},
                        "optimizer": {"type": "adamw", "lr": 0.003}}, train_steps)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models on a shared machine: several threads only wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_source() -> Source:
    return make_source({"type": "mlp", "hidden": [64, 32]}, train_steps=150)


@pytest.fixture(scope="session")
def gpt_source() -> Source:
    return make_source({"type": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16},
                       {"type": "synthetic", "batch_size": 8, "seq_len": 16, "n_examples": 400})


def tiny_gpt2(vocab: int = 4096):
    """(spec, model): a one-block transformers GPT-2 (width 64, two heads, tied head), seeded."""
    transformers = pytest.importorskip("transformers")
    from lmdev.compress.source import ModelSpec
    from lmdev.train.models import HFCausalLM

    transformers.logging.set_verbosity_error()
    cfg = transformers.GPT2Config(vocab_size=vocab, n_positions=16, n_embd=64, n_layer=1, n_head=2)
    torch.manual_seed(0)
    return ModelSpec("hf", cfg.to_dict()), HFCausalLM(transformers.GPT2LMHeadModel(cfg)).eval()
