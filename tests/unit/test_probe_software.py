"""Software facts from package metadata and files, never from importing a framework: torch's
build, TensorFlow's CUDA, Keras' backend, the CUDA toolkit, pynvml providers, NCCL."""

from __future__ import annotations

import json

from lmdev.probe.software import collect_software, keras_backend, tensorflow_cuda, torch_build
from lmdev.probe.source import FixtureSource


def version_py(version: str, cuda: str | None = None, hip: str | None = None) -> str:
    q = lambda v: "None" if v is None else repr(v)  # noqa: E731
    return ("from typing import Optional\n\n__all__ = ['__version__', 'debug', 'cuda', 'git_version', 'hip']\n"
            f"__version__ = '{version}'\ndebug = False\ncuda: Optional[str] = {q(cuda)}\n"
            f"git_version = 'a8d6afb511a69687bbb2b7e88a3cf67917e1697e'\nhip: Optional[str] = {q(hip)}\n")


def with_torch(version: str, text: str | None, os: str = "linux") -> FixtureSource:
    files = {"torch:torch/version.py": text} if text is not None else {}
    return FixtureSource(os=os, dists={"torch": version}, package_files=files)


def sw(src: FixtureSource):
    errors: list = []
    facts = collect_software(src, errors)
    assert errors == []
    return facts


# --------------------------------------------------------------------------- torch


def test_torch_cuda_build_from_version_py():
    t = torch_build(with_torch("2.3.1+cu121", version_py("2.3.1+cu121", cuda="12.1")), "2.3.1+cu121")
    assert (t.version, t.cuda, t.hip, t.cpu_only) == ("2.3.1+cu121", "12.1", None, False)


def test_torch_cpu_build_from_version_py():
    t = torch_build(with_torch("2.5.1+cpu", version_py("2.5.1+cpu")), "2.5.1+cpu")
    assert (t.cuda, t.hip, t.cpu_only) == (None, None, True)
    # PyPI's CPU-only wheel for aarch64 has no +cpu label: version.py alone tells
    t = torch_build(with_torch("2.5.1", version_py("2.5.1")), "2.5.1")
    assert t.cpu_only


def test_torch_rocm_build_keeps_the_hip_version():
    text = version_py("2.3.0+rocm6.0", hip="6.0.32830-d62f6a171")  # real ROCm builds carry a suffix
    t = torch_build(with_torch("2.3.0+rocm6.0", text), "2.3.0+rocm6.0")
    assert (t.cuda, t.hip, t.cpu_only) == (None, "6.0.32830", False)


def test_torch_version_py_without_annotations():
    text = "__version__ = '1.13.1+cu117'\ndebug = False\ncuda = '11.7'\nhip = None\n"
    assert torch_build(with_torch("1.13.1+cu117", text), "1.13.1+cu117").cuda == "11.7"


def test_torch_cuda_from_the_local_label_when_version_py_is_unreadable():
    for version, cuda in (("2.3.1+cu121", "12.1"), ("2.7.1+cu118", "11.8"), ("2.9.0+cu130", "13.0")):
        t = torch_build(with_torch(version, None), version)
        assert (t.cuda, t.cpu_only) == (cuda, False), version
    assert torch_build(with_torch("2.5.1+cpu", None), "2.5.1+cpu").cpu_only
    assert torch_build(with_torch("2.5.1", None, os="darwin"), "2.5.1").cpu_only  # macOS wheels
    unknown = torch_build(with_torch("2.5.1", None), "2.5.1")  # Linux, nothing to read: unknown
    assert (unknown.cuda, unknown.cpu_only) == (None, False)


def test_collect_software_reads_torch_only_when_installed():
    assert sw(FixtureSource()).torch is None
    facts = sw(with_torch("2.8.0", version_py("2.8.0+cu128", cuda="12.8")))
    assert facts.torch.version == "2.8.0" and facts.torch.cuda == "12.8"


# --------------------------------------------------------------------------- TensorFlow, JAX


TF_216_BUILD_INFO = (
    '"""Auto-generated module providing information about the build."""\nimport collections\n\n'
    "build_info = collections.OrderedDict([('cpu_compiler', '/usr/lib/llvm-17/bin/clang'), "
    "('cuda_compute_capabilities', ['sm_50', 'sm_60', 'sm_70', 'sm_80', 'compute_90']), "
    "('cuda_version', '12.3'), ('cudnn_version', '8'), ('is_cuda_build', True), "
    "('is_rocm_build', False), ('is_tensorrt_build', True)])\n")
TF_23_BUILD_INFO = ("build_info = {'cuda_version': '10.1', 'cudnn_version': '7', 'is_rocm_build': False, "
                    "'is_cuda_build': True}\n")
TF_CPU_BUILD_INFO = ("import collections\n\nbuild_info = collections.OrderedDict([('is_cuda_build', False), "
                     "('is_rocm_build', False), ('is_tensorrt_build', False)])\n")
