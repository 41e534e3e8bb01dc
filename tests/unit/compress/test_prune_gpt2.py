"""Structured pruning of transformers GPT-2: fewer heads and MLP channels, the same outputs when the
removed units were dead, a variant that is written and read back to identical logits, and bad
ratios refused."""

from __future__ import annotations

import copy

import pytest
import torch

from lmdev.compress import prune, prune_gpt2
from lmdev.compress.output import load, write_variant
from lmdev.compress.source import ModelSpec, resolve
from lmdev.errors import LmdevError

TINY = {"model_type": "gpt2", "vocab_size": 100, "n_positions": 32, "n_embd": 64, "n_layer": 2, "n_head": 4}


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return ModelSpec("hf", dict(TINY)).build().eval()


def tokens(n: int = 3, vocab: int = 100) -> torch.Tensor:
    return torch.randint(0, vocab, (n, 16), generator=torch.Generator().manual_seed(1))


def test_pruning_dead_heads_and_channels_keeps_the_outputs(tiny):
    with torch.no_grad():  # heads 0 and 2 and MLP channels 128.. write nothing to the residual stream
        for b in prune_gpt2.blocks(tiny):
            b.attn.c_proj.weight[0:16] = 0
            b.attn.c_proj.weight[32:48] = 0
            b.mlp.c_proj.weight[128:] = 0
    x = tokens()
    before = tiny(x)
    pruned = copy.deepcopy(tiny)
    heads, channels = prune_gpt2.prune(pruned, 0.5, "both", [x])
    assert (heads, channels) == ([2, 2], [128, 128])
    for b in prune_gpt2.blocks(pruned):
        assert prune_gpt2.n_heads(b.attn) == 2 and b.attn.c_attn.weight.shape == (64, 3 * 32)
        assert b.mlp.c_fc.weight.shape == (64, 128) and b.mlp.c_proj.weight.shape == (128, 64)
    torch.testing.assert_close(pruned(x), before, atol=1e-5, rtol=1e-5)  # the live heads and channels kept
    # the pruned model is the model its pruned config builds
    rebuilt = ModelSpec("hf", prune_gpt2.pruned_config(TINY, heads, channels)).build().eval()
    rebuilt.load_state_dict(pruned.state_dict())
    torch.testing.assert_close(rebuilt(x), before, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in rebuilt.parameters()) < sum(p.numel() for p in tiny.parameters())


def test_heads_only_leaves_the_mlp_alone(tiny):
    heads, channels = prune_gpt2.prune(tiny, 0.25, "heads", [tokens()])
    assert (heads, channels) == ([3, 3], None)
    assert prune_gpt2.mlp_width(prune_gpt2.blocks(tiny)[0].mlp) == 256
    assert tiny(tokens()).shape == (3, 16, 100)


@pytest.mark.parametrize("ratio", [1.0, 0.9, 1.5])
def test_pruning_all_heads_or_more_is_refused(tiny, ratio):
    with pytest.raises(LmdevError, match="4 attention heads .*at least one must stay"):
        prune_gpt2.prune(tiny, ratio, "heads", [tokens()])
    assert prune_gpt2.n_heads(prune_gpt2.blocks(tiny)[0].attn) == 4  # untouched


def test_a_config_asking_for_more_heads_than_exist_is_refused():
    with pytest.raises(LmdevError, match="asks for 5 attention heads"):
        ModelSpec("hf", {**TINY, prune_gpt2.HEADS_KEY: 5}).build()


