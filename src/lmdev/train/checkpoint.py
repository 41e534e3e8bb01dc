"""Crash-proof checkpoints, with no pickle anywhere.

A checkpoint is a folder ``step-NNNNNNNN/`` holding

- ``model.safetensors``: the weights;
- ``optimizer.safetensors``: the optimizer's and the training state's tensors (Adam moments,
  torch's RNG state, metric accumulators);
- ``state.json``: everything else (step, data position, optimizer hyper-parameters, scheduler,
  Python and NumPy RNG states, the model config, the best metric);
- ``manifest.json``, written last: the sha256 and size of each file above.

It is written into a temporary folder beside the final one, each file fsynced, then renamed into
place and the parent folder fsynced: a crash at any moment leaves either the previous
checkpoints alone or the new one complete. A checkpoint whose files do not match its manifest is
corrupt; loading falls back to the one before it.

With ``checkpoint: {encrypt: true}`` in the training config (or a list of age recipients), the
three files are written age-encrypted (same names; each starts with ``age-encryption.org/v1``)
and read back transparently with the key of :mod:`lmdev.secure.crypto` (``$LMDEV_AGE_KEY``,
``$LMDEV_AGE_KEY_FILE``, the keyring or ``$LMDEV_HOME/keys/age.key``). The manifest stays plain:
it hashes the ciphertext, so ``verify`` needs no key.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmdev.errors import LmdevError
from lmdev.fsutil import fsync_path, sha256_file

PREFIX = "step-"
FILES = ("model.safetensors", "optimizer.safetensors", "state.json")


@dataclass
class Checkpoint:
    path: Path
    step: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)  # optimizer.safetensors
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # model.safetensors
    state: dict[str, Any] = field(default_factory=dict)  # state.json


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _crash_point(name: str, step: int) -> None:
    """Tests set LMDEV_TEST_CRASH_AT to kill the process at a named point of the save:
    ``NAME`` (the first save that reaches it) or ``NAME:STEP`` (only the save of that step);
    LMDEV_TEST_PAUSE_AT=NAME=SECONDS makes every save wait there (to signal it mid-save)."""
    want = os.environ.get("LMDEV_TEST_CRASH_AT")
    if want and want in (name, f"{name}:{step}"):
        os._exit(137)
    pause = os.environ.get("LMDEV_TEST_PAUSE_AT", "")  # NAME=SECONDS: every save sleeps there
    if pause.partition("=")[0] == name:
        import time

        time.sleep(float(pause.partition("=")[2] or 1))


class SaveError(LmdevError):
    """A checkpoint could not be written (a full disk, a folder gone read-only): the run itself
    failed (exit 1); the checkpoints before it are intact."""

    exit_code = 1


def save_error(exc: BaseException, folder: Path, step: int) -> SaveError:
    text = str(exc).strip()
    why = getattr(exc, "strerror", None) or (text.splitlines()[0] if text else type(exc).__name__)
    return SaveError(f"cannot save the checkpoint of step {step} in {folder}: {why}",
                     "free some disk space, then continue with lmdev train CONFIG --resume "
                     "(the earlier checkpoints are intact)")


def _write_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (OSError, SafetensorError)


def save(folder: Path, step: int, weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
         state: dict[str, Any]) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Write checkpoint ``step`` under ``folder`` atomically; returns its path and its manifest.
    A failed write (a full disk) removes the partial folder and raises SaveError."""
    final = folder / f"{PREFIX}{step:08d}"
    recipients = encryption(state)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=folder))
    except OSError as exc:
        raise save_error(exc, folder, step) from None
    try:
        # Tied weights share storage; safetensors wants each tensor once, so clone any alias.
        seen: set[int] = set()
        unique = {}
        for k, v in weights.items():
            v = v.detach().contiguous()
            if v.data_ptr() in seen:
                v = v.clone()
            seen.add(v.data_ptr())
            unique[k] = v.cpu()
        write_tensors(tmp / "model.safetensors", unique, recipients)
        _crash_point("after_weights", step)
        return final, _seal(tmp, final, folder, tensors, state)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, _write_errors()):
            raise save_error(exc, folder, step) from None
        raise


