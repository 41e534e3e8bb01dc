"""Several workers, one result: torch.distributed glue for the training loop.

Workers are started by torchrun's elastic launcher (``lmdev train --nproc N``), which sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Each rank takes its contiguous share
of every global batch, DistributedDataParallel averages the gradients, and metrics are summed
across ranks at log intervals only, so a run's numbers do not depend on the number of workers.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lmdev.errors import LmdevError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch."""
        if not self.enabled:
            return idx
        return idx.chunk(self.world)[self.rank]

    def sum_list(self, values: list[float]) -> list[float]:
        """Python numbers summed across ranks (float64), returned as a new list."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device_for_collectives())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def all_true(self, *flags: bool) -> list[bool]:
        """Each flag AND-ed across ranks (every rank must agree to skip or to stop)."""
        if not self.enabled:
            return list(flags)
        t = torch.tensor([1.0 if f else 0.0 for f in flags], device=self.device_for_collectives())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return [bool(v) for v in t.tolist()]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def device_for_collectives(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def from_env(device_name: str, timeout_s: float = 300.0) -> Dist:
    """Join the process group torchrun set up (a no-op for a single process)."""
    from lmdev.train.launch import worker_place

    place = worker_place(os.environ)
    if place.world <= 1:
        return Dist()
    rank, local, world = place.rank, place.local_rank, place.world
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        # The store torchrun's agent keeps lives across restarts, and the process group's keys
        # (each rank's gloo address among them) would be read stale by restarted workers, which
        # then dial a dead port: give every restart attempt keys of its own.
        store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timeout))
        dist.init_process_group(backend, store=dist.PrefixStore(f"lmdev/attempt-{place.restart}", store),
                                rank=rank, world_size=world, timeout=timeout)
    return Dist(rank=rank, world=world, local_rank=local, backend=backend)


def choose_strategy(requested: str, d: Dist, n_params: int, device: torch.device) -> str:
    """``single`` for one worker; else ddp or fsdp. ``auto`` takes fsdp when the model states of
    Adam training (16 bytes per parameter: weights, gradients, two moments) need more than 70% of
    one GPU, ddp otherwise."""
    if not d.enabled:
        return "single"
    if requested != "auto":
        return requested
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        if 16 * n_params > 0.7 * total:
            return "fsdp"
    return "ddp"


def shard_model(model: torch.nn.Module, precision: str, cpu_offload: bool, reshard: bool) -> torch.nn.Module:
    """FSDP2: shard each transformer block (or each layer with parameters) and then the root, so
    a block's parameters are gathered only while it runs."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    kwargs: dict[str, Any] = {"reshard_after_forward": reshard}
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    blocks = getattr(model, "blocks", None)
    units = list(blocks) if blocks is not None else [
        m for m in model.children() if any(True for _ in m.parameters(recurse=True))]
    for unit in units:
        fully_shard(unit, **kwargs)
    fully_shard(model, **kwargs)
    return model


def check_same_config(d: Dist, config_json: str) -> None:
    """Every rank must train the same config: compare a hash of it across ranks."""
    if not d.enabled:
        return
    import hashlib

    h = int(hashlib.sha256(config_json.encode()).hexdigest()[:12], 16)
    t = torch.tensor([h, -h], dtype=torch.float64, device=d.device_for_collectives())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if t[0].item() != h or -t[1].item() != h:
        raise LmdevError(f"rank {d.rank}: the workers were started with different configs",
                         "give every node the same config file and --set options")
