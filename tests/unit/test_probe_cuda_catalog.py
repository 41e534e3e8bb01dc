"""The CUDA compatibility data the probes and rules read (lmdev.catalog.cuda): driver <-> CUDA,
the architectures in PyTorch's wheels, and which wheel to install."""

from __future__ import annotations

import pytest

from lmdev.catalog.cuda import (
    CUDA_MIN_DRIVER,
    arch_name,
    arch_supported,
    max_cuda_for_driver,
    min_driver_for_cuda,
    torch_arch_list,
    torch_install_command,
    version_tuple,
)


@pytest.mark.parametrize("driver, cuda", [
    ("550.54.14", "12.4"),  # exactly CUDA 12.4 GA's minimum
    ("550.54.15", "12.4"),
    ("550.90.07", "12.4"),
    ("535.183.01", "12.2"),
    ("560.35.03", "12.6"),
    ("560.94", "12.6"),  # a Windows driver as WSL2 reports it
    ("570.86.15", "12.8"),
    ("575.57.08", "12.9"),
    ("580.65.06", "13.0"),
    ("525.60.13", "12.0"),
    ("525.60.12", "11.8"),  # one patch short of 12.0
    ("470.256.02", "11.4"),
    ("418.67", None),  # older than anything in the table
])
def test_max_cuda_for_driver(driver, cuda):
    assert max_cuda_for_driver(driver) == cuda


@pytest.mark.parametrize("cuda, driver", [
    ("12.4", "550.54.14"), ("12.4.1", "550.54.14"), ("12.1", "530.30.02"), ("11.8", "520.61.05"),
    ("13.0", "580.65.06"),
    ("12.7", "570.26"),  # no 12.7 release: the next one up decides
    ("14.0", None),
])
def test_min_driver_for_cuda(cuda, driver):
    assert min_driver_for_cuda(cuda) == driver


def test_driver_table_round_trips():
    for cuda, driver in CUDA_MIN_DRIVER:
        assert min_driver_for_cuda(cuda) == driver
        assert max_cuda_for_driver(driver) == cuda
    # newest first, both columns descending
    assert [version_tuple(d) for _, d in CUDA_MIN_DRIVER] == sorted(
        (version_tuple(d) for _, d in CUDA_MIN_DRIVER), reverse=True)


def test_torch_arch_list():
    cu121 = torch_arch_list("12.1")
    assert {"5.0", "8.0", "8.6", "9.0"} <= set(cu121) and "10.0" not in cu121 and "12.0" not in cu121
    cu128 = torch_arch_list("12.8")
    assert {"10.0", "12.0"} <= set(cu128) and "6.0" not in cu128  # Blackwell in, Pascal out
    assert torch_arch_list("12.9") == cu128
    assert "7.0" not in torch_arch_list("13.0")  # CUDA 13 drops Volta
    assert torch_arch_list("10.2") == torch_arch_list("11.0")  # older than the table: its oldest row


@pytest.mark.parametrize("cc, archs, ok", [
    ("8.9", ["8.0", "8.6"], True),  # sm_86 cubins run on Ada (8.9)
    ("8.6", ["sm_50", "sm_80"], True),  # torch.cuda.get_arch_list() spelling
    ("8.0", ["sm_86"], False),  # never downwards
    ("9.0", ["sm_80", "sm_86"], False),  # never across majors
    ("9.0", ["sm_90a"], True),
    ("12.0", ["sm_100"], False),  # Blackwell datacenter code does not run on RTX 50
    ("12.0", ["sm_120"], True),
    ("9.0", ["compute_90"], False),  # PTX only: not counted
    ("7.5", [], False),
])
def test_arch_supported(cc, archs, ok):
    assert arch_supported(cc, archs) is ok


# which wheel for a driver and GPUs (torch_wheel_for): tests/unit/catalog/test_torch_build_rule.py


def test_install_command():
    assert torch_install_command("cu126") == (
        "pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu126")
    assert "upgrade the NVIDIA driver" in torch_install_command(None)


def test_arch_names():
    assert arch_name("8.9") == "Ada Lovelace"
    assert arch_name("9.0") == "Hopper"
    assert arch_name("12.0") == "Blackwell"
    assert arch_name("6.1") == "Pascal"  # by major where minors share a name
    assert arch_name("2.0") == "unknown architecture"
