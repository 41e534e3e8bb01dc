"""2:4 semi-structured sparsity: exactly 2 of every 4 weights kept through the fine-tune, stored
compressed (half the values, 4 bits of positions a group), read back to the outputs measured."""

from __future__ import annotations

import pytest
import torch

from lmdev.compress import sparse24
from lmdev.compress.output import load, write_variant
from lmdev.errors import LmdevError
from tests.unit.compress.conftest import make_source


def _x(source, n=32):
    return source.data.val.batch(torch.arange(n))[0]


def _exactly_two_of_four(w: torch.Tensor) -> bool:
    return bool(((w.reshape(-1, 4) != 0).sum(1) == 2).all())


@pytest.mark.parametrize("shape", [(3, 8), (5, 12), (1, 4), (7, 36)])  # odd and even numbers of groups
def test_pack_and_unpack_round_trip_a_2_of_4_weight(shape, monkeypatch):
    monkeypatch.setattr(sparse24, "UNPACK_CHUNK", 4)  # several chunks, the last one short
    w = torch.randn(*shape)
    mask = sparse24.mask_2of4(w)
    assert _exactly_two_of_four(mask)
    kept = w * mask
    # the kept ones are the largest two of each group
    groups = w.abs().reshape(-1, 4)
    assert torch.equal((kept.abs().reshape(-1, 4).sum(1)), groups.topk(2, dim=1).values.sum(1))
    values, positions = sparse24.pack(kept, mask)
    assert values.shape == (shape[0], shape[1] // 2) and positions.dtype == torch.uint8
    assert positions.numel() == -(-shape[0] * shape[1] // 4 // 2)  # 4 bits a group
    assert torch.equal(sparse24.unpack(values, positions, list(shape)), kept)


def test_digits_2of4_keeps_the_pattern_through_the_finetune_and_reads_back(digits_source, tmp_path):
    s = digits_source
    v = sparse24.sparse24_variant(s, steps=30)
    assert v.backend == "sparse-2:4" and v.method == "prune" and v.settings["finetune_steps"] == 30
    assert v.settings["sparse_layers"] == 3 and sparse24.SIZE_ONLY in v.notes
    weights = [m.weight for m in v.module.modules() if isinstance(m, torch.nn.Linear)]
    assert all(_exactly_two_of_four(w) for w in weights)
    x = _x(s)
    y = v.runner(x)
    with torch.no_grad():
        ref = s.model(x)
    assert (y.argmax(1) == ref.argmax(1)).float().mean() > 0.7  # half the weights gone, fine-tuned back

    out = write_variant(v, tmp_path / "s24", s)
    dense = sum(f.stat().st_size for f in [out / "model.safetensors"])
    fp32 = 4 * sum(p.numel() for p in s.model.parameters())
    assert dense < 0.62 * fp32  # half the values + 4 bits a group of 4, biases dense
    model = load(out)
    assert all(_exactly_two_of_four(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear))
    torch.testing.assert_close(model(x), y, atol=0, rtol=0)


def test_gpt_2of4_leaves_odd_widths_and_the_tied_head_dense(gpt_source, tmp_path):
    s = gpt_source
    v = sparse24.sparse24_variant(s, steps=5)
    down = s.model.blocks[0].mlp.down.in_features
    assert (down % 4 != 0) == ("blocks.0.mlp.down" in v.settings.get("dense_layers", []))
    assert "tied_heads" in v.settings and v.module.head.weight is v.module.embed.weight  # still one matrix
    out = write_variant(v, tmp_path / "gpt", s)
    model = load(out)
    assert model.head.weight is model.embed.weight
    x = _x(s, 4)
    torch.testing.assert_close(model(x), v.runner(x), atol=0, rtol=0)
    assert _exactly_two_of_four(model.blocks[0].attn.qkv.weight)


def test_a_model_without_an_eligible_layer_is_refused(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,c,y\n" + "".join(f"{i % 3},{i % 5},{i % 7},{i % 2}\n" for i in range(40)))
    s = make_source({"type": "mlp", "hidden": [6]}, {"type": f"csv:{csv}", "batch_size": 8})  # 3 -> 6 -> 2
    with pytest.raises(LmdevError, match="multiple of 4"):
        sparse24.check(s)


def test_use_sparse_kernels_does_nothing_without_a_gpu(digits_source, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert sparse24.use_sparse_kernels(digits_source.model) == 0


def test_gpt2_conv1d_layers_go_2of4_the_tied_head_stays_dense_and_it_reads_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmdev.compress import formats
    from lmdev.compress.source import ModelSpec, Source
    from lmdev.train.models import HFCausalLM

    cfg = transformers.GPT2Config(vocab_size=512, n_positions=16, n_embd=64, n_layer=1, n_head=2)
    torch.manual_seed(0)
    hf = HFCausalLM(transformers.GPT2LMHeadModel(cfg)).eval()
    spec = ModelSpec("hf", cfg.to_dict())
    v = sparse24.sparse24_variant(Source("hf:x", "hf", hf, spec, None, None), steps=None)
    assert v.settings["sparse_layers"] == 4 and v.settings["finetune_steps"] == 0  # no --data: no fine-tune
    inner = v.module.inner
    assert _exactly_two_of_four(inner.transformer.h[0].mlp.c_fc.weight)
    assert inner.lm_head.weight is inner.transformer.wte.weight
    folder = tmp_path / "gpt2"
    folder.mkdir()
    load_info = v.write(folder)
    model = formats.read_any(folder, spec, load_info)
    assert model.inner.lm_head.weight is model.inner.transformer.wte.weight
    ids = torch.randint(0, 512, (2, 8))
    torch.testing.assert_close(model(ids), v.runner(ids), atol=0, rtol=0)
