"""Attention-head pruning of lmdev's own gpt: its config's optional head_dim builds old configs
exactly as before, dead heads go without changing the outputs, and the variant reloads."""

from __future__ import annotations

import copy
import hashlib

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from lmdev.compress import prune, prune_heads
from lmdev.compress.output import load, write_variant
from lmdev.compress.source import ModelSpec
from lmdev.errors import LmdevError
from lmdev.train.config import ModelConfig
from lmdev.train.models import DataShape, build_model

from .conftest import make_source

BASE = {"type": "gpt", "n_layer": 2, "n_head": 4, "n_embd": 32, "block_size": 16, "vocab_size": 50}
SHAPE = DataShape("tokens", (16,), 50, "language_modeling")


def build(**extra: object) -> torch.nn.Module:
    cfg = TypeAdapter(ModelConfig).validate_python({**BASE, **extra})
    torch.manual_seed(0)
    return build_model(cfg, SHAPE).eval()


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:16]


# digests of the same configs built by the code before head_dim existed (same seed)
BEFORE = [({}, "bec657db96863c4c"),
          ({"position": "learned", "mlp": "gelu", "norm": "layernorm", "bias": True}, "07767662da7194c3"),
          ({"n_kv_head": 2}, "46ae5a485835b946")]


@pytest.mark.parametrize("extra, before", BEFORE)
def test_configs_without_head_dim_build_the_same_model_as_before(extra, before):
    model = build(**extra)
    assert digest(model) == before
    explicit = build(**extra, head_dim=8)  # the default, given: the same model, the same outputs
    assert digest(explicit) == before
    x = torch.arange(32).reshape(2, 16) % 50
    with torch.no_grad():
        torch.testing.assert_close(explicit(x), model(x), atol=0, rtol=0)


def test_head_dim_frees_n_embd_from_n_head_but_rope_wants_it_even():
    model = build(n_head=3, head_dim=8)  # 32 is not divisible by 3: fine with an explicit head width
    assert model.blocks[0].attn.qkv.out_features == 3 * 3 * 8 and model.blocks[0].attn.proj.in_features == 24
    with pytest.raises(ValidationError, match="even head size"):
        build(head_dim=7)


def test_dead_heads_are_removed_and_the_outputs_stay():
    model = build()
    with torch.no_grad():  # heads 1 and 3 write nothing: their columns of proj are zero
        for b in model.blocks:
            b.attn.proj.weight[:, 8:16] = 0
            b.attn.proj.weight[:, 24:32] = 0
    x = torch.arange(32).reshape(2, 16) % 50
    before = model(x)
    pruned = copy.deepcopy(model)
    assert prune_heads.prune(pruned, 2, [x]) == 8
    torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-5)
    spec = ModelSpec("lmdev", prune_heads.pruned_config(BASE, 2, 8),
                     {"kind": "tokens", "input_shape": [16], "n_outputs": 50, "task": "language_modeling"})
    rebuilt = spec.build().eval()
    rebuilt.load_state_dict(pruned.state_dict())  # the pruned model is the model of its config
    assert rebuilt.blocks[0].attn.qkv.out_features == 3 * 2 * 8
    torch.testing.assert_close(rebuilt(x), before, atol=1e-5, rtol=1e-5)


def gpt(**extra: object):
    return make_source({"type": "gpt", "n_layer": 1, "n_head": 4, "n_embd": 32, "block_size": 16, **extra},
                       {"type": "synthetic", "batch_size": 8, "seq_len": 16, "n_examples": 200})


def test_lmdev_gpt_heads_and_channels_pruned_through_prune_variant_reload(tmp_path):
    src = gpt()
    v = prune.prune_variant(src, 0.5, 2, "both")
    assert v.settings["parts"] == ["heads", "mlp"] and v.settings["heads_per_layer"] == 2
    assert v.spec.config["n_head"] == 2 and v.spec.config["head_dim"] == 8 and not v.notes
    x = src.data.val.batch(torch.arange(2))[0]
    again = load(write_variant(v, tmp_path / "out", src))
    assert again.blocks[0].attn.n_head == 2
    with torch.inference_mode():
        torch.testing.assert_close(again(x), v.runner(x), atol=0, rtol=0)


