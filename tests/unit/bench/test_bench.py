"""The bench's pieces that need no accelerator: disk I/O, the matmul timer, saving, the CPU peak."""

from __future__ import annotations

import json

import pytest

from lmdev.bench import _copy_bandwidth, disk, load_latest, matmul, save
from lmdev.bench.cpu import cpu_clock_ghz


def test_disk_writes_reads_and_cleans_up(tmp_path):
    r = disk(tmp_path, 4 << 20)
    assert r["write_bytes_s"] > 0 and r["read_bytes_s"] > 0 and r["size_bytes"] == 4 << 20
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_matmul_rows_and_percent_of_peak():
    torch = pytest.importorskip("torch")
    rows = matmul(torch, "cpu", ["fp32"], [64, 128], 0.01, {"fp32": 1e13}, lambda: None)["fp32"]
    assert [r["size"] for r in rows] == [64, 128]
    for r in rows:
        assert r["flops"] == pytest.approx(2 * r["size"] ** 3 / r["seconds"])
        assert r["percent_of_peak"] == round(100 * r["flops"] / 1e13, 1)
    assert _copy_bandwidth(torch, "cpu", 1 << 20, 0.01, lambda: None) > 0


def test_save_is_atomic_and_loadable(tmp_path, monkeypatch):
    monkeypatch.setenv("LMDEV_HOME", str(tmp_path))
    assert load_latest() is None
    path = save({"schema": "lmdev.bench/1", "cpu": {"matmul": {}}})
    assert path == tmp_path / "bench" / "latest.json"
    assert json.loads(path.read_text())["schema"] == "lmdev.bench/1"
    assert load_latest()["schema"] == "lmdev.bench/1"
    assert [p.name for p in path.parent.iterdir()] == ["latest.json"]


def test_clock_from_cpuinfo(monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "cpu_freq", lambda: None)
    assert cpu_clock_ghz("processor: 0\ncpu MHz\t\t: 2100.000\n") == pytest.approx(2.1)
    assert cpu_clock_ghz("nothing here") is None
