"""Quantised variants run, are smaller, and read back from OUT exactly as they were measured."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from lmdev.compress import formats, quantize, transforms
from lmdev.compress.output import load, write_variant
from lmdev.errors import LmdevError

from .conftest import tiny_gpt2


def _x(source, n=32):
    return source.data.val.batch(torch.arange(n))[0]


def test_gpt2_conv1d_becomes_linear_with_the_same_outputs_and_an_untied_head():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 64, (2, 8))
    before = model(input_ids=ids).logits
    lin = transformers.GPT2LMHeadModel(cfg).eval()
    lin.load_state_dict(model.state_dict())
    transforms.linearize(lin)
    assert not any(type(m).__name__ == "Conv1D" for m in lin.modules())
    assert lin.lm_head.weight is not lin.transformer.wte.weight
    torch.testing.assert_close(lin(input_ids=ids).logits, before, atol=1e-5, rtol=1e-5)
    # and now torch.ao quantises the blocks, not only the head
    q = transforms.torch_ao_int8(lin)
    n_q = sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in q.modules())
    assert n_q == 1 + 4 * cfg.n_layer  # lm_head + c_attn, c_proj, c_fc, mlp.c_proj


@pytest.mark.parametrize("backend", ["torch.ao-int8", "torchao-int8", "torch-bf16"])
def test_variant_reads_back_as_measured(digits_source, tmp_path, backend):
    if backend == "torchao-int8":
        pytest.importorskip("torchao")
    s = digits_source
    if backend == "torch-bf16":  # made even where bf16 is slow (the speed check is tested below)
        v = quantize.cast(s.spec, s.model, torch.bfloat16, check_speed=False)
    else:
        (_, make), = quantize.candidates(s.spec, s.model, _x(s, 1), tmp_path, backend)
        v = make()
    out = write_variant(v, tmp_path / "out", s)
    model = load(out)
    x = _x(s)
    torch.testing.assert_close(v.runner(x), model(x.to(next(model.parameters()).dtype if backend == "torch-bf16"
                                                         else torch.float32)).float(), atol=0, rtol=0)
    size = (out / "model.safetensors").stat().st_size
    fp32 = sum(p.numel() * 4 for p in s.model.parameters())
    assert size < fp32 * (0.6 if backend != "torch-bf16" else 0.55)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"]["backend"] == backend and manifest["how_to_load"]


def test_gpt_int8_stores_a_tied_embedding_once_as_int8_and_reads_back(gpt_source, tmp_path):
    s = gpt_source
    (head, emb), = transforms.tied_heads(s.model).items()
    v = quantize.ao_int8(s.spec, s.model)
    out = write_variant(v, tmp_path / "gpt", s)
    model = load(out)
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert f"{emb}.weight" not in keys and f"{head}.weight.int8" in keys  # the matrix once, in int8
    lookup = model.get_submodule(emb)  # read from the head's int8 values, not held again in fp32
    assert isinstance(lookup, formats.Int8Lookup) and lookup.table.dtype == torch.int8
    assert torch.equal(lookup.table, model.get_submodule(head).weight().int_repr())
    ids = torch.arange(8).view(2, 4)
    torch.testing.assert_close(lookup(ids), s.model.get_submodule(emb)(ids), atol=0.05, rtol=0)  # int8 of it
    x = _x(s, 4)
    torch.testing.assert_close(v.runner(x), model(x), atol=0, rtol=0)
    gpt2 = pytest.importorskip("transformers")
    cfg = gpt2.GPT2Config(vocab_size=2048, n_positions=16, n_embd=64, n_layer=1, n_head=2)
    from lmdev.compress.source import ModelSpec
    from lmdev.train.models import HFCausalLM

    hf = HFCausalLM(gpt2.GPT2LMHeadModel(cfg)).eval()
    spec = ModelSpec("hf", cfg.to_dict())
    q = quantize.ao_int8(spec, hf)
    folder = tmp_path / "hf"
    folder.mkdir()
    q.write(folder)
    fp32 = sum(p.numel() * 4 for p in hf.parameters())
    assert (folder / "model.safetensors").stat().st_size < 0.3 * fp32  # embedding + head: one int8 matrix


def test_onnx_int8_variant_loads_in_onnx_runtime(digits_source, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    s = digits_source
    v = quantize.onnx_variant(s.spec, s.model, _x(s, 1), tmp_path, int8=True)
    out = write_variant(v, tmp_path / "onnx", s)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    x = _x(s, 16)
    y = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    assert y.shape == (16, 10)
    assert (y.argmax(1) == s.model(x).argmax(1)).float().mean() > 0.9
    assert isinstance(load(out), formats.OnnxModel)


def test_quantising_an_int8_model_is_refused(digits_source):
    q = transforms.torch_ao_int8(transforms.linearize(nn.Sequential(nn.Linear(4, 4))))
    with pytest.raises(LmdevError, match="already quantised"):
        quantize.check_quantizable(q, None)
    with pytest.raises(LmdevError, match="already quantised"):
        quantize.check_quantizable(digits_source.model, {"dtype": "int8"})


def test_a_failing_writer_leaves_no_output(digits_source, tmp_path):
    v = quantize.cast(digits_source.spec, digits_source.model, torch.bfloat16, check_speed=False)

    def broken(folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    v.write = broken
    with pytest.raises(OSError):
        write_variant(v, tmp_path / "out", digits_source)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []


def test_a_changed_file_is_not_loaded(digits_source, tmp_path):
    v = quantize.cast(digits_source.spec, digits_source.model, torch.bfloat16, check_speed=False)
    out = write_variant(v, tmp_path / "out", digits_source)
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(LmdevError, match="does not match"):
        load(out)


def test_a_written_variant_is_a_source_but_a_half_or_int8_one_is_not_requantised(digits_source, tmp_path):
    from lmdev.compress import prune
    from lmdev.compress.source import resolve

    s = digits_source
    pruned = write_variant(prune.prune_variant(s, 0.5, 5), tmp_path / "pruned", s)
    again = resolve(str(pruned))
    assert again.kind == "variant" and again.spec.config["hidden"] == [32, 16]
    quantize.check_quantizable(again.model, again.method)  # fp32: fine
    q = write_variant(quantize.ao_int8(again.spec, again.model), tmp_path / "q", again)
    int8 = resolve(str(q))
    with pytest.raises(LmdevError, match="already quantised"):
        quantize.check_quantizable(int8.model, int8.method)
    half = write_variant(quantize.cast(s.spec, s.model, torch.bfloat16, check_speed=False), tmp_path / "half", s)
    with pytest.raises(LmdevError, match="bfloat16 variant"):
        resolve(str(half))


def test_half_precision_is_refused_up_front_where_its_matmul_is_slow(digits_source, monkeypatch):
    monkeypatch.setattr(quantize, "matmul_slowdown", lambda dtype, n=256: 30.0)
    with pytest.raises(quantize.BackendFailed, match="30x slower than fp32"):
        quantize.cast(digits_source.spec, digits_source.model, torch.float16)
    monkeypatch.setattr(quantize, "matmul_slowdown", lambda dtype, n=256: 0.5)
    assert quantize.cast(digits_source.spec, digits_source.model, torch.float16).backend == "torch-fp16"


def test_onnx_variants_store_a_tied_embedding_once_with_the_same_outputs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    spec, model = tiny_gpt2()
    ids = torch.randint(0, 4096, (3, 8))
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())  # the tied matrix counted once
    fp32 = quantize.onnx_variant(spec, model, ids[:1], tmp_path, int8=False)
    int8 = quantize.onnx_variant(spec, model, ids[:1], tmp_path, int8=True)

    def big(path):  # initializers holding at least half the tied matrix's values
        return [i.name for i in onnx.load(str(path)).graph.initializer if math.prod(i.dims) >= 4096 * 64 // 2]

    assert len(big(tmp_path / "export.onnx")) == 2  # what the exporter writes: embedding + transposed head
    assert len(big(tmp_path / "fp32.onnx")) == 1 and len(big(tmp_path / "int8.onnx")) == 1
    assert (tmp_path / "fp32.onnx").stat().st_size < 1.1 * fp32_bytes
    assert (tmp_path / "int8.onnx").stat().st_size < 0.3 * fp32_bytes
    exported = ort.InferenceSession(str(tmp_path / "export.onnx"), providers=["CPUExecutionProvider"])
    before = torch.from_numpy(exported.run(None, {"x": ids.numpy()})[0])
    torch.testing.assert_close(fp32.runner(ids), before, atol=0, rtol=0)  # bit for bit
    with torch.no_grad():
        ref = model(ids)
    torch.testing.assert_close(fp32.runner(ids), ref, atol=1e-4, rtol=1e-4)
    err = (int8.runner(ids) - ref).norm() / ref.norm()
    assert err < 0.05
