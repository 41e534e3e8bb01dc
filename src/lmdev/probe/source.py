"""Where probes read from: the real machine, a recorded fixture, or a test's fabrication.

Every collector reads through a :class:`Source`, never through ``open``, ``os`` or
``subprocess`` directly, so that each can run against a fake root folder, a fake NVML and fake
command outputs. :class:`LocalSource` reads this machine; :class:`FixtureSource` replays a JSON
snapshot (``tests/fixtures/machines/*.json``); :class:`RecordingSource` wraps another source and
writes down everything that was read, which is how the fixture of a real machine is made.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lmdev.nvml import nvidia_driver_present
from lmdev.probe.types import PythonFacts

# the environment variables probes read and snapshots keep
RELEVANT_ENV = [
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH", "LD_LIBRARY_PATH",
    "PYTORCH_CUDA_ALLOC_CONF", "KERAS_BACKEND", "KERAS_HOME", "HF_HOME", "HF_HUB_CACHE",
    "TORCH_HOME", "XDG_CACHE_HOME", "PIP_CACHE_DIR", "VIRTUAL_ENV", "CONDA_PREFIX",
    "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "TPU_NAME", "OMP_NUM_THREADS", "LMDEV_HOME",
    "WSL_DISTRO_NAME", "NCCL_P2P_DISABLE", "NCCL_IB_DISABLE", "TF_CPP_MIN_LOG_LEVEL",
    "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LOCAL_WORLD_SIZE",
]


@dataclass
class CommandResult:
    returncode: int | None  # None: the command was not found or timed out
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    not_found: bool = False


@dataclass
class Distribution:
    """An installed Python distribution, read from its metadata folder (no import)."""

    name: str  # normalised: lower case, "-" separators
    version: str
    path: str | None = None  # the .dist-info / .egg-info folder


class Source(Protocol):
    os: str  # linux, darwin, windows
    machine: str  # x86_64, aarch64, arm64
    kernel: str
    hostname: str
    python: PythonFacts
    home: str
    cwd: str

    @property
    def env(self) -> dict[str, str]: ...

    def read_text(self, path: str) -> str | None: ...

    def listdir(self, path: str) -> list[str] | None: ...

    def exists(self, path: str) -> bool: ...

    def which(self, name: str) -> str | None: ...

    def run(self, argv: list[str], timeout: float = 5.0) -> CommandResult: ...

    def disk_usage(self, path: str) -> tuple[int, int] | None: ...

    def nvml(self) -> Any: ...

    def distributions(self) -> list[Distribution]: ...

    def package_file(self, dist: str, relative: str) -> str | None: ...

    def dist_files(self, dist: str) -> list[str] | None: ...


def normalise(name: str) -> str:
    """PEP 503 name normalisation: ``Foo_Bar.baz`` -> ``foo-bar-baz``."""
    out = []
    prev_sep = False
    for ch in name.lower():
        if ch in "-_.":
            if not prev_sep:
                out.append("-")
            prev_sep = True
        else:
            out.append(ch)
            prev_sep = False
    return "".join(out)


def _python_facts() -> PythonFacts:
    venv = sys.prefix if sys.prefix != getattr(sys, "base_prefix", sys.prefix) else None
    if venv is None and os.environ.get("VIRTUAL_ENV"):
        venv = os.environ["VIRTUAL_ENV"]
    conda = os.environ.get("CONDA_PREFIX")
    if conda is None and os.path.isdir(os.path.join(sys.prefix, "conda-meta")):
        conda = sys.prefix
    return PythonFacts(
        version=platform.python_version(),
        implementation=platform.python_implementation(),
        executable=sys.executable,
        prefix=sys.prefix,
        virtualenv=venv,
        conda_env=conda,
    )


def _parse_dist_folder(entry: str) -> tuple[str, str] | None:
    """``torch-2.3.1+cu121.dist-info`` -> (``torch``, ``2.3.1+cu121``)."""
    for suffix in (".dist-info", ".egg-info"):
        if entry.endswith(suffix):
            stem = entry[: -len(suffix)]
            name, sep, version = stem.partition("-")
            if sep and version and version[0].isdigit():
                # egg-info names may carry "-py3.11" after the version
                version = version.split("-py")[0]
                return normalise(name), version
            return None
    return None


class NoNvidiaDriver(ImportError):
    """No NVIDIA driver on this machine, so NVML cannot load (pynvml is not even imported)."""


class LocalSource:
    """This machine, read for real."""

    def __init__(self) -> None:
        sysname = platform.system().lower()
        self.os = {"darwin": "darwin", "windows": "windows"}.get(sysname, sysname)
        self.machine = platform.machine()
        self.kernel = platform.release()
        self.hostname = socket.gethostname()
        self.python = _python_facts()
        self.home = os.path.expanduser("~")
        self.cwd = os.getcwd()
        self._dists: dict[str, Distribution] | None = None

    @property
    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (OSError, ValueError):
            return None

    def listdir(self, path: str) -> list[str] | None:
        try:
            return sorted(os.listdir(path))
        except OSError:
            return None

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def which(self, name: str) -> str | None:
        return shutil.which(name)

    def run(self, argv: list[str], timeout: float = 5.0) -> CommandResult:
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                errors="replace",
            )
        except FileNotFoundError:
            return CommandResult(None, not_found=True)
        except PermissionError as exc:
            return CommandResult(None, stderr=str(exc))
        except subprocess.TimeoutExpired:
            return CommandResult(None, timed_out=True)
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def disk_usage(self, path: str) -> tuple[int, int] | None:
        try:
            usage = shutil.disk_usage(path)
        except OSError:
            return None
        return usage.total, usage.free

    def nvml(self) -> Any:
        if not nvidia_driver_present(self.os, os.environ.get("LD_LIBRARY_PATH", "")):
            # no driver: importing pynvml and failing nvmlInit would only cost time (~0.1-0.2 s)
            raise NoNvidiaDriver("NVML Shared Library Not Found (no NVIDIA driver: no /proc/driver/nvidia, "
                                 "no libnvidia-ml.so.1)")
        import pynvml  # nvidia-ml-py: one pure-Python module, no CUDA

        return pynvml

    def _scan(self) -> dict[str, Distribution]:
        if self._dists is None:
            found: dict[str, Distribution] = {}
            for entry_dir in sys.path:
                if not entry_dir or not os.path.isdir(entry_dir):
                    continue
                try:
                    names = os.listdir(entry_dir)
                except OSError:
                    continue
                for entry in names:
                    parsed = _parse_dist_folder(entry)
                    if parsed and parsed[0] not in found:  # first on sys.path wins, as for import
                        found[parsed[0]] = Distribution(
                            parsed[0], parsed[1], os.path.join(entry_dir, entry)
                        )
            self._dists = found
        return self._dists

    def distributions(self) -> list[Distribution]:
        return list(self._scan().values())

    def _site_dir(self, dist: str) -> str | None:
        d = self._scan().get(normalise(dist))
        return os.path.dirname(d.path) if d and d.path else None

    def package_file(self, dist: str, relative: str) -> str | None:
        site = self._site_dir(dist)
        return self.read_text(os.path.join(site, relative)) if site else None

    def dist_files(self, dist: str) -> list[str] | None:
        d = self._scan().get(normalise(dist))
        if not d or not d.path:
            return None
        record = self.read_text(os.path.join(d.path, "RECORD"))
        if record is None:
            record = self.read_text(os.path.join(d.path, "installed-files.txt"))
        if record is None:
            return None
        return [line.split(",")[0] for line in record.splitlines() if line.strip()]


# --------------------------------------------------------------------------- fixtures


class FakeNvmlError(Exception):
    """Raised by the fake NVML like pynvml's NVMLError (``value`` is the NVML return code)."""

    def __init__(self, value: int, message: str = "") -> None:
        super().__init__(message or f"NVML error {value}")
        self.value = value


