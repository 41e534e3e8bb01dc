"""Whole-layer pruning: blocks that write nothing are removed without changing the outputs, the
smaller model is the model of the smaller config, the variant reloads to identical logits, and
ratios that would leave no block (or remove none) are refused."""

from __future__ import annotations

import copy

import pytest
import torch

from lmdev.compress import prune, prune_gpt2, prune_layers
from lmdev.compress.output import load, write_variant
from lmdev.compress.source import ModelSpec, resolve
from lmdev.errors import LmdevError

from .conftest import make_source

TINY = {"model_type": "gpt2", "vocab_size": 100, "n_positions": 32, "n_embd": 32, "n_layer": 4, "n_head": 2}


def tokens(vocab: int = 100) -> torch.Tensor:
    return torch.randint(0, vocab, (3, 16), generator=torch.Generator().manual_seed(1))


def kill(*convs: torch.nn.Module) -> None:
    with torch.no_grad():
        for c in convs:
            c.weight.zero_()
            if c.bias is not None:
                c.bias.zero_()


def test_gpt2_blocks_that_write_nothing_are_removed_and_the_outputs_stay():
    torch.manual_seed(0)
    spec = ModelSpec("hf", dict(TINY))
    model = spec.build().eval()
    for i in (0, 2):  # blocks 0 and 2 add nothing to the residual stream
        b = prune_gpt2.blocks(model)[i]
        kill(b.attn.c_proj, b.mlp.c_proj)
    x = tokens()
    before = model(x)
    removed, scores = prune_layers.prune(model, spec, 0.5, [x])
    assert removed == [0, 2] and scores[0] == scores[2] == 0 and min(scores[1], scores[3]) > 0
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    rebuilt = ModelSpec("hf", prune_layers.pruned_config(TINY, 2)).build().eval()
    rebuilt.load_state_dict(model.state_dict())  # the kept blocks, in order, are the 2-layer model's
    assert rebuilt.inner.config.n_layer == 2
    assert [b.attn.layer_idx for b in prune_gpt2.blocks(rebuilt)] == [0, 1]  # cache indices renumbered
    torch.testing.assert_close(rebuilt(x), before, atol=1e-5, rtol=1e-5)


def test_lmdev_gpt_blocks_that_write_nothing_are_removed_and_the_outputs_stay():
    src = make_source({"type": "gpt", "n_layer": 3, "n_head": 2, "n_embd": 32, "block_size": 16},
                      {"type": "synthetic", "batch_size": 8, "seq_len": 16, "n_examples": 200})
    model = copy.deepcopy(src.model).eval()
    kill(model.blocks[1].attn.proj, model.blocks[1].mlp.down)
    x = src.data.val.batch(torch.arange(2))[0]
    before = model(x)
    removed, _ = prune_layers.prune(model, src.spec, 0.34, [x])
    assert removed == [1] and len(model.blocks) == 2
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n, ratio, message", [(4, 1.0, "leaves 0: at least one block must stay"),
                                               (4, 0.9, "leaves 0: at least one block must stay"),
                                               (1, 0.5, "has 1 transformer block: at least one block must stay"),
                                               (4, 0.1, "removes none")])
def test_ratios_that_leave_no_block_or_remove_none_are_refused(n, ratio, message):
    with pytest.raises(LmdevError, match=message):
        prune_layers.kept_count(n, ratio)


def test_layer_pruning_of_a_one_block_lmdev_gpt_is_refused_before_any_work(gpt_source):
    with pytest.raises(LmdevError, match="has 1 transformer block: at least one"):
        prune.check(gpt_source, 0.5, "layers")


def test_layer_pruning_of_an_lmdev_mlp_is_refused(digits_source):
    with pytest.raises(LmdevError, match="an lmdev mlp has none"):
        prune.check(digits_source, 0.5, "layers")


def test_lmdev_gpt_layer_pruning_runs_through_prune_variant_and_reloads(tmp_path):
    src = make_source({"type": "gpt", "n_layer": 4, "n_head": 2, "n_embd": 32, "block_size": 16},
                      {"type": "synthetic", "batch_size": 8, "seq_len": 16, "n_examples": 200})
    v = prune.prune_variant(src, 0.5, 2, "layers")
    assert v.spec.config["n_layer"] == 2 and len(v.module.blocks) == 2
    assert v.settings["parts"] == ["layers"] and v.settings["finetune_steps"] == 2
    assert len(v.settings["layers_removed"]) == 2 and len(v.settings["layer_scores"]) == 4
    assert sorted(v.settings["layers_removed"] + v.settings["layers_kept"]) == [0, 1, 2, 3]
    x = src.data.val.batch(torch.arange(2))[0]
    again = load(write_variant(v, tmp_path / "out", src))
    with torch.inference_mode():
        torch.testing.assert_close(again(x), v.runner(x), atol=0, rtol=0)


@pytest.fixture
def hf_source(tmp_path):
    """A tiny 4-layer GPT-2 saved as a transformers folder, read as hf:PATH with a small text."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=32, n_layer=4, n_head=2)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "hf", safe_serialization=True)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{a} + {b} = {a + b}\n" for a in range(30) for b in range(20)))
    return resolve(f"hf:{tmp_path / 'hf'}", data=f"text:{corpus}")


def test_gpt2_layer_variant_and_its_int8_reload_to_identical_logits(hf_source, tmp_path):
    (_, make), (_, make8) = prune.candidates(hf_source, 0.25, 2, "layers", with_int8=True)
    v, v8 = make(), make8()
    assert v.spec.config["n_layer"] == 3 and len(v.settings["layers_removed"]) == 1
    assert "layers" in v.name and str(v.settings["layers_removed"][0]) in v.name
    x = hf_source.data.val.batch(torch.arange(2))[0]
    for variant, folder in ((v, "pruned"), (v8, "pruned-int8")):
        again = load(write_variant(variant, tmp_path / folder, hf_source))
        assert len(prune_gpt2.blocks(again)) == 3
        with torch.inference_mode():
            torch.testing.assert_close(again(x), variant.runner(x), atol=0, rtol=0)


def test_head_pruned_gpt2_variant_loses_layers_and_keeps_its_head_count(hf_source, tmp_path):
    (_, make), = prune.candidates(hf_source, 0.5, 1, "heads", with_int8=False, layout="uniform")
    heads_out = write_variant(make(), tmp_path / "heads", hf_source)
    again = resolve(str(heads_out), data=f"text:{tmp_path / 'corpus.txt'}")
    v = prune.prune_variant(again, 0.5, 1, "layers")
    assert v.spec.config["n_layer"] == 2 and v.spec.config[prune_gpt2.HEADS_KEY] == 1
    reloaded = load(write_variant(v, tmp_path / "both", again))
    assert [b.attn.num_heads for b in prune_gpt2.blocks(reloaded)] == [1, 1]
    x = again.data.val.batch(torch.arange(2))[0]
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(x), v.runner(x), atol=0, rtol=0)