def _seal(tmp: Path, final: Path, folder: Path, tensors: dict[str, torch.Tensor],
          state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Write the small files, fsync everything, write the manifest, rename into place."""
    recipients = encryption(state)
    write_tensors(tmp / "optimizer.safetensors", {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                  recipients)
    _write_bytes(tmp / "state.json", json.dumps(state, sort_keys=True).encode("utf-8"), recipients)
    manifest = {}
    for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
        _fsync_file(f)
        manifest[f.relative_to(tmp).as_posix()] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
    for sub in {f.parent for f in tmp.rglob("*") if f.is_file()}:
        fsync_path(sub)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    _fsync_file(tmp / "manifest.json")
    _crash_point("before_rename", int(state.get("step", -1)))
    if final.exists():  # a checkpoint of the same step from an earlier attempt
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(folder)
    return manifest


def save_sharded(folder: Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer,
                 tensors: dict[str, torch.Tensor], state: dict[str, Any], is_main: bool,
                 barrier: Any) -> Path:
    """Every rank writes its shards with torch.distributed.checkpoint into ``dcp/``; rank 0 then
    adds the small files and seals the folder as :func:`save` does. Loadable at any number of
    workers, with or without FSDP; :func:`export_safetensors` makes one file of it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    final = folder / f"{PREFIX}{step:08d}"
    if encryption(state) is not None:
        raise SaveError("checkpoint.encrypt does not cover sharded (FSDP) checkpoints yet",
                        "train with strategy: ddp (or one worker), or remove checkpoint.encrypt")
    tmp = folder / f".{final.name}.sharded.tmp"
    if is_main:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    model_sd, optim_sd = get_state_dict(model, opt)
    from torch.distributed.checkpoint.api import CheckpointException

    from lmdev.train.dcp_safe import checkpoint_error

    try:
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "dcp"))
    except CheckpointException as exc:  # a BaseException wrapping each rank's error
        shutil.rmtree(tmp, ignore_errors=True)
        err = checkpoint_error(exc, f"cannot save the sharded checkpoint of step {step} in {folder}")
        raise SaveError(err.message, err.hint) from None
    barrier()
    if is_main:
        try:
            _seal(tmp, final, folder, tensors, state)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, _write_errors()):
                raise save_error(exc, folder, step) from None
            raise
    barrier()
    return final


def load_sharded_into(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    """Load a sharded checkpoint into ``model`` and ``opt``, whatever their sharding now. The
    index is read with a restricted unpickler first (:mod:`lmdev.train.dcp_safe`): a crafted one
    is refused before anything of it runs."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from lmdev.train import dcp_safe

    model_sd, optim_sd = get_state_dict(model, opt)
    dcp_safe.load({"model": model_sd, "optim": optim_sd}, path / "dcp")
    set_state_dict(model, opt, model_state_dict=model_sd, optim_state_dict=optim_sd)


def export_safetensors(path: Path, out: Path) -> Path:
    """One safetensors file of a checkpoint's weights (gathering a sharded one's shards)."""
    from lmdev.fsutil import atomic_write_bytes

    problem = verify(path)
    if problem:
        raise LmdevError(f"checkpoint {path} is corrupt: {problem}", "export an earlier checkpoint")
    from lmdev.secure import require_safe

    require_safe(path, what="export the checkpoint")
    if (path / "model.safetensors").is_file():
        weights = read_tensors(path / "model.safetensors")
    else:
        from lmdev.train import dcp_safe

        weights = dcp_safe.load_tensors(path / "dcp", "model.")
    from safetensors.torch import save

    weights = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).contiguous() for k, v in weights.items()}
    return atomic_write_bytes(out, save(weights))


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints (by name) in step order; temporary folders are ignored."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
             and p.name[len(PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def verify(path: Path) -> str | None:
    """None when the checkpoint matches its manifest (and a sharded one's index is one lmdev
    can read without running code from it), else what is wrong."""
    manifest, problem = _read_manifest(path)
    if problem:
        return problem
    if "state.json" not in manifest:
        return "state.json is missing"
    if "model.safetensors" not in manifest and "dcp/.metadata" not in manifest:
        return "model.safetensors is missing"
    for name in FILES:
        if name != "model.safetensors" and name not in manifest:
            return f"{name} is missing"
    for name, entry in manifest.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != entry["bytes"] or sha256_file(f) != entry["sha256"]:
            return f"{name} does not match its sha256"
    if is_sharded(path):
        from lmdev.train.dcp_safe import UnsafeCheckpoint, read_metadata

        try:
            read_metadata(path / "dcp" / ".metadata")
        except UnsafeCheckpoint as exc:
            return f"dcp/.metadata was refused ({exc.message})"
    return None


def _read_manifest(path: Path) -> tuple[dict[str, dict[str, Any]], str | None]:
    """The manifest, checked: a mapping of relative file names (inside the checkpoint) to
    ``{"sha256": hex, "bytes": int}``; or what is wrong with it."""
    try:
        f = path / "manifest.json"
        if f.stat().st_size > 16 * 1024**2:
            return {}, "manifest.json is larger than any manifest lmdev writes"
        manifest = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return {}, "manifest.json is missing or unreadable"
    if not isinstance(manifest, dict):
        return {}, "manifest.json is not a mapping of files to their sha256"
    for name, entry in manifest.items():
        parts = Path(name).parts
        if not name or Path(name).is_absolute() or ".." in parts or "\\" in name:
            return {}, f"manifest.json names a file outside the checkpoint ({name!r})"
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int) and not isinstance(entry.get("bytes"), bool)):
            return {}, f"manifest.json's entry for {name!r} is malformed (want sha256 and bytes)"
    return manifest, None


def is_sharded(path: Path) -> bool:
    return (path / "dcp" / ".metadata").is_file()


def load(path: Path, *, check: bool = True) -> Checkpoint:
    """Read a checkpoint; ``check=False`` when the caller has just verified it (hashing a large
    checkpoint twice doubles the reading)."""
    problem = verify(path) if check else None
    if problem:
        raise LmdevError(f"checkpoint {path} is corrupt: {problem}", "resume from an earlier checkpoint")
    from lmdev.secure import require_safe

    require_safe(path, what="resume from the checkpoint")
    try:
        state = json.loads(_read_bytes(path / "state.json").decode("utf-8"))
    except (OSError, ValueError):
        raise LmdevError(f"checkpoint {path}: state.json is missing or not JSON",
                         "resume from an earlier checkpoint") from None
    if not (isinstance(state, dict) and isinstance(state.get("step"), int) and not isinstance(state["step"], bool)):
        raise LmdevError(f"checkpoint {path}: state.json lacks its step",
                         "resume from an earlier checkpoint")
    weights = read_tensors(path / "model.safetensors") if (path / "model.safetensors").is_file() else {}
    return Checkpoint(path, int(state["step"]), read_tensors(path / "optimizer.safetensors"), weights, state)


def load_latest(folder: Path, warn: Any = None, before: int | None = None) -> Checkpoint | None:
    """The newest checkpoint that verifies; a corrupt newer one is skipped with a warning.
    With ``before``, only checkpoints of earlier steps are considered (the fallback for a
    corrupt checkpoint that was asked for by name)."""
    for path in reversed(list_checkpoints(folder)):
        if before is not None and int(path.name[len(PREFIX):]) >= before:
            continue
        problem = verify(path)
        if problem is None:
            return load(path, check=False)
        if warn:
            warn(f"checkpoint {path.name} is corrupt ({problem}); using the one before it")
    return None


def prune(folder: Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints (and ``protect``, the best); also delete
    temporary folders that a crash left behind."""
    removed = []
    for p in folder.glob(f".{PREFIX}*.tmp"):
        shutil.rmtree(p, ignore_errors=True)
    ckpts = list_checkpoints(folder)
    for p in ckpts[:-keep] if keep else ckpts:
        if protect is not None and p.resolve() == protect.resolve():
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