class FakeNvml:
    """The subset of pynvml that lmdev uses, answering from a recorded snapshot.

    The snapshot is the ``nvml`` section of a machine fixture: ``driver_version``,
    ``cuda_driver_version`` (NVML's integer, e.g. 12040) and ``devices``, each a dict of the
    values NVML returns. A key that is absent answers "not supported", as NVML does.
    """

    NVMLError = FakeNvmlError
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_TEMPERATURE_GPU = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
    NVML_VOLATILE_ECC = 0
    NVML_NVLINK_MAX_LINKS = 18
    NVML_FEATURE_ENABLED = 1

    def __init__(self, snapshot: dict[str, Any]) -> None:
        self._s = snapshot

    def _get(self, handle: int, key: str) -> Any:
        dev = self._s["devices"][handle]
        if key not in dev:
            raise FakeNvmlError(self.NVML_ERROR_NOT_SUPPORTED, "Not Supported")
        return dev[key]

    def nvmlInit(self) -> None:
        if self._s.get("init_error"):
            raise FakeNvmlError(self.NVML_ERROR_LIBRARY_NOT_FOUND, self._s["init_error"])

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return self._s["driver_version"]

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self._s["cuda_driver_version"]

    def nvmlDeviceGetCount(self) -> int:
        return len(self._s["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, h: int) -> str:
        return self._get(h, "name")

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self._get(h, "uuid")

    def nvmlDeviceGetPciInfo(self, h: int) -> Any:
        return _Obj(busId=self._get(h, "pci_bus_id"))

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        m = self._get(h, "memory")
        return _Obj(total=m["total"], used=m["used"], free=m["total"] - m["used"])

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return tuple(self._get(h, "compute_capability"))  # type: ignore[return-value]

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: int) -> int:
        return self._get(h, "pcie_gen_current")

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: int) -> int:
        return self._get(h, "pcie_gen_max")

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: int) -> int:
        return self._get(h, "pcie_width_current")

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: int) -> int:
        return self._get(h, "pcie_width_max")

    def nvmlDeviceGetPersistenceMode(self, h: int) -> int:
        return self._get(h, "persistence_mode")

    def nvmlDeviceGetMigMode(self, h: int) -> tuple[int, int]:
        mig = self._get(h, "mig_mode")
        return mig, mig

    def nvmlDeviceGetTotalEccErrors(self, h: int, error_type: int, counter_type: int) -> int:
        return self._get(h, "ecc_uncorrected_volatile")

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return _Obj(gpu=self._get(h, "utilization"), memory=0)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return self._get(h, "temperature")

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return self._get(h, "power_mw")

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return self._get(h, "power_limit_mw")

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:
        return self._get(h, "throttle_reasons")

    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[Any]:
        return [_Obj(pid=p["pid"], usedGpuMemory=p.get("used")) for p in self._get(h, "processes")]

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        links = self._get(h, "nvlinks")
        if link >= len(links):
            raise FakeNvmlError(self.NVML_ERROR_NOT_SUPPORTED, "Not Supported")
        return links[link]["active"]

    def nvmlDeviceGetNvLinkRemotePciInfo_v2(self, h: int, link: int) -> Any:
        return _Obj(busId=self._get(h, "nvlinks")[link]["remote"])

    def nvmlDeviceGetTopologyCommonAncestor(self, h1: int, h2: int) -> int:
        return self._s["pcie_ancestor"][h1][h2]


