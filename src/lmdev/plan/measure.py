"""``lmdev plan --measure``: run real steps of the planned shape in a clean subprocess and compare.

When the full model would not fit this machine, a shallower copy (fewer layers) is measured at two
depths and the peak extrapolated per layer. The framework overhead the measurement reveals
(what the planner did not account for) is stored per machine and used by later plans.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmdev.catalog.models import ModelSpec
from lmdev.errors import LmdevError
from lmdev.fsutil import atomic_write_text
from lmdev.plan.hardware import lmdev_home
from lmdev.plan.memory import Memory, Workload, estimate_memory


@dataclass
class Measurement:
    device: str  # cpu, cuda:0
    predicted_bytes: int
    measured_bytes: int
    step_seconds: float
    layers_measured: int
    extrapolated: bool
    detail: dict[str, Any] = field(default_factory=dict)
    predicted_seconds: float | None = None  # the planner's step time for this machine, uncalibrated

    @property
    def error(self) -> float:
        """Memory: (predicted - measured) / measured."""
        return (self.predicted_bytes - self.measured_bytes) / self.measured_bytes if self.measured_bytes else 0.0

    @property
    def time_error(self) -> float | None:
        """Step time: (predicted - measured) / measured."""
        if not self.predicted_seconds or self.step_seconds <= 0:
            return None
        return (self.predicted_seconds - self.step_seconds) / self.step_seconds

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["error"] = self.error
        d["memory_error"] = self.error
        d["time_error"] = self.time_error
        return d


def run_worker(spec: ModelSpec, w: Workload, device: str = "cpu", steps: int = 2,
               timeout: float = 900.0, threads: int | None = None, anchor: bool = False) -> dict[str, Any]:
    """One measurement in a fresh Python process with the allocators' defaults; returns the
    worker's result. ``anchor``: also time a matmul there (FLOP/s) right after the steps."""
    req = {"spec": spec.to_dict(), "task": "train" if w.training else "infer", "precision": w.precision,
           "optimizer": w.optimizer, "batch": w.batch, "seq": w.seq, "steps": steps, "device": device,
           "activation_checkpointing": w.activation_checkpointing, "attention": w.attention,
           "new_tokens": w.new_tokens, "logits": w.logits, "threads": threads, "anchor": anchor}
    env = dict(os.environ, PYTHONHASHSEED="0", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false")
    for name in [k for k in env if k.startswith("MALLOC_") or k == "PYTORCH_CUDA_ALLOC_CONF"]:
        del env[name]  # the allocators' defaults, whatever the calling shell set
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
    if not isinstance(result, dict):
        raise LmdevError("the measurement worker answered with something other than a JSON object",
                         "run `lmdev plan --measure` again")
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
                           step_seconds=_seconds(r, w), layers_measured=spec.n_layers,
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
    s1, s2 = _seconds(r1, w), _seconds(r2, w)
    step = s2 + (s2 - s1) / (l2 - l1) * (spec.n_layers - l2)
    return Measurement(device=device, predicted_bytes=predicted.total_bytes, measured_bytes=measured,
                       step_seconds=max(step, 0.0), layers_measured=l2, extrapolated=True,
                       detail={"runs": [r1, r2], "layers": [l1, l2], "per_layer_bytes": slope})


def _seconds(r: dict[str, Any], w: Workload) -> float:
    """The time compared with the prediction: a training step or a prefill; per generated token
    when generating."""
    if w.generating and r.get("decode_seconds_per_token"):
        return float(r["decode_seconds_per_token"])
    return float(r["step_seconds"])


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


# --- learned overhead and speed, per machine and framework version --------------------------------

def calibration_path() -> Path:
    return lmdev_home() / "plan" / "calibration.json"


def framework_version() -> str:
    """The installed torch's version, read from its metadata (torch is not imported)."""
    try:
        from importlib.metadata import version

        return f"torch-{version('torch')}"
    except Exception:  # noqa: BLE001 - not installed
        return "torch-none"


def machine_key(hw: Any) -> str:
    """Calibrations are per machine (host and device) and per framework version: a new torch
    brings a new allocator and new kernels, so it is measured again."""
    import platform

    device = hw.catalog or hw.name if hw.kind == "gpu" else "cpu"
    return f"{platform.node() or 'host'}/{device}/{framework_version()}"


def _load_store() -> dict[str, Any]:
    try:
        data = json.loads(calibration_path().read_text("utf-8"))
    except (OSError, ValueError):
        return {"machines": {}}
    return data if isinstance(data, dict) and isinstance(data.get("machines"), dict) else {"machines": {}}


def load_calibration(machine: str) -> dict[str, float]:
    """Learned terms of ``machine`` (a :func:`machine_key`), if any: memory (``cpu_heap_fraction``,
    ``cpu_bytes``, ``reserve_fraction``, ``context_bytes``) and speed (``time_factor``)."""
    entry = _load_store()["machines"].get(machine, {})
    return {k: float(v) for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)}


MAX_HEAP_FRACTION = 3.0  # a larger share than this is not glibc's heap but something the planner misses


def _average(old: float | None, new: float, samples: float) -> float:
    return new if old is None else (old * samples + new) / (samples + 1)


def learn(machine: str, m: Measurement, predicted: Memory, predicted_seconds: float | None = None
          ) -> dict[str, float]:
    """Store what this measurement reveals, averaged with earlier ones of the same key: on a CPU
    the share of the heap-served transients glibc retained (or, when there are too few of them to
    tell, the bytes beyond the planner's parts); on a GPU the CUDA context and the caching
    allocator's reserve; and the measured/predicted step time."""
    data = _load_store()
    entry = data["machines"].setdefault(machine, {})
    n = float(entry.get("samples", 0))
    base = predicted.total_bytes - predicted.allocator_bytes - predicted.overhead_bytes
    if m.device == "cpu":
        heap = predicted.allocator_basis_bytes
        extra = m.measured_bytes - base - predicted.overhead_bytes  # what the allocator line should have been
        fraction = min(MAX_HEAP_FRACTION, max(0.0, extra / heap)) if heap > 0.05 * m.measured_bytes else None
        if fraction is not None:
            entry["cpu_heap_fraction"] = _average(entry.get("cpu_heap_fraction"), fraction, n)
        # what the share does not explain (all of it, with too little heap-served memory to tell a
        # share): the runtime bytes beyond the planner's lines
        rest = extra - (fraction * heap if fraction is not None else predicted.allocator_bytes)
        entry["cpu_bytes"] = max(0.0, _average(entry.get("cpu_bytes"), rest + predicted.overhead_bytes, n))
    else:
        d = m.detail
        if "context_bytes" in d:
            entry["context_bytes"] = float(d["context_bytes"])
        transient = (predicted.activations_bytes + predicted.attention_scores_bytes + predicted.logits_bytes
                     + predicted.kv_cache_bytes + predicted.optimizer_step_bytes)
        if d.get("peak_allocated_bytes") and transient:
            slack = d["peak_reserved_bytes"] - d["peak_allocated_bytes"]
            entry["reserve_fraction"] = _average(entry.get("reserve_fraction"), max(0.0, slack / transient), n)
    if predicted_seconds and m.step_seconds > 0:
        entry["time_factor"] = _average(entry.get("time_factor"), m.step_seconds / predicted_seconds, n)
    entry["samples"] = n + 1
    entry["framework"] = machine.rsplit("/", 1)[-1]
    entry["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))
    return {k: v for k, v in entry.items() if k not in ("samples", "framework", "updated")}
