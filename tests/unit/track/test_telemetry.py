"""The telemetry sampler with a fake NVML: GPU metrics when present, CPU side always."""

import types

import pytest

from lmdev.track.telemetry import Sampler


class _NVMLError(Exception):
    pass


def fake_nvml(count=2, broken=()):
    """A fake pynvml: GPU i reports utilisation 10*i+5 etc.; ``broken`` functions raise."""

    def fn(name, value):
        def call(*args):
            if name in broken:
                raise _NVMLError(name)
            return value(*args)
        return call

    return types.SimpleNamespace(
        NVML_TEMPERATURE_GPU=0, NVML_CLOCK_SM=1, NVML_PCIE_UTIL_TX_BYTES=0, NVML_PCIE_UTIL_RX_BYTES=1,
        nvmlDeviceGetCount=lambda: count,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=fn("util", lambda h: types.SimpleNamespace(gpu=10 * h + 5, memory=3)),
        nvmlDeviceGetMemoryInfo=fn("mem", lambda h: types.SimpleNamespace(used=(h + 1) * 2**30)),
        nvmlDeviceGetPowerUsage=fn("power", lambda h: 250_000),
        nvmlDeviceGetTemperature=fn("temp", lambda h, kind: 61),
        nvmlDeviceGetClockInfo=fn("clock", lambda h, kind: 1980),
        nvmlDeviceGetCurrentClocksEventReasons=fn("throttle", lambda h: 4),
        nvmlDeviceGetPcieThroughput=fn("pcie", lambda h, kind: 100 if kind == 0 else 200),
    )


def by_key(samples):
    return {(device, key): value for _, _, device, key, value in samples}


def test_gpu_metrics_through_nvml():
    s = Sampler(lambda x: None, nvml=fake_nvml(), rank=3)
    samples = s.sample()
    got = by_key(samples)
    assert {r for _, r, _, _, _ in samples} == {3}
    assert got[("gpu:0", "gpu_util_percent")] == 5 and got[("gpu:1", "gpu_util_percent")] == 15
    assert got[("gpu:1", "gpu_mem_used_bytes")] == 2 * 2**30
    assert got[("gpu:0", "gpu_power_w")] == 250.0 and got[("gpu:0", "gpu_temp_c")] == 61
    assert got[("gpu:0", "gpu_sm_clock_mhz")] == 1980 and got[("gpu:0", "gpu_throttle_reasons")] == 4
    assert got[("gpu:0", "gpu_pcie_tx_bytes_per_s")] == 100 * 1024
    assert got[("gpu:0", "gpu_pcie_rx_bytes_per_s")] == 200 * 1024
    for key in ("cpu_percent", "ram_used_bytes", "ram_percent"):
        assert ("host", key) in got
    assert got[("process", "rss_bytes")] > 0


def test_unsupported_nvml_metrics_are_skipped_silently():
    s = Sampler(lambda x: None, nvml=fake_nvml(count=1, broken={"power", "pcie"}))
    got = by_key(s.sample())
    assert ("gpu:0", "gpu_util_percent") in got
    assert ("gpu:0", "gpu_power_w") not in got and ("gpu:0", "gpu_pcie_tx_bytes_per_s") not in got
    assert ("gpu:0", "gpu_power_w") not in by_key(s.sample())


def test_without_nvml_only_the_cpu_side(monkeypatch):
    import lmdev.track.telemetry as tel

    monkeypatch.setattr(tel, "_load_nvml", lambda: None)
    got = by_key(Sampler(lambda x: None).sample())
    assert not any(d.startswith("gpu") for d, _ in got)
    assert ("host", "cpu_percent") in got and ("process", "rss_bytes") in got


def test_other_ranks_sample_only_their_process():
    got = by_key(Sampler(lambda x: None, nvml=fake_nvml(), host=False).sample())
    assert {d for d, _ in got} == {"process"}


def test_sampler_thread_delivers_samples_and_stops():
    import threading

    got = []
    ready = threading.Event()

    def sink(samples):
        got.extend(samples)
        ready.set()

    s = Sampler(sink, interval=0.01, nvml=fake_nvml(count=1)).start()
    assert ready.wait(30)
    s.stop()
    n = len(got)
    assert n > 0 and not s._thread.is_alive()


@pytest.mark.parametrize("interval", [0.05])
def test_init_with_telemetry_records_system_metrics(home, interval):
    import lmdev
    from lmdev.track.store import Store

    run = lmdev.init("tele", telemetry=True, telemetry_interval=interval)
    run._sampler.sink(run._sampler.sample())  # one sample now, whatever the scheduling
    run.finish()
    with Store(home) as s:
        samples = s.system(s.get_run("tele"))
    assert {(x.device, x.key) for x in samples} >= {("host", "cpu_percent"), ("process", "rss_bytes")}


def test_a_driverless_machine_never_imports_pynvml(monkeypatch):
    import sys

    import lmdev.nvml

    seen: list[str] = []

    class Watch:
        def find_spec(self, name, path=None, target=None):
            seen.append(name)
            return None

    monkeypatch.delitem(sys.modules, "pynvml", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Watch(), *sys.meta_path])
    monkeypatch.setattr(lmdev.nvml, "nvidia_driver_present", lambda *a, **k: False)
    got = by_key(Sampler(lambda x: None).sample())
    assert "pynvml" not in seen  # not even imported: a failing nvmlInit costs ~0.1-0.2 s
    assert ("host", "cpu_percent") in got and not any(d.startswith("gpu") for d, _ in got)
