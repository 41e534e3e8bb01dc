"""Where this process trains: its rank among the workers, its device, its precision and the
distribution strategy. Built once per training (:func:`runtime_for`)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from lmdev.errors import LmdevError
from lmdev.train.distributed import Dist, from_env
from lmdev.train.launch import worker_threads


@dataclass
class Runtime:
    dist: Dist
    device: torch.device
    precision: str  # fp32 | bf16 | fp16
    strategy: str = "single"  # single | ddp | fsdp (known once the model's size is)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main


def runtime_for(device_name: str, precision_name: str) -> Runtime:
    """Join the workers' process group (when launched so), pick the device and precision, and
    give this worker its share of the cores."""
    d = from_env(device_name)
    if d.backend == "nccl":
        device = torch.device("cuda", d.local_rank)
    else:
        device = torch.device("cpu") if d.enabled else pick_device(device_name)
    if d.enabled:  # the launcher's share of the cores (torch reads OMP_NUM_THREADS too, but say it once)
        threads = worker_threads(os.environ)
        if threads is not None and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(d, device, pick_precision(precision_name, device))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LmdevError(f"device {name} requested but CUDA is not available", "use device: auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LmdevError("device mps requested but MPS is not available", "use device: auto or cpu")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise LmdevError("precision fp16 is not supported on the CPU", "use bf16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"  # the CPU: bf16 only when asked


NO_CONTEXT: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()  # reusable: it holds no state


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return NO_CONTEXT
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