# --------------------------------------------------------------------------- optimizer state


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state_dict into tensors (for safetensors) and JSON-able rest."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, entry in rest.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    opt.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


# --------------------------------------------------------------------------- encryption at rest


def encryption(state: dict[str, Any]) -> list[str] | None:
    """The age recipients a checkpoint is encrypted to (None: not encrypted), from the training
    config the state carries: ``checkpoint.encrypt`` true (the own key's recipient) or a list of
    recipients. A missing key or a malformed recipient is a SaveError before anything is written."""
    config = state.get("config")
    section = config.get("checkpoint") if isinstance(config, dict) else None
    setting = section.get("encrypt", False) if isinstance(section, dict) else False
    if setting is False or setting is None or setting == []:
        return None
    from lmdev.secure import crypto

    try:
        return crypto.resolve_recipients([] if setting is True else list(setting))
    except LmdevError as exc:
        raise SaveError(f"checkpoint.encrypt is set, but {exc.message}", exc.hint) from None


def _write_bytes(path: Path, data: bytes, recipients: list[str] | None) -> None:
    if recipients is None:
        path.write_bytes(data)
        return
    from lmdev.secure import crypto

    crypto.encrypt_bytes_to(data, path, recipients)


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], recipients: list[str] | None = None) -> None:
    """A safetensors file, age-encrypted to ``recipients`` unless None (the plaintext then never
    touches the disk)."""
    if recipients is None:
        save_file(tensors, str(path))
        return
    from safetensors.torch import save

    _write_bytes(path, save(tensors), recipients)


def is_encrypted(path: Path) -> bool:
    """True when a checkpoint (folder) or one of its files is age-encrypted."""
    f = path / "state.json" if path.is_dir() else path
    from lmdev.secure.crypto import AGE_HEADER

    try:
        with open(f, "rb") as fh:
            return fh.read(len(AGE_HEADER)) == AGE_HEADER
    except OSError:
        return False


def _read_bytes(path: Path) -> bytes:
    if not is_encrypted(path):
        return path.read_bytes()
    from lmdev.secure import crypto

    return crypto.decrypt_bytes(path)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors file, decrypted first when it is encrypted; the decrypted
    bytes are judged by the scanner's safetensors checks before safetensors parses them."""
    if not is_encrypted(path):
        return load_file(str(path))
    from safetensors.torch import load as load_bytes

    from lmdev.secure.scan import require_safe_safetensors

    data = _read_bytes(path)
    require_safe_safetensors(data, path, what="load the checkpoint file")
    return load_bytes(data)


def read_state(path: Path) -> dict[str, Any]:
    """A checkpoint's state.json (decrypted when encrypted): for readers other than resume (the
    dashboard, compress) that need the config or the step."""
    try:
        state = json.loads(_read_bytes(path / "state.json").decode("utf-8"))
    except (OSError, ValueError):
        raise LmdevError(f"checkpoint {path}: state.json is missing or not JSON",
                         "give an earlier checkpoint") from None
    if not isinstance(state, dict):
        raise LmdevError(f"checkpoint {path}: state.json is not a mapping", "give an earlier checkpoint")
    return state
