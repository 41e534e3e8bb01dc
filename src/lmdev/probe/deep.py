"""``lmdev doctor --deep``: import each installed framework in its own subprocess, in parallel,
each with a timeout, and ask it what it really sees: its devices, a tiny operation on each, and
how long the import took. A crash or a hang in one framework cannot take doctor down."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from lmdev.probe.types import DeepCheck, SoftwareFacts

MARK = "LMDEV_DEEP "

_PRELUDE = """
import json, sys, time
t0 = time.perf_counter()
out = {"ok": True, "devices": [], "op_results": {}, "arch_list": []}
def first_line(e):
    return (type(e).__name__ + ": " + str(e)).strip().splitlines()[0][:300]
def done():
    print("%s" + json.dumps(out), flush=True)
    sys.exit(0)
""" % MARK

_SCRIPTS = {
    "torch": _PRELUDE + """
try:
    import torch
except Exception as e:
    out.update(ok=False, error=first_line(e)); done()
out["import_seconds"] = time.perf_counter() - t0
out["version"] = torch.__version__
devices = ["cpu"]
out["cuda_available"] = torch.cuda.is_available()
if out["cuda_available"]:
    out["arch_list"] = torch.cuda.get_arch_list()
    devices += ["cuda:%d" % i for i in range(torch.cuda.device_count())]
if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
    devices.append("mps")
out["devices"] = devices
for dev in devices:
    try:
        x = torch.ones(64, 64, device=dev)
        got = (x @ x).sum().item()
        out["op_results"][dev] = "ok" if got == 64 ** 3 else "matmul gave %r, expected %d" % (got, 64 ** 3)
    except Exception as e:
        out["op_results"][dev] = first_line(e)
done()
""",
    "tensorflow": _PRELUDE + """
try:
    import tensorflow as tf
except Exception as e:
    out.update(ok=False, error=first_line(e)); done()
out["import_seconds"] = time.perf_counter() - t0
out["version"] = tf.__version__
devs = tf.config.list_physical_devices()
gpus = [d for d in devs if d.device_type == "GPU"]
out["cuda_available"] = bool(gpus) if tf.test.is_built_with_cuda() else False
out["devices"] = [d.name.replace("/physical_device:", "") for d in devs]
for d in devs:
    name = d.name.replace("/physical_device:", "")
    try:
        with tf.device(name):
            x = tf.ones((64, 64))
            got = float(tf.reduce_sum(tf.matmul(x, x)))
        out["op_results"][name] = "ok" if got == 64 ** 3 else "matmul gave %r" % got
    except Exception as e:
        out["op_results"][name] = first_line(e)
done()
""",
    "jax": _PRELUDE + """
try:
    import jax, jax.numpy as jnp
except Exception as e:
    out.update(ok=False, error=first_line(e)); done()
out["import_seconds"] = time.perf_counter() - t0
out["version"] = jax.__version__
devs = jax.devices()
out["devices"] = [str(d) for d in devs]
out["cuda_available"] = any(d.platform == "gpu" for d in devs)
for d in devs:
    try:
        x = jax.device_put(jnp.ones((64, 64)), d)
        got = float((x @ x).sum())
        out["op_results"][str(d)] = "ok" if got == 64 ** 3 else "matmul gave %r" % got
    except Exception as e:
        out["op_results"][str(d)] = first_line(e)
done()
""",
}


def frameworks_to_check(sw: SoftwareFacts) -> list[str]:
    pk = sw.packages
    out = []
    if "torch" in pk:
        out.append("torch")
    if "tensorflow" in pk or "tensorflow-cpu" in pk:
        out.append("tensorflow")
    if "jax" in pk and "jaxlib" in pk:
        out.append("jax")
    return out


def run_deep(frameworks: list[str], timeout: float = 120.0, python: str | None = None) -> list[DeepCheck]:
    """Start one subprocess per framework at once; wait for all, each bounded by ``timeout``."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")
    started = {}
    for fw in frameworks:
        started[fw] = (time.monotonic(), subprocess.Popen(
            [python or sys.executable, "-c", _SCRIPTS[fw]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, errors="replace", env=env,
        ))
    checks = []
    for fw, (t0, proc) in started.items():
        try:
            stdout, stderr = proc.communicate(timeout=max(0.1, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            checks.append(DeepCheck(fw, ok=False, error=f"did not finish within {timeout:g} s (hung import?)"))
            continue
        checks.append(parse_deep_output(fw, stdout, stderr, proc.returncode))
    return checks


def parse_deep_output(framework: str, stdout: str, stderr: str, returncode: int | None) -> DeepCheck:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(MARK)]
    if not lines:
        tail = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        why = tail[-1] if tail else f"exit status {returncode}"
        return DeepCheck(framework, ok=False, error=f"the check crashed ({why})")
    data = json.loads(lines[-1][len(MARK):])
    return DeepCheck(
        framework=framework,
        ok=bool(data.get("ok")),
        import_seconds=data.get("import_seconds"),
        version=data.get("version"),
        devices=list(data.get("devices", [])),
        cuda_available=data.get("cuda_available"),
        arch_list=list(data.get("arch_list", [])),
        op_results=dict(data.get("op_results", {})),
        error=data.get("error"),
    )
