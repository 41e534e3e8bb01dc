"""The verification ladder: does the environment really work, on every device?

``torch.cuda.is_available()`` is True on machines where every kernel launch fails, so each rung
does real work, in its own subprocess of the target interpreter, with a time limit: import; the
build's facts (CUDA version, the architecture list against each device's capability); a real
operation on each device compared with the CPU; one mixed-precision operation; a one-process
``torch.distributed`` init (gloo, and nccl on NVIDIA); TensorFlow's devices and a matmul; JAX's
devices and a jitted op; Keras on its backend. A failed rung names its cause and its fix, and the
rungs above it on the same framework are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPAIR = "lmdev setup --repair"
_PRELUDE = "import json, sys, os\nout = {}\n"
_EPILOGUE = "\nprint('LMDEV-VERIFY ' + json.dumps(out))\n"

TORCH_STEPS: list[tuple[str, str]] = [
    ("import", "import torch\nout['version'] = torch.__version__\n"),
    ("build", """import torch
out['cuda'] = torch.version.cuda
out['hip'] = getattr(torch.version, 'hip', None)
gpu = torch.cuda.is_available()
out['devices'] = [f'cuda:{i}' for i in range(torch.cuda.device_count())] if gpu else []
out['arch_list'] = torch.cuda.get_arch_list() if gpu else []
out['capabilities'] = ['%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())] if gpu else []
mps = getattr(torch.backends, 'mps', None)
if mps is not None and mps.is_available():
    out['devices'].append('mps')
"""),
    ("operation", """import torch
torch.manual_seed(0)
a, b = torch.randn(256, 256, dtype=torch.float64), torch.randn(256, 256, dtype=torch.float64)
ref = (a @ b)
devices = ['cpu'] + ([f'cuda:{i}' for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [])
mps = getattr(torch.backends, 'mps', None)
if mps is not None and mps.is_available():
    devices.append('mps')
out['checked'] = {}
for d in devices:
    got = (a.float().to(d) @ b.float().to(d)).cpu().double()
    err = float((got - ref).abs().max() / ref.abs().max())
    out['checked'][d] = err
    if not err < 1e-3:
        raise SystemExit(f'{d}: matmul differs from the float64 CPU result by {err:.2e}')
"""),
    ("mixed-precision", """import torch
d = 'cuda' if torch.cuda.is_available() else 'cpu'
dtype = torch.float16 if d == 'cuda' else torch.bfloat16
a = torch.randn(128, 128, device=d)
with torch.autocast(device_type=d, dtype=dtype):
    y = a @ a
out['dtype'] = str(y.dtype)
ref = (a.double() @ a.double())
err = float((y.double() - ref).abs().max() / ref.abs().max())
out['error'] = err
if y.dtype != dtype or not err < 5e-2:
    raise SystemExit(f'autocast on {d} gave {y.dtype}, error {err:.2e}')
"""),
    ("distributed", """import socket, datetime, torch, torch.distributed as dist
s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
backends = ['gloo'] + (['nccl'] if torch.cuda.is_available() and torch.version.cuda else [])
out['backends'] = {}
for i, b in enumerate(backends):
    dist.init_process_group(b, init_method=f'tcp://127.0.0.1:{port + 0}' if i == 0 else None,
                            store=None if i == 0 else dist.HashStore(), rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    t = torch.ones(4, device='cuda' if b == 'nccl' else 'cpu')
    dist.all_reduce(t)
    out['backends'][b] = float(t.sum())
    dist.destroy_process_group()
"""),
]

TF_STEPS = [
    ("import", "import tensorflow as tf\nout['version'] = tf.__version__\n"),
    ("devices", """import tensorflow as tf
out['devices'] = [d.name for d in tf.config.list_physical_devices()]
out['cuda'] = tf.sysconfig.get_build_info().get('cuda_version')
"""),
    ("operation", """import tensorflow as tf
a = tf.random.stateless_normal((128, 128), seed=(1, 2))
got = tf.linalg.matmul(a, a).numpy().astype('float64')
ref = a.numpy().astype('float64') @ a.numpy().astype('float64')
err = float(abs(got - ref).max() / abs(ref).max())
out['error'] = err
if not err < 1e-3:
    raise SystemExit(f'matmul differs from numpy by {err:.2e}')
"""),
]

JAX_STEPS = [
    ("import", "import jax\nout['version'] = jax.__version__\n"),
    ("devices", "import jax\nout['devices'] = [str(d) for d in jax.devices()]\n"),
    ("jit", """import jax, jax.numpy as jnp
f = jax.jit(lambda x: (x @ x).sum())
x = jnp.ones((64, 64))
out['value'] = float(f(x))
if out['value'] != 64.0 * 64 * 64:
    raise SystemExit(f"jit gave {out['value']}")
"""),
]

KERAS_STEPS = [
    ("backend", """import keras
out['backend'] = keras.backend.backend()
want = os.environ.get('KERAS_BACKEND')
if want and out['backend'] != want:
    raise SystemExit(f"keras runs on {out['backend']}, not {want}")
x = keras.ops.ones((4, 4))
out['value'] = float(keras.ops.convert_to_numpy(keras.ops.sum(x @ x)))
"""),
]

LADDERS = {"torch": TORCH_STEPS, "tensorflow": TF_STEPS, "jax": JAX_STEPS, "keras": KERAS_STEPS}


@dataclass
class Step:
    framework: str
    name: str
    ok: bool
    seconds: float
    detail: dict
    cause: str | None = None
    fix: str | None = None
    skipped: bool = False


@dataclass
class Verification:
    python: str
    steps: list[Step]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def to_dict(self) -> dict:
        return {"python": self.python, "ok": self.ok, "steps": [asdict(s) for s in self.steps]}


def run_step(python: str, code: str, timeout: float, env: dict[str, str]) -> tuple[bool, dict, str]:
    """Run one rung's code in ``python``: (ok, what it reported, the error text)."""
    try:
        proc = subprocess.run([python, "-c", _PRELUDE + code + _EPILOGUE], check=False, capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=os.path.dirname(python) or None)
    except subprocess.TimeoutExpired:
        return False, {}, f"timed out after {timeout:.0f} s"
    except OSError as exc:
        return False, {}, f"cannot start {python}: {exc}"
    for line in proc.stdout.splitlines():
        if line.startswith("LMDEV-VERIFY "):
            return proc.returncode == 0, json.loads(line[len("LMDEV-VERIFY "):]), ""
    lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
    return False, {}, lines[-1] if lines else f"exit code {proc.returncode}"


def diagnose(framework: str, step: str, error: str, expect_gpu: bool) -> tuple[str, str]:
    """The cause and the fix of a failed rung, from its error."""
    low = error.lower()
    if "no kernel image" in low:
        return ("no kernel image for this GPU: the build lacks its architecture", REPAIR)
    if "driver version is insufficient" in low or "driver too old" in low or "found no nvidia driver" in low:
        return ("the NVIDIA driver is too old for this build's CUDA", f"upgrade the driver, or {REPAIR}")
    if "libcudnn" in low or "cudnn" in low and "version" in low:
        return ("cuDNN shadowed: another libcudnn (LD_LIBRARY_PATH) is loaded before the wheel's",
                "unset LD_LIBRARY_PATH (or remove its CUDA folders) and run again")
    if "nccl" in low and ("undefined symbol" in low or "duplicate" in low):
        return ("duplicate NCCL: two nvidia-nccl wheels or a system libnccl clash", REPAIR)
    if framework == "keras" and ("no module named" in low or "backend" in low):
        return ("the Keras backend is missing or not the one set", f"{REPAIR} (installs the backend)")
    if "no module named" in low or "modulenotfounderror" in low:
        return (f"{framework} is not installed in this environment", f"lmdev setup {framework}")
    if "timed out" in low:
        return (f"{framework} hung during {step}", "run `lmdev doctor --deep` to see where")
    return (error or f"{step} failed", f"{REPAIR}, then `lmdev doctor --deep`")


def build_problem(detail: dict, expect_gpu: str | None) -> str | None:
    """Why the torch build does not fit this machine, or None."""
    from lmdev.catalog.cuda import arch_supported

    if expect_gpu == "nvidia" and not detail.get("cuda"):
        return "CPU build on a GPU machine: torch.version.cuda is None"
    if expect_gpu == "nvidia" and not detail.get("devices"):
        return f"CUDA build {detail.get('cuda')} sees no GPU: the driver is too old or not loaded"
    for i, cc in enumerate(detail.get("capabilities", [])):
        if not arch_supported(cc, [a for a in detail.get("arch_list", []) if a.startswith("sm_")]):
            return (f"no kernel image for cuda:{i} (sm_{cc.replace('.', '')}): arch list "
                    f"{', '.join(detail.get('arch_list', []))}")
    return None


def preflight(packages: dict[str, str], environ: dict[str, str]) -> Step:
    """Checks that need no framework import: two NCCL wheels, and a libcudnn on LD_LIBRARY_PATH
    that the dynamic loader finds before the nvidia-cudnn wheel's."""
    nccl = sorted(p for p in packages if p.startswith("nvidia-nccl"))
    cudnn_wheel = any(p.startswith("nvidia-cudnn") for p in packages)
    shadowing = []
    for folder in filter(None, environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        shadowing += [os.path.join(folder, n) for n in sorted(names) if n.startswith("libcudnn.so")]
    detail = {"nccl_wheels": nccl, "ld_library_path_cudnn": shadowing}
    if len(nccl) > 1:
        return Step("environment", "preflight", False, 0.0, detail,
                    f"duplicate NCCL: {', '.join(nccl)} are installed and load different libnccl", REPAIR)
    if cudnn_wheel and shadowing:
        return Step("environment", "preflight", False, 0.0, detail,
                    f"cuDNN shadowed through LD_LIBRARY_PATH: {shadowing[0]} loads before the "
                    "nvidia-cudnn wheel's", "unset LD_LIBRARY_PATH (or drop its CUDA folders) and run again")
    return Step("environment", "preflight", True, 0.0, detail)


def verify(python: str, frameworks: list[str], *, expect_gpu: str | None = None,
           env_vars: dict[str, str] | None = None, timeout: float = 180.0,
           packages: dict[str, str] | None = None) -> Verification:
    """Climb the ladder of each framework in ``frameworks`` with the interpreter ``python``
    (after :func:`preflight` when the environment's ``packages`` are given)."""
    env = dict(os.environ, **(env_vars or {}))
    env.pop("PYTHONPATH", None)  # the environment under test, not the caller's sources
    steps: list[Step] = [preflight(packages, env)] if packages is not None else []
    for framework in frameworks:
        failed = False
        for name, code in LADDERS[framework]:
            if failed:
                steps.append(Step(framework, name, False, 0.0, {}, skipped=True))
                continue
            t0 = time.perf_counter()
            ok, detail, error = run_step(python, code, timeout, env)
            if ok and framework == "torch" and name == "build":
                error = build_problem(detail, expect_gpu) or ""
                ok = not error
            step = Step(framework, name, ok, round(time.perf_counter() - t0, 3), detail)
            if not ok:
                step.cause, step.fix = diagnose(framework, name, error, bool(expect_gpu))
                failed = True
            steps.append(step)
    return Verification(python, steps)


def frameworks_to_verify(backends: dict[str, str], env_vars: dict[str, str]) -> list[str]:
    out: list[str] = [f for f in ("torch", "tensorflow", "jax") if f in backends]
    if "KERAS_BACKEND" in env_vars:
        out.append("keras")
    return out


def python_of(prefix: Path) -> str:
    for rel in ("bin/python", "bin/python3", "Scripts/python.exe"):
        if (prefix / rel).exists():
            return str(prefix / rel)
    return str(prefix / "bin" / "python")
