"""``lmdev plan --measure``: run real steps of the planned shape in a clean subprocess and compare.

When the full model would not fit this machine, a shallower copy (fewer layers) is measured at two
depths and the peak extrapolated per layer. The framework overhead the measurement reveals
(what the planner did not account for) is stored per machine and used by later plans.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdev.catalog.models import ModelSpec
from lmdev.errors import LmdevError
from lmdev.fsutil import atomic_write_text
from lmdev.plan.hardware import lmdev_home
from lmdev.plan.memory import Memory, Workload, estimate_memory

CPU_MMAP_THRESHOLD = 1 << 20


@dataclass
class Measurement:
    device: str  # cpu, cuda:0
    predicted_bytes: int
    measured_bytes: int
    step_seconds: float
    layers_measured: int
    extrapolated: bool
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> float:
        """(predicted - measured) / measured."""
        return (self.predicted_bytes - self.measured_bytes) / self.measured_bytes if self.measured_bytes else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["error"] = self.error
        return d


def run_worker(spec: ModelSpec, w: Workload, device: str = "cpu", steps: int = 2,
               timeout: float = 900.0, threads: int | None = None, pin_malloc: bool = True) -> dict[str, Any]:
    """One measurement in a fresh Python process; returns the worker's result. ``pin_malloc=False``
    leaves glibc's allocator at its defaults (the resident set then includes heap fragmentation)."""
    req = {"spec": spec.to_dict(), "task": "train" if w.training else "infer", "precision": w.precision,
           "optimizer": w.optimizer, "batch": w.batch, "seq": w.seq, "steps": steps, "device": device,
           "activation_checkpointing": w.activation_checkpointing, "attention": w.attention,
           "new_tokens": w.new_tokens, "threads": threads}
    env = dict(os.environ, PYTHONHASHSEED="0", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    # glibc: a fixed mmap threshold returns freed tensors to the OS at once, so the resident set is
    # the memory in use (with the default dynamic threshold, heap fragmentation adds 5-30%)
    if pin_malloc:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(CPU_MMAP_THRESHOLD))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(CPU_MMAP_THRESHOLD))
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run([sys.executable, "-m", "lmdev.plan.worker", json.dumps(req)], capture_output=True,
                              text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise LmdevError(f"the measurement did not finish within {timeout:.0f} s",
                         "measure a smaller batch or sequence") from None
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("LMDEV_RESULT ")]
    if not lines:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        if proc.returncode in (-9, 137):
            tail = ["killed (out of memory?)"]
        raise LmdevError(f"the measurement failed: {tail[0]}", "see `lmdev plan --measure --debug`")
    result = json.loads(lines[-1][len("LMDEV_RESULT "):])
    if "error" in result:
        msg = result["error"]
        if "transformers" in msg and "No module" in msg:
            raise LmdevError("--measure needs transformers", "pip install 'lmdev[plan]'")
        raise LmdevError(f"the measurement failed: {msg}", "try a smaller shape")
    return result


def measure(spec: ModelSpec, w: Workload, *, device: str = "cpu", budget_bytes: int | None = None,
            overhead: dict[str, float] | None = None, steps: int = 2) -> Measurement:
    """Measure ``w`` for real on ``device``; extrapolate from shallower copies when it would not fit
    in ``budget_bytes`` (default: 80% of what is available)."""
    kind = "cpu" if device == "cpu" else "gpu"
    predicted = estimate_memory(spec, w, device=kind, overhead=overhead)
    if budget_bytes is None:
        budget_bytes = _available(device)
    if predicted.total_bytes <= budget_bytes or spec.n_layers <= 2:
        r = run_worker(spec, w, device=device, steps=steps)
        return Measurement(device=device, predicted_bytes=predicted.total_bytes, measured_bytes=int(r["peak_bytes"]),
                           step_seconds=float(r["step_seconds"]), layers_measured=spec.n_layers,
                           extrapolated=False, detail=r)
    # two shallow copies: the per-layer slope and the intercept, both measured
    l1, l2 = 1, 2
    for n in (4, 2):
        if n < spec.n_layers and estimate_memory(spec.with_layers(n), w, device=kind, overhead=overhead
                                                 ).total_bytes <= budget_bytes:
            l1, l2 = n // 2, n
            break
    else:
        raise LmdevError(f"even a 2-layer copy of {spec.name} does not fit this machine for this shape",
                         "measure a smaller batch or sequence")
    r1 = run_worker(spec.with_layers(l1), w, device=device, steps=steps)
    r2 = run_worker(spec.with_layers(l2), w, device=device, steps=steps)
    slope = (r2["peak_bytes"] - r1["peak_bytes"]) / (l2 - l1)
    measured = int(r2["peak_bytes"] + slope * (spec.n_layers - l2))
    step = r2["step_seconds"] + (r2["step_seconds"] - r1["step_seconds"]) / (l2 - l1) * (spec.n_layers - l2)
    return Measurement(device=device, predicted_bytes=predicted.total_bytes, measured_bytes=measured,
                       step_seconds=max(step, 0.0), layers_measured=l2, extrapolated=True,
                       detail={"runs": [r1, r2], "layers": [l1, l2], "per_layer_bytes": slope})


def _available(device: str) -> int:
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available * 0.8)
    try:
        import torch

        free, _total = torch.cuda.mem_get_info(int(device.split(":")[1]) if ":" in device else 0)
        return int(free * 0.9)
    except Exception:  # noqa: BLE001 - no usable GPU: let the worker report it
        return 1 << 62


# --- learned overhead, per machine -------------------------------------------------------------

def calibration_path() -> Path:
    return lmdev_home() / "plan" / "calibration.json"


def load_calibration(machine: str) -> dict[str, float]:
    """Learned overhead terms of ``machine`` (``cpu`` or a GPU's catalog name), if any."""
    path = calibration_path()
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    entry = data.get("machines", {}).get(machine, {})
    return {k: float(v) for k, v in entry.items() if isinstance(v, (int, float))}


def learn(machine: str, m: Measurement, predicted: Memory) -> dict[str, float]:
    """Store the overhead this measurement reveals: for a CPU the bytes beyond what the planner
    counted (the planner's parts are kept); for a GPU the context and the allocator reserve."""
    path = calibration_path()
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        data = {"machines": {}}
    entry = data.setdefault("machines", {}).setdefault(machine, {})
    counted = predicted.total_bytes - predicted.overhead_bytes
    if m.device == "cpu":
        extra = m.measured_bytes - counted
        old = entry.get("cpu_bytes")
        entry["cpu_bytes"] = max(0.0, extra if old is None else (old + extra) / 2)
    else:
        d = m.detail
        if "context_bytes" in d:
            entry["context_bytes"] = float(d["context_bytes"])
        transient = predicted.activations_bytes + predicted.logits_bytes + predicted.kv_cache_bytes
        if d.get("peak_allocated_bytes") and transient:
            slack = d["peak_reserved_bytes"] - d["peak_allocated_bytes"]
            entry["reserve_fraction"] = max(0.0, slack / transient)
    entry["samples"] = float(entry.get("samples", 0) + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))
    return {k: v for k, v in entry.items() if k != "samples"}
