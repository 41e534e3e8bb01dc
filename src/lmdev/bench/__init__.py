"""Microbenchmarks of this machine: matmul throughput per dtype, memory bandwidth, host-device
transfers, sequential disk I/O and all-reduce, each as a figure and a share of the peak.

:func:`run_bench` returns plain data (a dict, schema ``lmdev.bench/1``, docs/schemas/bench.md);
:func:`save` writes it atomically to ``LMDEV_HOME/bench/latest.json``, where ``lmdev plan`` reads it.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from lmdev.bench.cpu import cpu_clock_ghz, cpu_peak_flops
from lmdev.fsutil import atomic_write_text

SCHEMA = "lmdev.bench/1"


def bench_dir() -> Path:
    return Path(os.environ.get("LMDEV_HOME") or ".lmdev") / "bench"


def _timeit(fn: Callable[[], Any], sync: Callable[[], Any], min_seconds: float, max_reps: int = 1000) -> float:
    """Seconds per call: one warm-up call, then repeat until ``min_seconds`` have passed."""
    fn()
    sync()
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        if reps >= max_reps or time.perf_counter() - start >= min_seconds:
            break
    sync()
    return (time.perf_counter() - start) / reps


def _pct(value: float | None, peak: float | None) -> float | None:
    return round(100.0 * value / peak, 1) if value and peak else None


def matmul(torch: Any, device: str, dtypes: list[str], sizes: list[int], min_seconds: float,
           peaks: dict[str, float | None], sync: Callable[[], Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    tmap = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for dtype in dtypes:
        rows = []
        for n in sizes:
            try:
                if dtype == "int8":
                    a = torch.randint(-64, 64, (n, n), dtype=torch.int8, device=device)
                    b = torch.randint(-64, 64, (n, n), dtype=torch.int8, device=device)

                    def fn(a: Any = a, b: Any = b) -> Any:
                        return torch._int_mm(a, b)
                else:
                    a = torch.randn(n, n, device=device, dtype=tmap[dtype])
                    b = torch.randn(n, n, device=device, dtype=tmap[dtype])

                    def fn(a: Any = a, b: Any = b) -> Any:
                        return a @ b
                if device != "cpu" and dtype in ("fp32", "tf32"):
                    torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
                sec = _timeit(fn, sync, min_seconds)
            except (RuntimeError, NotImplementedError) as exc:
                rows.append({"size": n, "error": str(exc).splitlines()[0][:200]})
                break
            flops = 2.0 * n**3 / sec
            rows.append({"size": n, "seconds": sec, "flops": flops, "percent_of_peak": _pct(flops, peaks.get(dtype))})
        out[dtype] = rows
    return out


def _copy_bandwidth(torch: Any, device: str, nbytes: int, min_seconds: float, sync: Callable[[], Any]) -> float:
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    sec = _timeit(lambda: dst.copy_(src), sync, min_seconds)
    return 2.0 * nbytes / sec  # read + write


def disk(path: Path, nbytes: int) -> dict[str, Any]:
    """Sequential write (with fsync) and read of a temporary file in ``path``; the page cache is
    dropped for the file before reading where the OS allows (posix_fadvise)."""
    block = os.urandom(1 << 20)
    fd, name = tempfile.mkstemp(prefix=".lmdev-bench-", dir=path)
    try:
        start = time.perf_counter()
        with os.fdopen(fd, "wb", buffering=0) as f:
            for _ in range(nbytes // len(block)):
                f.write(block)
            os.fsync(f.fileno())
        write = nbytes / (time.perf_counter() - start)
        dropped = False
        rfd = os.open(name, os.O_RDONLY)
        try:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(rfd, 0, 0, os.POSIX_FADV_DONTNEED)
                dropped = True
            start = time.perf_counter()
            while os.read(rfd, 1 << 22):
                pass
            read = nbytes / (time.perf_counter() - start)
        finally:
            os.close(rfd)
    finally:
        try:
            os.unlink(name)
        except OSError:
            pass
    return {"path": str(path.resolve()), "size_bytes": nbytes, "write_bytes_s": write, "read_bytes_s": read,
            "cache_dropped": dropped}


def _allreduce_worker(rank: int, world: int, init: str, nbytes: int, reps: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=init, rank=rank, world_size=world)
    x = torch.ones(nbytes // 4, device=f"cuda:{rank}")
    for _ in range(3):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    sec = (time.perf_counter() - start) / reps
    if rank == 0:
        Path(out).write_text(json.dumps({"seconds": sec}))
    dist.destroy_process_group()


def allreduce(torch: Any, world: int, nbytes: int, reps: int) -> dict[str, Any]:
    """NCCL all-reduce across the GPUs; bus bandwidth as nccl-tests define it: size/time x 2(n-1)/n."""
    from torch.multiprocessing.spawn import spawn

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        spawn(_allreduce_worker, args=(world, f"file://{tmp}/init", nbytes, reps, out), nprocs=world,  # type: ignore[no-untyped-call]
              join=True)
        sec = json.loads(Path(out).read_text())["seconds"]
    algbw = nbytes / sec
    return {"devices": world, "size_bytes": nbytes, "seconds": sec, "algorithm_bandwidth_bytes_s": algbw,
            "bus_bandwidth_bytes_s": algbw * 2 * (world - 1) / world}


def run_bench(quick: bool = False, project: Path | None = None, facts: Any = None,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    import torch

    say = progress or (lambda _msg: None)
    if facts is None:
        from lmdev.probe.collect import collect

        facts = collect()
    min_s = 0.05 if quick else 0.25
    cpu = facts.host.cpu
    cores = int(cpu.quota_cores) if cpu.quota_cores else cpu.cores
    ghz = cpu_clock_ghz()
    peaks: dict[str, Any] = cpu_peak_flops(cores, ghz, cpu.features, cpu.architecture) or {}
    result: dict[str, Any] = {
        "schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": quick,
        "hostname": socket.gethostname(), "platform": platform.platform(), "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    say("CPU matmul")
    sizes = [256, 512, 1024] if quick else [512, 1024, 2048]
    result["cpu"] = {
        "model": cpu.model, "cores": cores, "clock_ghz": ghz, "features": [f for f in cpu.features if f.startswith(
            ("avx", "amx", "fma", "neon", "sve", "asimd"))], "peak_flops": peaks,
        "peak_source": "cores x clock x FLOPs per cycle of the ISA (lmdev.bench.cpu)",
        "matmul": matmul(torch, "cpu", ["fp32", "bf16", "fp16", "int8"], sizes, min_s, peaks, lambda: None),
    }
    say("CPU memory bandwidth")
    result["cpu"]["memory_bandwidth_bytes_s"] = _copy_bandwidth(torch, "cpu", (64 if quick else 512) << 20, min_s,
                                                                lambda: None)
    result["gpus"] = []
    if torch.cuda.is_available():
        from lmdev.catalog.gpus import find_gpu

        for i in range(torch.cuda.device_count()):
            name = torch.cuda.get_device_name(i)
            spec = find_gpu(name)
            gpeaks = dict(spec.peak_flops) if spec else {}
            dev = f"cuda:{i}"
            say(f"GPU {i} ({name})")
            with torch.cuda.device(i):
                sync = torch.cuda.synchronize
                gsizes = [1024, 4096] if quick else [2048, 4096, 8192]
                g: dict[str, Any] = {"index": i, "name": name, "catalog": spec.name if spec else None,
                                     "peak_flops": gpeaks,
                                     "matmul": matmul(torch, dev, ["fp32", "tf32", "bf16", "fp16", "int8"], gsizes,
                                                      min_s, gpeaks, sync)}
                bw = _copy_bandwidth(torch, dev, (256 if quick else 1024) << 20, min_s, sync)
                g["memory_bandwidth_bytes_s"] = bw
                g["memory_bandwidth_percent_of_peak"] = _pct(bw, spec.bandwidth_bytes_s if spec else None)
                nbytes = (64 if quick else 256) << 20
                for pinned in (True, False):
                    host = torch.empty(nbytes // 4, dtype=torch.float32, pin_memory=pinned)
                    devt = torch.empty(nbytes // 4, dtype=torch.float32, device=dev)
                    h2d = nbytes / _timeit(partial(devt.copy_, host, non_blocking=pinned), sync, min_s)
                    d2h = nbytes / _timeit(partial(host.copy_, devt, non_blocking=pinned), sync, min_s)
                    key = "pinned" if pinned else "pageable"
                    g.setdefault("h2d_bytes_s", {})[key] = h2d
                    g.setdefault("d2h_bytes_s", {})[key] = d2h
                result["gpus"].append(g)
    say("disk")
    result["disk"] = disk(project or Path.cwd(), (64 if quick else 512) << 20)
    result["allreduce"] = None
    if torch.cuda.is_available() and torch.cuda.device_count() > 1:
        say("all-reduce")
        try:
            ar = allreduce(torch, torch.cuda.device_count(), (64 if quick else 256) << 20, 5 if quick else 20)
            from lmdev.catalog.gpus import find_gpu

            spec = find_gpu(torch.cuda.get_device_name(0))
            ar["percent_of_peak"] = _pct(ar["bus_bandwidth_bytes_s"], spec.interconnect_bytes_s / 2 if spec else None)
            result["allreduce"] = ar
        except Exception as exc:  # noqa: BLE001 - reported as data, the rest of the bench stands
            result["allreduce"] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def save(result: dict[str, Any]) -> Path:
    folder = bench_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(folder / "latest.json", json.dumps(result, indent=2))


def load_latest() -> dict[str, Any] | None:
    try:
        result = json.loads((bench_dir() / "latest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def peak_table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The best measured matmul of each device and dtype of a saved bench, beside the datasheet
    (GPU catalog) or ISA (CPU) peak: rows ``device, dtype, measured_flops, peak_flops, percent``,
    then one ``memory`` row per device (bytes/s; ``percent`` where the catalog has a bandwidth)."""
    devices = [("cpu", result.get("cpu") or {})]
    devices += [(f"gpu{g.get('index', i)} {g.get('name', '')}".strip(), g)
                for i, g in enumerate(result.get("gpus") or [])]
    rows: list[dict[str, Any]] = []
    for name, dev in devices:
        peaks = dev.get("peak_flops") or {}
        for dtype, measured in (dev.get("matmul") or {}).items():
            best = max((r["flops"] for r in measured if r.get("flops")), default=None)
            if best is None:
                continue
            peak = peaks.get(dtype)
            rows.append({"device": name, "dtype": dtype, "measured_flops": best, "peak_flops": peak,
                         "percent": _pct(best, peak)})
        bw = dev.get("memory_bandwidth_bytes_s")
        if bw:
            rows.append({"device": name, "dtype": "memory", "measured_flops": None, "peak_flops": None,
                         "measured_bytes_s": bw, "percent": dev.get("memory_bandwidth_percent_of_peak")})
    return rows
