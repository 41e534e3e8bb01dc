"""A real all-reduce across nodes (gloo on CPUs, NCCL when every node has a GPU), timed.

Run once per node, all at the same time (``lmdev cluster check`` starts them over SSH); the same
function is what ``benchmarks/remote_overhead.py`` runs in a plain torch.distributed script.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any


def gloo_allreduce(rank: int, world: int, endpoint: str, mbytes: float = 16.0, iters: int = 5) -> dict[str, Any]:
    """All-reduce a float32 tensor of ``mbytes`` MB ``iters`` times; the bus bandwidth in GB/s
    (the NCCL-tests convention: algorithm bandwidth x 2(n-1)/n) and whether the sum was right."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    device = torch.device("cuda", 0) if backend == "nccl" else torch.device("cpu")
    dist.init_process_group(backend, init_method=f"tcp://{endpoint}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        n = max(1, int(mbytes * 1e6 / 4))
        x = torch.full((n,), float(rank + 1), dtype=torch.float32, device=device)
        dist.all_reduce(x)  # warm-up, and the check: 1 + 2 + ... + world
        ok = bool(torch.all(x == world * (world + 1) / 2).item())
        dist.barrier()
        t0 = time.perf_counter()
        for _ in range(iters):
            dist.all_reduce(x)
        if backend == "nccl":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / iters
    finally:
        dist.destroy_process_group()
    size = n * 4
    alg = size / seconds / 1e9
    return {"backend": backend, "bytes": size, "seconds": seconds, "algbw_gbps": alg,
            "busbw_gbps": alg * 2 * (world - 1) / world if world > 1 else alg, "sum_ok": ok,
            "rank": rank, "world": world}
