"""Small sources built in-process: the digits data, an lmdev MLP or GPT built from its config."""

from __future__ import annotations

import pytest
import torch

from lmdev.compress.source import Source, lmdev_spec
from lmdev.train.config import load_config
from lmdev.train.data import load_data


def make_source(model_cfg: dict, data_cfg: dict | None = None, train_steps: int = 0) -> Source:
    cfg = load_config({"name": "t", "model": model_cfg, "data": data_cfg or {"type": "digits", "batch_size": 64},
                       "optimizer": {"type": "adamw", "lr": 0.003}})
    data = load_data(cfg.data, cfg.seed)
    spec = lmdev_spec(cfg.model.model_dump(mode="json"), data.shape)
    torch.manual_seed(0)
    model = spec.build()
    source = Source("test", "checkpoint", model, spec, data, cfg)
    if train_steps:
        from lmdev.compress.finetune import finetune

        finetune(model, source, train_steps)
    model.eval()
    return source


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
