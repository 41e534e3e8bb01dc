"""Peak memory of a variant, measured in a fresh process: load the written variant from its folder
the way ``lmdev.compress.load`` does, run it once at the large batch, and read the kernel's
high-water mark of resident memory (VmHWM) at each stage.

A fresh process per variant, because a process's peak cannot be taken back: measured in the
``lmdev compress`` process, every variant would carry the peaks of those made before it. The
figures are above the process's resident memory once Python, torch (and ONNX Runtime for ONNX
variants, or the modules the architecture needs for torch variants: it is built once without
weights first) are imported, so they are what the variant itself costs:

- ``load_peak_bytes``: the peak while reading the folder and building the model (torch weights
  stored as they run are memory-mapped, so they count when first touched, i.e. in the run's
  figure);
- ``run_peak_bytes``: the peak while running the large batch, the load's peak forgotten
  (memory freed while loading handed back with ``malloc_trim``, then ``/proc/self/clear_refs``),
  i.e. the weights held plus activations and workspace;
- ``peak_bytes``: the larger of the two.

Run as ``python -m lmdev.compress.memprobe`` with a JSON request on stdin (what ``peak_memory``
sends); prints one JSON line. Linux only (``/proc``); elsewhere ``peak_memory`` returns None."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT_S = 900


@dataclass
class PeakMemory:
    peak_bytes: int
    load_peak_bytes: int
    run_peak_bytes: int
    base_rss_bytes: int  # the process after its imports, before the variant (not counted above)


def supported() -> bool:
    return Path("/proc/self/status").is_file() and Path("/proc/self/clear_refs").exists()


def peak_memory(folder: Path, spec: dict[str, Any], load: dict[str, Any], inputs: Path,
                threads: int) -> tuple[PeakMemory | None, str | None]:
    """(the peak memory of the variant in ``folder``, None) or (None, why it could not be measured).
    ``inputs``: a safetensors file holding the input batch ``x``."""
    if not supported():
        return None, "peak memory not measured: needs Linux /proc"
    request = {"folder": str(folder), "spec": spec, "load": load, "inputs": str(inputs), "threads": threads}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    try:
        proc = subprocess.run([sys.executable, "-m", "lmdev.compress.memprobe"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired:
        return None, f"peak memory not measured: the probe ran past {TIMEOUT_S} s"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return None, f"peak memory not measured: the probe failed ({last})"
    d = json.loads(proc.stdout.strip().splitlines()[-1])
    return PeakMemory(max(d["load_peak"], d["run_peak"]), d["load_peak"], d["run_peak"], d["base"]), None


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _release_freed() -> None:
    """Hand memory freed while loading (an int8 variant's fp32 build) back to the system, so the run's
    figure is what the variant holds, not what the allocator kept."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the run's figure may include the allocator's keep
        pass


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size


def probe(request: dict[str, Any]) -> dict[str, int]:
    import torch
    from safetensors.torch import load_file

    from lmdev.compress import formats
    from lmdev.compress.source import ModelSpec

    torch.set_num_threads(int(request["threads"]))
    load = request["load"]
    spec = ModelSpec.from_dict(request["spec"])
    if load["format"] == "onnx":
        import onnxruntime  # noqa: F401  imported before the baseline: its import is not the variant's cost
    else:  # the architecture built once without weights: the modules it imports are not the variant's cost
        with formats.parameters_on_meta():
            spec.build()
    x = load_file(request["inputs"])["x"]
    _reset_peak()
    base = _status_kb("VmRSS")
    model = formats.read_any(Path(request["folder"]), spec, load)
    load_peak = _status_kb("VmHWM")
    _release_freed()
    _reset_peak()
    run_base = _status_kb("VmRSS")
    with torch.inference_mode():
        first = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        model(x.to(dtype) if x.is_floating_point() else x)
    run_peak = _status_kb("VmHWM")
    kb = 1024
    return {"base": base * kb, "load_peak": (load_peak - base) * kb,
            "run_peak": (max(run_peak, run_base) - base) * kb}


def main() -> int:
    print(json.dumps(probe(json.loads(sys.stdin.read()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
