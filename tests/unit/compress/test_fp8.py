"""The torch-fp8 variant: fp8 weights and activations through torch._scaled_mm, close to fp32, a
quarter of its size, written and read back to the very outputs that were measured."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from lmdev.compress import fp8, quantize
from lmdev.compress.output import load, write_variant
from tests.unit.compress.conftest import make_source


@pytest.fixture(scope="module")
def wide_source():
    """A digits MLP whose parameters are nearly all Linear weights (64-256-256-10)."""
    return make_source({"type": "mlp", "hidden": [256, 256]}, train_steps=60)


def _x(source, n=64):
    return source.data.val.batch(torch.arange(n))[0]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_fp8_outputs_are_close_to_fp32_the_file_a_quarter_and_it_reads_back_identically(wide_source, tmp_path):
    s = wide_source
    (_, make), = quantize.candidates(s.spec, s.model, _x(s, 1), tmp_path, "torch-fp8")
    v = make()
    assert v.backend == "torch-fp8" and v.settings["kernel"] == fp8.SCALED_MM
    layers = [m for m in v.module.modules() if isinstance(m, fp8.Fp8Linear)]
    assert len(layers) == 3 and all(m.weight_fp8.dtype == torch.float8_e4m3fn for m in layers)
    x = _x(s)
    with torch.no_grad():
        ref = s.model(x)
    y = v.runner(x)
    assert _rel(y, ref) < 0.08  # e4m3 keeps 3 mantissa bits: a few percent of logit error
    assert (y.argmax(1) == ref.argmax(1)).float().mean() > 0.9

    out = write_variant(v, tmp_path / "fp8", s)
    fp32_bytes = 4 * sum(p.numel() for p in s.model.parameters())
    assert (out / "model.safetensors").stat().st_size < 0.35 * fp32_bytes
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("1.weight_fp8").dtype == torch.float8_e4m3fn
    model = load(out)
    loaded = [m for m in model.modules() if isinstance(m, fp8.Fp8Linear)]
    assert len(loaded) == 3 and all(m.kernel == fp8.SCALED_MM for m in loaded)
    torch.testing.assert_close(model(x), y, atol=0, rtol=0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"]["backend"] == "torch-fp8" and "_scaled_mm" in manifest["how_to_load"]


def test_fp8_is_a_candidate_of_auto_and_quantize(wide_source, tmp_path):
    assert "torch-fp8" in [b for b, _ in quantize.candidates(wide_source.spec, wide_source.model,
                                                            _x(wide_source, 1), tmp_path)]


def test_a_tied_head_is_stored_once_in_fp8_and_the_embedding_reads_it(gpt_source, tmp_path):
    s = gpt_source
    from lmdev.compress import transforms

    (head, emb), = transforms.tied_heads(s.model).items()
    v = fp8.fp8_variant(s.spec, s.model)
    out = write_variant(v, tmp_path / "gpt", s)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert f"{emb}.weight" not in keys and f"{head}.weight_fp8" in keys
    model = load(out)
    lookup = model.get_submodule(emb)
    assert isinstance(lookup, fp8.Fp8Lookup) and lookup.table.data_ptr() == \
        model.get_submodule(head).weight_fp8.data_ptr()  # one fp8 copy, shared
    ids = torch.arange(8).view(2, 4)
    torch.testing.assert_close(lookup(ids), s.model.get_submodule(emb)(ids), atol=0.02, rtol=0.07)
    x = _x(s, 4)
    torch.testing.assert_close(model(x), v.runner(x), atol=0, rtol=0)
    with torch.no_grad():
        assert _rel(v.runner(x), s.model(x)) < 0.1


def test_without_scaled_mm_the_layers_multiply_the_dequantised_weight_and_say_so(wide_source, tmp_path,
                                                                                monkeypatch):
    def refuse(*_a, **_k):
        raise RuntimeError("no fp8 kernel for this device")

    monkeypatch.setattr(torch, "_scaled_mm", refuse)
    s = wide_source
    v = fp8.fp8_variant(s.spec, s.model)
    assert "dequantised" in v.settings["kernel"] and any("no fp8 kernel" in n for n in v.notes)
    x = _x(s)
    y = v.runner(x)
    with torch.no_grad():
        assert _rel(y, s.model(x)) < 0.08
    out = write_variant(v, tmp_path / "deq", s)
    model = load(out)
    assert all(m.kernel == fp8.DEQUANT for m in model.modules() if isinstance(m, fp8.Fp8Linear))
    torch.testing.assert_close(model(x), y, atol=0, rtol=0)


def test_quantize_rows_scales_each_row_to_the_fp8_range():
    w = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [1000.0, 3.0, -7.0]])
    q, scale = fp8.quantize_rows(w)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (3,)
    assert float(q.float().abs().amax(1)[0]) == fp8.E4M3_MAX and not torch.isnan(q.float()).any()
    torch.testing.assert_close(q.float() * scale[:, None], w, atol=0, rtol=0.07)


def test_gpt2_conv1d_layers_and_its_tied_head_go_fp8_and_read_back(tmp_path):
    transformers = pytest.importorskip("transformers")
    from lmdev.compress import formats
    from lmdev.compress.source import ModelSpec
    from lmdev.train.models import HFCausalLM

    cfg = transformers.GPT2Config(vocab_size=512, n_positions=16, n_embd=64, n_layer=1, n_head=2)
    torch.manual_seed(0)
    hf = HFCausalLM(transformers.GPT2LMHeadModel(cfg)).eval()
    spec = ModelSpec("hf", cfg.to_dict())
    v = fp8.fp8_variant(spec, hf)
    assert v.settings["layers"] == 5 and "embedding" in v.settings  # c_attn, c_proj, c_fc, mlp.c_proj, lm_head
    assert not any(type(m).__name__ == "Conv1D" for m in v.module.modules())
    ids = torch.randint(0, 512, (2, 8))
    with torch.no_grad():
        assert _rel(v.runner(ids), hf(ids)) < 0.1
    folder = tmp_path / "gpt2"
    folder.mkdir()
    load_info = v.write(folder)
    fp32 = sum(p.numel() * 4 for p in hf.parameters())
    assert (folder / "model.safetensors").stat().st_size < 0.3 * fp32  # embedding + head: one fp8 matrix
    model = formats.read_any(folder, spec, load_info)
    assert isinstance(model.inner.transformer.wte, fp8.Fp8Lookup)
    torch.testing.assert_close(model(ids), v.runner(ids), atol=0, rtol=0)


def test_quantising_an_fp8_variant_again_is_refused(wide_source):
    from lmdev.errors import LmdevError

    with pytest.raises(LmdevError, match="already quantised to fp8"):
        quantize.check_quantizable(wide_source.model, {"dtype": "fp8-e4m3", "backend": "torch-fp8"})