BUILD_INFO = "tensorflow/python/platform/build_info.py"


def test_tensorflow_cuda_version_from_build_info():
    src = FixtureSource(dists={"tensorflow": "2.16.2"},
                        package_files={f"tensorflow:{BUILD_INFO}": TF_216_BUILD_INFO})
    assert sw(src).tensorflow_cuda == "12.3"
    old = FixtureSource(package_files={f"tensorflow:{BUILD_INFO}": TF_23_BUILD_INFO})
    assert tensorflow_cuda(old, "tensorflow") == "10.1"


def test_tensorflow_cpu_has_no_cuda():
    src = FixtureSource(dists={"tensorflow-cpu": "2.17.0"},
                        package_files={f"tensorflow-cpu:{BUILD_INFO}": TF_CPU_BUILD_INFO})
    facts = sw(src)
    assert facts.tensorflow_cuda is None and facts.packages == {"tensorflow-cpu": "2.17.0"}


def test_jax_cuda_plugin_major():
    facts = sw(FixtureSource(dists={"jax": "0.4.35", "jaxlib": "0.4.35", "jax-cuda12-plugin": "0.4.35",
                                    "jax-cuda12-pjrt": "0.4.35"}))
    assert facts.jax_cuda_plugin == "12"
    assert sw(FixtureSource(dists={"jax": "0.4.35", "jaxlib": "0.4.35"})).jax_cuda_plugin is None


# --------------------------------------------------------------------------- Keras


def keras_src(environ=None, files=None) -> FixtureSource:
    return FixtureSource(home="/home/kim", dists={"keras": "3.6.0"}, environ=environ or {}, files=files or {})


def test_keras_backend_from_the_environment_first():
    src = keras_src({"KERAS_BACKEND": "jax"}, {"/home/kim/.keras/keras.json": '{"backend": "torch"}'})
    assert keras_backend(src) == "jax"


def test_keras_backend_from_keras_json():
    cfg = json.dumps({"floatx": "float32", "epsilon": 1e-07, "backend": "torch",
                      "image_data_format": "channels_last"}, indent=4)
    assert sw(keras_src(files={"/home/kim/.keras/keras.json": cfg})).keras_backend == "torch"
    # KERAS_HOME moves the config folder
    src = keras_src({"KERAS_HOME": "/cfg/keras"}, {"/cfg/keras/keras.json": '{"backend": "jax"}'})
    assert keras_backend(src) == "jax"


def test_keras_backend_defaults_to_tensorflow():
    assert keras_backend(keras_src()) == "tensorflow"
    assert keras_backend(keras_src(files={"/home/kim/.keras/keras.json": "{not json"})) == "tensorflow"
    assert keras_backend(keras_src(files={"/home/kim/.keras/keras.json": '{"floatx": "float16"}'})) == "tensorflow"
    assert sw(FixtureSource()).keras_backend is None  # no keras, no backend


# --------------------------------------------------------------------------- CUDA toolkit


CUDA_124_JSON = json.dumps({"cuda": {"name": "CUDA SDK", "version": "12.4.1"},
                            "cuda_nvcc": {"name": "CUDA NVCC", "version": "12.4.131"}}, indent=3)
NVCC_VERSION = ("nvcc: NVIDIA (R) Cuda compiler driver\nCopyright (c) 2005-2023 NVIDIA Corporation\n"
                "Built on Fri_Jan__6_16:45:21_PST_2023\nCuda compilation tools, release 12.0, V12.0.140\n"
                "Build cuda_12.0.r12.0/compiler.32267302_0\n")


def test_nvcc_version_from_version_json():
    src = FixtureSource(executables={"nvcc": "/usr/local/cuda-12.4/bin/nvcc"},
                        files={"/usr/local/cuda-12.4/version.json": CUDA_124_JSON},
                        dirs={"/usr/local/cuda-12.4/nvvm": ["bin", "libdevice"]})
    tk = sw(src).cuda_toolkit
    assert (tk.nvcc_path, tk.cuda_version, tk.cuda_home) == (
        "/usr/local/cuda-12.4/bin/nvcc", "12.4", "/usr/local/cuda-12.4")


def test_nvcc_version_from_nvcc_itself():
    # Ubuntu's nvidia-cuda-toolkit: /usr/bin/nvcc, no version.json, no toolkit root
    src = FixtureSource(executables={"nvcc": "/usr/bin/nvcc"},
                        commands={"/usr/bin/nvcc --version": {"returncode": 0, "stdout": NVCC_VERSION}})
    tk = sw(src).cuda_toolkit
    assert (tk.nvcc_path, tk.cuda_version, tk.cuda_home) == ("/usr/bin/nvcc", "12.0", None)