# field -> (what it must be, a check): the shapes FixtureSource reads
_SNAPSHOT_SHAPES: dict[str, tuple[str, Any]] = {
    **{k: ("text", lambda v: isinstance(v, str)) for k in ("os", "machine", "kernel", "hostname", "home", "cwd")},
    "python": ("an object of text fields", lambda v: isinstance(v, dict) and set(v) <= {
        "version", "implementation", "executable", "prefix", "virtualenv", "conda_env"}
        and all(x is None or isinstance(x, str) for x in v.values())),
    **{k: ("an object of text values", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()))
       for k in ("files", "environ", "executables", "dists", "package_files")},
    **{k: ("an object of lists of text", lambda v: isinstance(v, dict) and all(
        isinstance(x, list) and all(isinstance(i, str) for i in x) for x in v.values()))
       for k in ("dirs", "dist_file_lists")},
    "commands": ("an object of command results (objects)", lambda v: isinstance(v, dict)
                 and all(isinstance(x, dict) for x in v.values())),
    "disks": ("an object of [total, free] byte counts", lambda v: isinstance(v, dict) and all(
        isinstance(x, list) and len(x) == 2 and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                    for i in x) for x in v.values())),
    "nvml_snapshot": ("an object or null", lambda v: v is None or isinstance(v, dict)),
}


