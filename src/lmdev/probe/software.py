"""Software facts from package metadata and files on disk: nothing here imports a framework."""

from __future__ import annotations

import json
import posixpath
import re

from lmdev.probe.source import RELEVANT_ENV, Source, guarded, normalise
from lmdev.probe.types import ProbeError, SoftwareFacts, TorchBuild, ToolkitFacts

# The distributions doctor reports (when installed), in display order.
FRAMEWORKS = [
    "torch", "torchvision", "torchaudio", "tensorflow", "tensorflow-cpu", "tf-keras", "keras",
    "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "lightning", "pytorch-lightning",
    "transformers", "accelerate", "deepspeed", "bitsandbytes", "flash-attn", "triton",
    "libtpu", "safetensors", "numpy", "nvidia-ml-py", "pynvml", "nvidia-ml-py3",
]
# NVIDIA runtime wheels: both the CUDA-12 names (nvidia-cudnn-cu12) and the CUDA-13 ones.
NVIDIA_WHEEL = re.compile(r"^nvidia-(cudnn|nccl|cublas|cuda-runtime|cuda-nvrtc|cusparselt|nvshmem)(-cu\d+)?$")


_SYSTEM_LIB_DIRS = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
                    "/usr/local/cuda/lib64", "/usr/lib"]


def collect_software(src: Source, errors: list[ProbeError] | None = None) -> SoftwareFacts:
    """Installed frameworks and how they were built. A part that cannot be read is listed in
    ``errors`` (when given) and the rest stands."""
    errors = [] if errors is None else errors
    env = src.env
    dists = {d.name: d.version for d in guarded("packages", src.distributions, [], errors)}
    sw = SoftwareFacts(
        packages={name: dists[name] for name in FRAMEWORKS if name in dists}
        | {name: v for name, v in sorted(dists.items()) if NVIDIA_WHEEL.match(name)},
        env={k: env[k] for k in RELEVANT_ENV if k in env},
    )
    if "torch" in dists:
        sw.torch = guarded("torch", lambda: torch_build(src, dists["torch"]),
                           TorchBuild(version=dists["torch"]), errors)
    tf = "tensorflow" if "tensorflow" in dists else "tensorflow-cpu" if "tensorflow-cpu" in dists else None
    if tf:
        sw.tensorflow_cuda = guarded("tensorflow", lambda: tensorflow_cuda(src, tf), None, errors)
    for major in ("12", "13"):
        if f"jax-cuda{major}-plugin" in dists or f"jax-cuda{major}-pjrt" in dists:
            sw.jax_cuda_plugin = major
    if "keras" in dists:
        sw.keras_backend = guarded("keras", lambda: keras_backend(src), None, errors)
    sw.cuda_toolkit = guarded("cuda toolkit", lambda: cuda_toolkit(src), ToolkitFacts(), errors)
    # nvidia-ml-py and nvidia-ml-py3 ship a pynvml.py module; pynvml 8 to 11 a pynvml/ package
    # (which import prefers over the module); pynvml >= 12 only pynvml_utils.
    sw.pynvml_providers = guarded("pynvml", lambda: [
        name for name in ("nvidia-ml-py", "pynvml", "nvidia-ml-py3")
        if name in dists and any(_ships_pynvml(f) for f in src.dist_files(name) or [])
    ], [], errors)
    if src.os == "linux":
        sw.system_nccl = guarded("nccl", lambda: _system_nccl(src), None, errors)
    return sw


def _ships_pynvml(record_entry: str) -> bool:
    parts = record_entry.split("/")
    return parts[-1] == "pynvml.py" or parts[-2:] == ["pynvml", "__init__.py"]


def torch_build(src: Source, version: str) -> TorchBuild:
    """torch's build from ``torch/version.py`` (read as text) and its version's local label."""
    build = TorchBuild(version=version)
    text = src.package_file("torch", "torch/version.py") or ""
    cuda = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([\d.]+)['\"]", text, re.M)
    # ROCm builds carry a build suffix: hip = '6.0.32830-d62f6a171'
    hip = re.search(r"^hip\s*(?::[^=]*)?=\s*['\"]([\d.]+)[^'\"]*['\"]", text, re.M)
    if cuda:
        build.cuda = cuda.group(1)
    elif "+cu" in version:  # no version.py to read: trust the wheel's local label, +cu121 -> 12.1
        digits = version.split("+cu")[1]
        build.cuda = f"{digits[:-1]}.{digits[-1]}" if digits.isdigit() and len(digits) >= 2 else None
    build.hip = hip.group(1) if hip else None
    build.cpu_only = build.cuda is None and build.hip is None and (bool(text) or "+cpu" in version
                                                                   or src.os == "darwin")
    return build


def tensorflow_cuda(src: Source, dist: str) -> str | None:
    text = src.package_file(dist, "tensorflow/python/platform/build_info.py") or ""
    # TF >= 2.4 writes build_info = collections.OrderedDict([('cuda_version', '12.3'), ...]);
    # older releases a dict literal {'cuda_version': '10.1', ...}.
    m = re.search(r"['\"]cuda_version['\"]\s*[:,]\s*['\"]([\d.]+)['\"]", text)
    return m.group(1) if m else None


def keras_backend(src: Source) -> str:
    if src.env.get("KERAS_BACKEND"):
        return src.env["KERAS_BACKEND"]
    keras_home = src.env.get("KERAS_HOME") or posixpath.join(src.home, ".keras")
    text = src.read_text(posixpath.join(keras_home, "keras.json"))
    if text:
        try:
            return str(json.loads(text).get("backend", "tensorflow"))
        except ValueError:
            pass
    return "tensorflow"  # Keras 3's default


def cuda_toolkit(src: Source) -> ToolkitFacts:
    env = src.env
    home = env.get("CUDA_HOME") or env.get("CUDA_PATH")
    nvcc = src.which("nvcc")
    if nvcc is None:
        for base in ([home] if home else []) + ["/usr/local/cuda"]:
            candidate = posixpath.join(base, "bin", "nvcc")
            if src.exists(candidate):
                nvcc = candidate
                break
    tk = ToolkitFacts(nvcc_path=nvcc, cuda_home=home)
    if nvcc is None:
        return tk
    root = posixpath.dirname(posixpath.dirname(nvcc))
    if tk.cuda_home is None and src.exists(posixpath.join(root, "nvvm")):  # a toolkit's root
        tk.cuda_home = root
    version_json = src.read_text(posixpath.join(root, "version.json"))  # CUDA >= 11.1
    if version_json:
        try:
            tk.cuda_version = ".".join(json.loads(version_json)["cuda"]["version"].split(".")[:2])
            return tk
        except (ValueError, KeyError, AttributeError):
            pass
    res = src.run([nvcc, "--version"], timeout=5)
    m = re.search(r"release (\d+\.\d+)", res.stdout or "")
    tk.cuda_version = m.group(1) if m else None
    return tk


def _system_nccl(src: Source) -> str | None:
    for d in _SYSTEM_LIB_DIRS:
        for name in src.listdir(d) or []:
            if name.startswith("libnccl.so"):
                return posixpath.join(d, name)
    return None


def installed(sw: SoftwareFacts, name: str) -> bool:
    return normalise(name) in sw.packages