def test_nvcc_found_through_cuda_home_when_not_on_path():
    src = FixtureSource(environ={"CUDA_HOME": "/opt/cuda-11.8"},
                        files={"/opt/cuda-11.8/bin/nvcc": "", "/opt/cuda-11.8/version.json":
                               '{"cuda": {"name": "CUDA SDK", "version": "11.8.20220929"}}'})
    tk = sw(src).cuda_toolkit
    assert (tk.nvcc_path, tk.cuda_version, tk.cuda_home) == ("/opt/cuda-11.8/bin/nvcc", "11.8", "/opt/cuda-11.8")


def test_nvcc_in_the_default_location():
    nvcc = "/usr/local/cuda/bin/nvcc"
    src = FixtureSource(files={nvcc: ""},
                        commands={f"{nvcc} --version": {"returncode": 0, "stdout": NVCC_VERSION}})
    tk = sw(src).cuda_toolkit
    assert (tk.nvcc_path, tk.cuda_version) == ("/usr/local/cuda/bin/nvcc", "12.0")


def test_no_toolkit():
    tk = sw(FixtureSource()).cuda_toolkit
    assert (tk.nvcc_path, tk.cuda_version, tk.cuda_home) == (None, None, None)


def test_nvcc_that_prints_nothing_useful():
    src = FixtureSource(executables={"nvcc": "/usr/bin/nvcc"},
                        commands={"/usr/bin/nvcc --version": {"returncode": 127, "stderr": "broken"}})
    assert sw(src).cuda_toolkit.cuda_version is None


# --------------------------------------------------------------------------- pynvml, packages, NCCL


NVML_PY = ["pynvml.py", "example.py", "nvidia_ml_py-12.560.30.dist-info/RECORD"]
PYNVML_11 = ["pynvml/__init__.py", "pynvml/nvml.py", "pynvml/smi.py", "pynvml-11.5.0.dist-info/RECORD"]
PYNVML_12 = ["pynvml_utils/__init__.py", "pynvml_utils/smi.py", "pynvml-12.0.0.dist-info/RECORD"]
NVML_PY3 = ["../../../pynvml.py", "../../../nvidia_smi.py", "PKG-INFO"]  # egg-info installed-files


def providers(dists: dict, lists: dict) -> list[str]:
    return sw(FixtureSource(dists=dists, dist_file_lists=lists)).pynvml_providers


def test_pynvml_providers():
    assert providers({"nvidia-ml-py": "12.560.30"}, {"nvidia-ml-py": NVML_PY}) == ["nvidia-ml-py"]
    # pynvml 11 ships a pynvml/ package, which import prefers over nvidia-ml-py's pynvml.py
    assert providers({"nvidia-ml-py": "12.560.30", "pynvml": "11.5.0"},
                     {"nvidia-ml-py": NVML_PY, "pynvml": PYNVML_11}) == ["nvidia-ml-py", "pynvml"]
    # pynvml 12 is a wrapper around nvidia-ml-py: no clash
    assert providers({"nvidia-ml-py": "12.560.30", "pynvml": "12.0.0"},
                     {"nvidia-ml-py": NVML_PY, "pynvml": PYNVML_12}) == ["nvidia-ml-py"]
    assert providers({"nvidia-ml-py": "12.560.30", "nvidia-ml-py3": "7.352.0"},
                     {"nvidia-ml-py": NVML_PY, "nvidia-ml-py3": NVML_PY3}) == ["nvidia-ml-py", "nvidia-ml-py3"]
    assert providers({"nvidia-ml-py": "12.560.30"}, {}) == []  # no RECORD to read: no claim


def test_packages_keep_frameworks_and_nvidia_wheels_only():
    src = FixtureSource(dists={"Torch": "2.5.1", "Flash_Attn": "2.6.3", "requests": "2.32.3",
                               "nvidia-cudnn-cu12": "9.1.0.70", "nvidia-nccl-cu13": "2.28.3",
                               "nvidia-cufft-cu12": "11.2.1.3", "numpy": "2.1.3"})
    assert sw(src).packages == {"torch": "2.5.1", "flash-attn": "2.6.3", "numpy": "2.1.3",
                                "nvidia-cudnn-cu12": "9.1.0.70", "nvidia-nccl-cu13": "2.28.3"}


def test_only_the_environment_variables_that_matter():
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/data/hf", "AWS_SECRET_ACCESS_KEY": "x", "TERM": "xterm"}
    assert sw(FixtureSource(environ=env)).env == {"CUDA_VISIBLE_DEVICES": "0,1", "HF_HOME": "/data/hf"}


def test_system_nccl():
    src = FixtureSource(os="linux", dirs={"/usr/lib/x86_64-linux-gnu": ["libc.so.6", "libnccl.so.2",
                                                                         "libnccl.so.2.21.5"]})
    assert sw(src).system_nccl == "/usr/lib/x86_64-linux-gnu/libnccl.so.2"
    assert sw(FixtureSource(os="linux")).system_nccl is None
    mac = FixtureSource(os="darwin", dirs={"/usr/lib": ["libnccl.so.2"]})
    assert sw(mac).system_nccl is None  # only looked for on Linux
