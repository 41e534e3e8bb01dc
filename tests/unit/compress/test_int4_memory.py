"""int4 weight storage (size only, read back exactly as measured), and peak memory measured in a
fresh process."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from lmdev.compress import formats, quantize
from lmdev.compress.core import baseline_variant
from lmdev.compress.memprobe import peak_memory, supported
from lmdev.compress.output import load, write_variant

from .conftest import make_source


def test_int4_packing_round_trips_within_half_a_step():
    w = torch.randn(5, 70)  # 70 columns: the last group is padded
    packed, scale = formats.int4_quantize(w)
    assert packed.dtype == torch.uint8 and packed.shape == (5, 48) and scale.shape == (5, 3)
    back = formats.int4_dequantize(packed, scale, [5, 70])
    step = scale.float().repeat_interleave(formats.INT4_GROUP, 1)[:, :70]
    assert ((back - w).abs() <= step / 2 + 1e-6).all()
    assert not torch.equal(back, w)  # it is lossy


def test_int4_variant_is_small_and_reads_back_as_measured(gpt_source, tmp_path):
    s = gpt_source
    v = quantize.int4_weights(s.spec, s.model)
    out = write_variant(v, tmp_path / "int4", s)
    fp32 = write_variant(baseline_variant(s), tmp_path / "fp32", s)
    size = (out / "model.safetensors").stat().st_size
    assert size < 0.3 * (fp32 / "model.safetensors").stat().st_size
    model = load(out)
    x = s.data.val.batch(torch.arange(4))[0]
    torch.testing.assert_close(v.runner(x), model(x), atol=0, rtol=0)
    agree = (v.runner(x).argmax(-1) == s.model(x).argmax(-1)).float().mean()
    assert agree > 0.5  # still the same model, roughly


@pytest.mark.integration
@pytest.mark.skipif(not supported(), reason="needs Linux /proc")
def test_peak_memory_grows_with_the_weights_and_is_measured_per_variant(tmp_path):
    small = make_source({"type": "mlp", "hidden": [64]})
    big = make_source({"type": "mlp", "hidden": [2048, 2048]})  # 4.3M parameters: 17 MB in fp32
    x = tmp_path / "x.safetensors"
    save_file({"x": torch.zeros(8, 64)}, str(x))
    peaks = {}
    for name, s in (("small", small), ("big", big)):
        folder = tmp_path / name
        folder.mkdir()
        loaded = formats.write_torch(s.model, folder)
        peak, why = peak_memory(folder, s.spec.to_dict(), loaded, x, 1)
        assert why is None and peak is not None
        peaks[name] = peak
    weights = 4 * sum(p.numel() for p in big.model.parameters())
    assert peaks["big"].run_peak_bytes >= 0.9 * weights  # the weights are resident while it runs
    assert peaks["big"].peak_bytes > peaks["small"].peak_bytes + 0.8 * weights


@pytest.mark.integration
@pytest.mark.skipif(not supported(), reason="needs Linux /proc")
def test_an_int8_variant_loads_without_building_the_fp32_model_first(tmp_path):
    s = make_source({"type": "mlp", "hidden": [1024] * 16})  # 16.4M parameters (66 MB fp32), ~1M per layer
    x = torch.randn(8, 64)
    inputs = tmp_path / "x.safetensors"
    save_file({"x": x}, str(inputs))
    peaks = {}
    for name, v in (("fp32", baseline_variant(s)), ("int8", quantize.ao_int8(s.spec, s.model))):
        out = write_variant(v, tmp_path / name, s)
        torch.testing.assert_close(load(out)(x), v.runner(x), atol=0, rtol=0)  # loaded as measured
        manifest = json.loads((out / "manifest.json").read_text())
        peaks[name], why = peak_memory(out, manifest["model"], manifest["load"], inputs, 1)
        assert why is None
    # int8 layers built one at a time from the stored int8: below fp32 (built in fp32 first, it was 3x)
    assert peaks["int8"].load_peak_bytes < 0.85 * peaks["fp32"].peak_bytes
    assert peaks["int8"].peak_bytes < 0.85 * peaks["fp32"].peak_bytes