def _check_snapshot(data: dict[str, Any]) -> None:
    for key, value in data.items():
        if key not in _SNAPSHOT_SHAPES:
            raise ValueError(f"unknown field {key!r}")
        what, ok = _SNAPSHOT_SHAPES[key]
        if not ok(value):
            raise ValueError(f"field {key!r} must be {what}")
    nvml = data.get("nvml_snapshot") or {}
    if not isinstance(nvml.get("devices", []), list) or not all(isinstance(d, dict) for d in nvml.get("devices", [])):
        raise ValueError("field 'nvml_snapshot.devices' must be a list of objects")


class _Obj:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


@dataclass
class FixtureSource:
    """A machine replayed from a JSON snapshot. See ``tests/fixtures/machines/README.md``."""

    os: str = "linux"
    machine: str = "x86_64"
    kernel: str = ""
    hostname: str = "fixture"
    python: PythonFacts = field(default_factory=PythonFacts)
    home: str = "/root"
    cwd: str = "/work"
    files: dict[str, str] = field(default_factory=dict)  # absolute path -> content
    dirs: dict[str, list[str]] = field(default_factory=dict)  # extra directory listings
    environ: dict[str, str] = field(default_factory=dict)
    commands: dict[str, dict[str, Any]] = field(default_factory=dict)  # "argv joined" -> result
    executables: dict[str, str] = field(default_factory=dict)  # name -> path on PATH
    disks: dict[str, list[int]] = field(default_factory=dict)  # path prefix -> [total, free]
    nvml_snapshot: dict[str, Any] | None = None
    dists: dict[str, str] = field(default_factory=dict)  # name -> version
    dist_file_lists: dict[str, list[str]] = field(default_factory=dict)
    package_files: dict[str, str] = field(default_factory=dict)  # "dist:relative" -> content

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FixtureSource:
        """A source from a snapshot's JSON; ValueError naming the first field of the wrong
        type (the snapshot is input: checked here, not found out deep inside a probe)."""
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_note": a comment
        data.pop("description", None)
        data.pop("expected_findings", None)
        _check_snapshot(data)
        python = PythonFacts(**data.pop("python", {}))
        return cls(python=python, **data)

    @classmethod
    def load(cls, path: str | Path) -> FixtureSource:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    @property
    def env(self) -> dict[str, str]:
        return dict(self.environ)

    def read_text(self, path: str) -> str | None:
        return self.files.get(path)

    def listdir(self, path: str) -> list[str] | None:
        path = path.rstrip("/") or "/"
        if path in self.dirs:
            return sorted(self.dirs[path])
        prefix = path + "/" if path != "/" else "/"
        children = {
            p[len(prefix) :].split("/")[0] for p in self.files if p.startswith(prefix)
        }
        return sorted(children) if children else None

    def exists(self, path: str) -> bool:
        return path in self.files or self.listdir(path) is not None

    def which(self, name: str) -> str | None:
        return self.executables.get(name)

    def run(self, argv: list[str], timeout: float = 5.0) -> CommandResult:
        rec = self.commands.get(" ".join(argv))
        if rec is None:
            return CommandResult(None, not_found=True)
        return CommandResult(
            rec.get("returncode"),
            rec.get("stdout", ""),
            rec.get("stderr", ""),
            timed_out=rec.get("timed_out", False),
            not_found=rec.get("not_found", False),
        )

    def disk_usage(self, path: str) -> tuple[int, int] | None:
        best = None
        for prefix, usage in self.disks.items():
            if (path == prefix or path.startswith(prefix.rstrip("/") + "/")) and (
                best is None or len(prefix) > len(best[0])
            ):
                best = (prefix, usage)
        return (int(best[1][0]), int(best[1][1])) if best else None

    def nvml(self) -> Any:
        if self.nvml_snapshot is None:
            raise ImportError("NVML Shared Library Not Found")
        return FakeNvml(self.nvml_snapshot)

    def distributions(self) -> list[Distribution]:
        return [Distribution(normalise(n), v) for n, v in self.dists.items()]

    def package_file(self, dist: str, relative: str) -> str | None:
        return self.package_files.get(f"{normalise(dist)}:{relative}")

    def dist_files(self, dist: str) -> list[str] | None:
        return self.dist_file_lists.get(normalise(dist))