def test_dead_key_value_groups_are_removed_and_the_outputs_stay():
    model = build(n_head=4, n_kv_head=2)  # groups: query heads 0-1 read kv head 0, heads 2-3 kv head 1
    with torch.no_grad():  # group 0 writes nothing: the columns of proj of query heads 0 and 1 are zero
        for b in model.blocks:
            b.attn.proj.weight[:, 0:16] = 0
    x = torch.arange(32).reshape(2, 16) % 50
    before = model(x)
    pruned = copy.deepcopy(model)
    assert prune_heads.prune(pruned, 1, [x]) == 8
    a = pruned.blocks[0].attn
    assert (a.n_head, a.n_kv) == (2, 1) and a.qkv.out_features == (2 + 2 * 1) * 8
    torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-5)  # group 1 (its k, v, q) kept whole
    cfg = prune_heads.pruned_config({**BASE, "n_kv_head": 2}, 1, 8)
    assert (cfg["n_head"], cfg["n_kv_head"], cfg["head_dim"]) == (2, 1, 8)
    rebuilt = ModelSpec("lmdev", cfg, {"kind": "tokens", "input_shape": [16], "n_outputs": 50,
                                       "task": "language_modeling"}).build().eval()
    rebuilt.load_state_dict(pruned.state_dict())
    torch.testing.assert_close(rebuilt(x), before, atol=1e-5, rtol=1e-5)


def test_grouped_query_gpt_loses_whole_groups_and_reloads(tmp_path):
    src = gpt(n_head=8, n_kv_head=4, n_layer=2)
    v = prune.prune_variant(src, 0.5, 1, "heads")
    cfg = v.spec.config
    assert (cfg["n_head"], cfg["n_kv_head"], cfg["head_dim"]) == (4, 2, 4)  # the 4:1 ratio and width kept
    assert v.settings["kv_groups_per_layer"] == 2 and v.settings["heads_per_layer"] == 4 and not v.notes
    assert "key/value groups" in v.settings["importance"]
    x = src.data.val.batch(torch.arange(2))[0]
    again = load(write_variant(v, tmp_path / "out", src))
    assert [(b.attn.n_head, b.attn.n_kv) for b in again.blocks] == [(4, 2), (4, 2)]
    with torch.inference_mode():
        torch.testing.assert_close(again(x), v.runner(x), atol=0, rtol=0)


def test_both_on_a_grouped_query_gpt_prunes_groups_and_channels():
    src = gpt(n_kv_head=2)
    v = prune.prune_variant(src, 0.5, 1, "both")
    assert v.settings["parts"] == ["heads", "mlp"]
    assert (v.spec.config["n_head"], v.spec.config["n_kv_head"]) == (2, 1) and v.spec.config["ffn_hidden"] == 42


def test_a_single_key_value_group_is_refused_and_both_prunes_only_the_mlp():
    src = gpt(n_kv_head=1)
    with pytest.raises(LmdevError, match="one \\(n_kv_head 1") as e:
        prune.check(src, 0.5, "heads")
    assert "--prune mlp" in (e.value.hint or "")
    v = prune.prune_variant(src, 0.5, 1, "both")
    assert v.settings["parts"] == ["mlp"] and v.spec.config["n_head"] == 4
    assert any("single key/value group" in n for n in v.notes)


def test_a_ratio_that_removes_no_group_is_refused_for_heads():
    with pytest.raises(LmdevError, match="removes none"):
        prune.check(gpt(n_kv_head=2), 0.25, "heads")


def test_pruning_every_head_is_refused():
    with pytest.raises(LmdevError, match="4 attention heads .*at least one must stay"):
        prune.check(gpt(), 0.9, "heads")
