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


class FakeClock:
    """time.perf_counter for the bench: each reading advances by ``step`` seconds."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_matmul_figures_from_a_known_clock(monkeypatch):
    torch = pytest.importorskip("torch")
    import lmdev.bench as bench

    # every clock reading is 0.25 s later: _timeit reads the start, the clock after the one call
    # (0.01 s have passed at once) and the end: one timed call of 0.5 s per size
    monkeypatch.setattr(bench.time, "perf_counter", FakeClock(0.25))
    rows = matmul(torch, "cpu", ["fp32"], [100, 200], 0.01, {"fp32": 64e6}, lambda: None)["fp32"]
    assert [r["size"] for r in rows] == [100, 200]
    # 2 * 100^3 = 2e6 FLOP in 0.5 s = 4 MFLOP/s, 6.25% of a 64 MFLOP/s peak; 200: 8x the work
    assert [r["seconds"] for r in rows] == [0.5, 0.5]
    assert [r["flops"] for r in rows] == [4e6, 32e6]
    assert [r["percent_of_peak"] for r in rows] == [6.2, 50.0]  # rounded to one decimal
    no_peak = matmul(torch, "cpu", ["fp32"], [100], 0.01, {}, lambda: None)["fp32"][0]
    assert no_peak["percent_of_peak"] is None


def test_copy_bandwidth_counts_the_read_and_the_write(monkeypatch):
    torch = pytest.importorskip("torch")
    import lmdev.bench as bench

    monkeypatch.setattr(bench.time, "perf_counter", FakeClock(0.125))
    # 1 MiB copied in 0.25 s (two clock readings): 1 MiB read + 1 MiB written = 8 MiB/s
    assert _copy_bandwidth(torch, "cpu", 1 << 20, 0.01, lambda: None) == pytest.approx(8 * (1 << 20))


def test_peak_table_takes_the_best_size_and_its_peak():
    from lmdev.bench import peak_table

    result = {"cpu": {"peak_flops": {"fp32": 1e11, "bf16": None},
                      "matmul": {"fp32": [{"size": 512, "flops": 2e10}, {"size": 1024, "flops": 5e10}],
                                 "bf16": [{"size": 512, "flops": 1e9}], "int8": [{"size": 512, "error": "x"}]},
                      "memory_bandwidth_bytes_s": 9e9},
              "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "peak_flops": {"bf16": 989e12},
                        "matmul": {"bf16": [{"size": 8192, "flops": 700e12}]},
                        "memory_bandwidth_bytes_s": 3e12, "memory_bandwidth_percent_of_peak": 89.6}]}
    rows = {(r["device"], r["dtype"]): r for r in peak_table(result)}
    assert rows[("cpu", "fp32")]["measured_flops"] == 5e10 and rows[("cpu", "fp32")]["percent"] == 50.0
    assert rows[("cpu", "bf16")]["percent"] is None  # no peak for it
    assert ("cpu", "int8") not in rows  # only an error: nothing measured
    assert rows[("gpu0 NVIDIA H100 80GB HBM3", "bf16")]["percent"] == 70.8
    assert rows[("gpu0 NVIDIA H100 80GB HBM3", "memory")]["percent"] == 89.6
    assert rows[("cpu", "memory")]["measured_bytes_s"] == 9e9


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