class RecordingSource:
    """Wraps a source and writes down what was read, to make a fixture of a real machine."""

    def __init__(self, inner: LocalSource) -> None:
        self._inner = inner
        self.os, self.machine, self.kernel = inner.os, inner.machine, inner.kernel
        self.hostname, self.python = inner.hostname, inner.python
        self.home, self.cwd = inner.home, inner.cwd
        self.record: dict[str, Any] = {
            "files": {},
            "dirs": {},
            "commands": {},
            "executables": {},
            "disks": {},
            "dists": {},
            "dist_file_lists": {},
            "package_files": {},
            "environ": {},
            "nvml_snapshot": None,
        }

    @property
    def env(self) -> dict[str, str]:
        env = self._inner.env
        self.record["environ"] = {
            k: v for k, v in env.items() if k in RELEVANT_ENV or k in ("HOME", "PATH")
        }
        return env

    def read_text(self, path: str) -> str | None:
        text = self._inner.read_text(path)
        if text is not None:
            self.record["files"][path] = text
        return text

    def listdir(self, path: str) -> list[str] | None:
        names = self._inner.listdir(path)
        if names is not None:
            self.record["dirs"][path] = names
        return names

    def exists(self, path: str) -> bool:
        ok = self._inner.exists(path)
        if ok and path not in self.record["files"]:
            self.record["dirs"].setdefault(path, self._inner.listdir(path) or [])
        return ok

    def which(self, name: str) -> str | None:
        path = self._inner.which(name)
        if path:
            self.record["executables"][name] = path
        return path

    def run(self, argv: list[str], timeout: float = 5.0) -> CommandResult:
        res = self._inner.run(argv, timeout)
        self.record["commands"][" ".join(argv)] = {
            "returncode": res.returncode,
            "stdout": res.stdout,
            "stderr": res.stderr,
            "timed_out": res.timed_out,
            "not_found": res.not_found,
        }
        return res

    def disk_usage(self, path: str) -> tuple[int, int] | None:
        usage = self._inner.disk_usage(path)
        if usage:
            self.record["disks"][path] = list(usage)
        return usage

    def nvml(self) -> Any:
        return self._inner.nvml()

    def note_nvml(self, snapshot: dict[str, Any]) -> None:
        """Called by the NVIDIA collector with everything it read from NVML."""
        self.record["nvml_snapshot"] = snapshot

    def distributions(self) -> list[Distribution]:
        dists = self._inner.distributions()
        self.record["dists"] = {d.name: d.version for d in dists}
        return dists

    def package_file(self, dist: str, relative: str) -> str | None:
        text = self._inner.package_file(dist, relative)
        if text is not None:
            self.record["package_files"][f"{normalise(dist)}:{relative}"] = text
        return text

    def dist_files(self, dist: str) -> list[str] | None:
        files = self._inner.dist_files(dist)
        if files is not None:
            self.record["dist_file_lists"][normalise(dist)] = files
        return files

    def fixture(self, description: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "description": description,
            "os": self.os,
            "machine": self.machine,
            "kernel": self.kernel,
            "hostname": self.hostname,
            "python": self.python.__dict__,
            "home": self.home,
            "cwd": self.cwd,
        }
        out.update(self.record)
        return out


def guarded(name: str, fn: Any, default: Any, errors: list[Any]) -> Any:
    """Run one collector; a failure becomes a ProbeError and the default, never a crash."""
    from lmdev.probe.types import ProbeError

    try:
        return fn()
    except Exception as exc:  # a collector must never take doctor down
        errors.append(ProbeError(name, f"{type(exc).__name__}: {exc}".splitlines()[0][:300]))
        return default