@pytest.fixture
def hf_source(tmp_path):
    """A tiny GPT-2 saved as a transformers folder, read as hf:PATH with a small byte-level text."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=64, n_layer=2, n_head=4)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp_path / "hf", safe_serialization=True)
    corpus = tmp_path / "corpus.txt"  # 300 training and 75 held-out sequences of 32 bytes
    corpus.write_text("".join(f"{a} + {b} = {a + b}\n" for a in range(40) for b in range(25)))
    return resolve(f"hf:{tmp_path / 'hf'}", data=f"text:{corpus}")


def test_pruned_and_int8_variants_reload_to_identical_logits(hf_source, tmp_path):
    (name, make), (name8, make8) = prune.candidates(hf_source, 0.5, 3, "both", with_int8=True,
                                                          layout="uniform")
    assert (name, name8) == ("pruned", prune.PRUNED_INT8)
    v, v8 = make(), make8()
    assert v.settings["heads_per_layer"] == 2 and v.settings["mlp_channels"] == 128
    assert v.settings["finetune_steps"] == 3
    x = hf_source.data.val.batch(torch.arange(2))[0]
    for variant, folder in ((v, "pruned"), (v8, "pruned-int8")):
        out = write_variant(variant, tmp_path / folder, hf_source)
        again = load(out)
        assert prune_gpt2.blocks(again)[0].attn.num_heads == 2  # int8 layers too: the shape survives
        with torch.inference_mode():
            torch.testing.assert_close(again(x), variant.runner(x), atol=0, rtol=0)
    assert (tmp_path / "pruned-int8/model.safetensors").stat().st_size < \
        0.5 * (tmp_path / "pruned/model.safetensors").stat().st_size


def test_hf_pruning_without_data_is_refused(hf_source):
    bare = copy.copy(hf_source)
    bare.data = None
    assert not prune.applies(bare)  # so --method auto leaves pruning out
    with pytest.raises(LmdevError, match="needs text"):
        prune.check(bare, 0.5)


def test_head_pruning_of_an_lmdev_mlp_is_refused(digits_source):
    with pytest.raises(LmdevError, match="an lmdev mlp has none"):
        prune.check(digits_source, 0.5, "heads")


def test_auto_offers_the_pruned_int8_variant_of_an_hf_gpt2_and_judges_it(hf_source):
    from lmdev.compress.core import Options, compress_source

    report = compress_source(hf_source, Options(method="auto", backend=prune.PRUNED_INT8, steps=2, batch=2, layout="uniform",
                                                budget_s=0.02, memory=False, record=False, max_drop=1.0),
                             lambda _m: None)
    (v,) = report.variants
    assert v.backend == prune.PRUNED_INT8 and v.method == "prune" and v.settings["heads_per_layer"] == 2
    assert v.measurement.quality.perplexity is not None and v.quality_drop is not None
    assert v.within_drop == (v.quality_drop <= 1.0)  # the verdict follows the measured drop
    assert ("quality drop beyond 1" in v.verdict) == (not v.within_drop)


def test_a_pruned_hf_variant_takes_data_and_can_be_pruned_again(hf_source, tmp_path):
    (_, make), = prune.candidates(hf_source, 0.5, 1, "heads", with_int8=False, layout="uniform")
    out = write_variant(make(), tmp_path / "once", hf_source)
    corpus = tmp_path / "corpus.txt"
    again = resolve(str(out), data=f"text:{corpus}")
    assert again.data is not None and again.kind == "variant"  # --data is read for an hf variant too
    twice = prune.prune_variant(again, 0.5, 1, "heads", layout="uniform")
    assert twice.settings["heads_per_layer"] == 1


def quiet_block(model, i: int, factor: float = 0.01) -> None:
    """Block ``i`` writes almost nothing to the residual stream: its attention and MLP outputs scaled down."""
    with torch.no_grad():
        b = prune_gpt2.blocks(model)[i]
        for conv in (b.attn.c_proj, b.mlp.c_proj):
            conv.weight *= factor
            conv.bias *= factor


def test_global_layout_takes_more_from_the_quiet_block_and_the_same_total(tiny):
    quiet_block(tiny, 1)
    x = tokens()
    heads, channels = prune_gpt2.prune(tiny, 0.5, "both", [x], layout="global")
    assert heads == [3, 1] and channels == [230, 26]  # block 1 keeps its floor: 1 head, a tenth of 256
    assert sum(heads) == 4 and sum(channels) == 256  # what the uniform layout keeps in all
    cfg = prune_gpt2.pruned_config(TINY, heads, channels)
    assert cfg[prune_gpt2.HEADS_KEY] == [3, 1] and cfg[prune_gpt2.CHANNELS_KEY] == [230, 26]
    rebuilt = ModelSpec("hf", cfg).build().eval()  # per-layer counts build from the config
    rebuilt.load_state_dict(tiny.state_dict())
    torch.testing.assert_close(rebuilt(x), tiny(x), atol=0, rtol=0)


def test_global_variant_reloads_identically_and_records_its_counts(hf_source, tmp_path):
    quiet_block(hf_source.model, 0)
    (_, make), (_, make8) = prune.candidates(hf_source, 0.5, 1, "both", with_int8=True, layout="global")
    v, v8 = make(), make8()
    x8 = hf_source.data.val.batch(torch.arange(2))[0]
    again8 = load(write_variant(v8, tmp_path / "global-int8", hf_source))  # int8 layers of uneven widths too
    with torch.inference_mode():
        torch.testing.assert_close(again8(x8), v8.runner(x8), atol=0, rtol=0)
    assert v.settings["layout"] == "global" and "global" in v.name
    heads, chans = v.settings["heads_per_layer"], v.settings["mlp_channels"]
    assert heads[0] < heads[1] and chans[0] < chans[1]  # the quiet block lost more
    x = hf_source.data.val.batch(torch.arange(2))[0]
    out = write_variant(v, tmp_path / "global", hf_source)
    again = load(out)
    assert [prune_gpt2.n_heads(b.attn) for b in prune_gpt2.blocks(again)] == heads
    assert [prune_gpt2.mlp_width(b.mlp) for b in prune_gpt2.blocks(again)] == chans
    with torch.inference_mode():
        torch.testing.assert_close(again(x), v.runner(x), atol=0, rtol=0)
    # a per-layer variant can lose whole layers: its per-layer counts follow the kept blocks
    from lmdev.compress.prune_layers import layer_variant

    shallow = layer_variant(resolve(str(out), data=f"text:{tmp_path / 'corpus.txt'}"), 0.5, 1)
    kept = shallow.settings["layers_kept"]
    assert shallow.spec.config[prune_gpt2.HEADS_KEY] == [heads[i] for i in kept]
    assert [prune_gpt2.mlp_width(b.mlp) for b in prune_gpt2.blocks(shallow.module)] == [chans[i] for i in kept]


def test_global_layout_is_refused_where_a_config_cannot_hold_per_layer_counts(gpt_source, hf_source):
    with pytest.raises(LmdevError, match="only a transformers GPT-2"):
        prune.check(gpt_source, 0.5, "both", "global")
    with pytest.raises(LmdevError, match="whole blocks"):
        prune.check(hf_source, 0.5, "layers", "global")
    # by default: global where the config can hold per-block counts, uniform elsewhere
    assert [prune.resolve_layout(hf_source, "both", None), prune.resolve_layout(hf_source, "layers", None),
            prune.resolve_layout(gpt_source, "both", None)] == ["global", "uniform", "uniform"]
