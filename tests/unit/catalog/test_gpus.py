from __future__ import annotations

import pytest

from lmdev.catalog.gpus import find_gpu, get_gpu, gpus
from lmdev.errors import LmdevError

REQUIRED = ["h100-sxm", "h100-pcie", "h200", "b200", "a100-40gb", "a100-80gb", "l40s", "l4", "a10", "t4",
            "v100", "rtx-3090", "rtx-4090", "rtx-5090", "rtx-a6000", "rtx-6000-ada", "mi300x", "mi250x"]


def test_catalog_complete_and_sourced():
    cat = gpus()
    for name in REQUIRED:
        assert name in cat, name
    assert any(g.vendor == "apple" for g in cat.values())
    for g in cat.values():
        assert g.source and g.memory_bytes > 1e9 and g.bandwidth_bytes_s > 1e11
        assert g.price_usd > 0 and g.power_w > 0
        assert set(g.peak_flops) == {"bf16", "fp16", "tf32", "fp32", "int8", "fp8"}
        assert g.peak_flops["fp32"]


def test_dense_not_sparse():
    # datasheets headline 1979 TFLOPS bf16 for H100 SXM with sparsity; the dense figure is half
    h100 = gpus()["h100-sxm"]
    assert h100.peak("bf16") == pytest.approx(989.4e12)
    assert gpus()["a100-80gb"].peak("bf16") == pytest.approx(312e12)
    # a tensor-core bf16 peak is never below fp32 where both exist
    for g in gpus().values():
        if g.peak("bf16"):
            assert g.peak("bf16") >= g.peak("fp32")


@pytest.mark.parametrize("reported, name", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("Tesla T4", "t4"), ("NVIDIA H100 PCIe", "h100-pcie"), ("rtx-3090", "rtx-3090"), ("H200", "h200"),
])
def test_find_by_driver_name(reported, name):
    assert find_gpu(reported).name == name


def test_unknown_lists_catalog():
    with pytest.raises(LmdevError) as err:
        get_gpu("h1000")
    assert "h100-sxm" in err.value.hint and "rtx-4090" in err.value.hint
