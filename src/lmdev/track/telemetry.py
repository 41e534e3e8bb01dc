"""System telemetry: a sampler thread that records the machine, the process and each NVIDIA GPU.

Every ``interval`` seconds (default 2) it reads, with psutil: CPU %, RAM used, the training
process's RSS and CPU % (with its children), disk and network I/O rates; and through NVML
(nvidia-ml-py), for each GPU: utilisation, memory used, power, temperature, SM clock, the
throttle (clock event) reasons bitmask and PCIe throughput. Without NVML (no driver, no GPU) it
records the CPU side and says nothing. A metric NVML does not support on a GPU is skipped.

Samples are ``(time, rank, device, key, value)``; ``device`` is ``host``, ``process`` or
``gpu:N``. Host and GPU metrics are sampled by one process per node (local rank 0); every rank
samples its own process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

Sample = tuple[float, int, str, str, float]


def _load_nvml() -> Any | None:
    from lmdev.nvml import local_driver_present

    if not local_driver_present():  # not even imported: it could only fail, slowly
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no library, no driver, no GPU: the CPU side only, silently
        return None


class Sampler:
    """Samples every ``interval`` seconds in a daemon thread and hands samples to ``sink``."""

    def __init__(self, sink: Callable[[list[Sample]], None], *, interval: float = 2.0, rank: int = 0,
                 pid: int | None = None, host: bool = True, gpus: bool = True,
                 nvml: Any | None = None) -> None:
        import psutil

        self._psutil = psutil
        self.sink = sink
        self.interval = float(interval)
        self.rank = rank
        self.host = host
        self._proc = psutil.Process(pid)
        self._nvml = nvml if nvml is not None else (_load_nvml() if gpus and host else None)
        self._handles: list[Any] = []
        self._unsupported: set[tuple[int, str]] = set()
        if self._nvml is not None:
            try:
                count = self._nvml.nvmlDeviceGetCount()
                self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            except Exception:
                self._nvml = None
        self._last_io: tuple[float, Any, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prime()

    def _prime(self) -> None:
        """cpu_percent() and I/O rates need a previous reading."""
        ps = self._psutil
        try:
            if self.host:
                ps.cpu_percent(None)
            self._proc.cpu_percent(None)
        except ps.Error:
            pass
        self._last_io = (time.monotonic(), self._disk(), self._net())

    def _disk(self) -> Any:
        try:
            return self._psutil.disk_io_counters()
        except Exception:
            return None

    def _net(self) -> Any:
        try:
            return self._psutil.net_io_counters()
        except Exception:
            return None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._loop, name="lmdev-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        # the first reading at once, so that even a run shorter than the interval has one
        while True:
            try:
                samples = self.sample()
            except Exception:  # telemetry must never disturb training
                samples = []
            if samples:
                self.sink(samples)
            if self._stop.wait(self.interval):
                break

    def sample(self) -> list[Sample]:
        """One reading of everything this sampler records."""
        now = time.time()
        out: list[Sample] = []
        add = out.append
        r = self.rank
        ps = self._psutil
        try:
            rss = self._proc.memory_info().rss
            cpu = self._proc.cpu_percent(None)
            for child in self._proc.children(recursive=True):
                try:
                    rss += child.memory_info().rss
                    cpu += child.cpu_percent(None)
                except ps.Error:
                    pass
            add((now, r, "process", "rss_bytes", float(rss)))
            add((now, r, "process", "cpu_percent", float(cpu)))
        except ps.Error:
            pass
        if not self.host:
            return out
        add((now, r, "host", "cpu_percent", float(ps.cpu_percent(None))))
        vm = ps.virtual_memory()
        add((now, r, "host", "ram_used_bytes", float(vm.total - vm.available)))
        add((now, r, "host", "ram_percent", float(vm.percent)))
        t = time.monotonic()
        disk, net = self._disk(), self._net()
        if self._last_io is not None:
            t0, disk0, net0 = self._last_io
            dt = max(t - t0, 1e-6)
            if disk is not None and disk0 is not None:
                add((now, r, "host", "disk_read_bytes_per_s", (disk.read_bytes - disk0.read_bytes) / dt))
                add((now, r, "host", "disk_write_bytes_per_s", (disk.write_bytes - disk0.write_bytes) / dt))
            if net is not None and net0 is not None:
                add((now, r, "host", "net_sent_bytes_per_s", (net.bytes_sent - net0.bytes_sent) / dt))
                add((now, r, "host", "net_recv_bytes_per_s", (net.bytes_recv - net0.bytes_recv) / dt))
        self._last_io = (t, disk, net)
        for i, handle in enumerate(self._handles):
            out.extend(self._gpu(now, i, handle))
        return out

    def _gpu(self, now: float, index: int, h: Any) -> list[Sample]:
        nv = self._nvml
        if nv is None:  # no NVML means no handles, so this is not reached
            return []
        device = f"gpu:{index}"
        reads: list[tuple[str, Callable[[], float]]] = [
            ("gpu_util_percent", lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu),
            ("gpu_mem_util_percent", lambda: nv.nvmlDeviceGetUtilizationRates(h).memory),
            ("gpu_mem_used_bytes", lambda: nv.nvmlDeviceGetMemoryInfo(h).used),
            ("gpu_power_w", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
            ("gpu_temp_c", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
            ("gpu_sm_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            ("gpu_throttle_reasons", lambda: _throttle(nv, h)),
            ("gpu_pcie_tx_bytes_per_s",
             lambda: nv.nvmlDeviceGetPcieThroughput(h, nv.NVML_PCIE_UTIL_TX_BYTES) * 1024.0),
            ("gpu_pcie_rx_bytes_per_s",
             lambda: nv.nvmlDeviceGetPcieThroughput(h, nv.NVML_PCIE_UTIL_RX_BYTES) * 1024.0),
        ]
        out = []
        for key, read in reads:
            if (index, key) in self._unsupported:
                continue
            try:
                out.append((now, self.rank, device, key, float(read())))
            except Exception:  # not supported on this GPU / driver: skip it from now on
                self._unsupported.add((index, key))
        return out


def _throttle(nv: Any, h: Any) -> float:
    fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        nv.nvmlDeviceGetCurrentClocksThrottleReasons
    return float(fn(h))
