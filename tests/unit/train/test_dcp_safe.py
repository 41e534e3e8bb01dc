"""Sharded (torch.distributed.checkpoint) checkpoints are read without running code from them:
a crafted ``dcp/.metadata`` (a pickle) cannot create a file on verify, export or resume, and real
sharded checkpoints still load."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lmdev.fsutil import sha256_file
from lmdev.train import checkpoint as ckpt
from lmdev.train import dcp_safe
from tests.conftest import run_lmdev

CONFIG = "name: canary\nmodel: {type: mlp, hidden: [8]}\ndata: {type: digits, batch_size: 16}\n" \
         "train: {max_steps: 4, eval_every: 100, log_every: 2}\n"

# Writes a real sharded checkpoint from a one-process gloo group with FSDP2 (as lmdev train
# --nproc N with strategy fsdp does), with the given model config in its state.json.
MAKE = textwrap.dedent('''
    import json, sys, tempfile
    from pathlib import Path
    import torch, torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from lmdev.train import checkpoint as ckpt
    out, config = Path(sys.argv[1]), json.loads(sys.argv[2])
    dist.init_process_group("gloo", store=dist.FileStore(tempfile.mktemp(), 1), rank=0, world_size=1)
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    fully_shard(m)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(3, 64)).sum().backward()
    opt.step()
    state = {"step": 5, "config": config, "scheduler": {}, "rng_python": None, "rng_numpy": None}
    ckpt.save_sharded(out, 5, m, opt, {"rng.torch": torch.get_rng_state()}, state, True, dist.barrier)
    dist.destroy_process_group()
''')


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lmdev.train.config import load_config

    folder = tmp_path_factory.mktemp("sharded")
    (folder / "canary.yaml").write_text(CONFIG)
    config = load_config(str(folder / "canary.yaml")).model_dump(mode="json")
    res = subprocess.run([sys.executable, "-c", MAKE, str(folder / "ckpts"), json.dumps(config)],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    return folder / "ckpts" / "step-00000005"


class _Canary:
    """Unpickling this creates a file: what an attacker's payload would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.path), "w"))


def _craft(sharded: Path, tmp_path: Path, canary: Path) -> Path:
    """A copy of a real sharded checkpoint whose index carries a payload, manifest re-sealed
    (an attacker controls every file of the folder)."""
    path = tmp_path / "ckpts" / sharded.name
    shutil.copytree(sharded, path)
    meta = path / "dcp" / ".metadata"
    md = dcp_safe.read_metadata(meta)
    md.planner_data = _Canary(canary)
    meta.write_bytes(pickle.dumps(md))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["dcp/.metadata"] = {"sha256": sha256_file(meta), "bytes": meta.stat().st_size}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_the_allowlist_reads_a_real_sharded_checkpoint(sharded: Path) -> None:
    md = dcp_safe.read_metadata(sharded / "dcp" / ".metadata")
    assert {"model.0.weight", "model.2.bias", "optim.param_groups.0.lr"} <= set(md.state_dict_metadata)
    assert ckpt.verify(sharded) is None


def test_a_real_sharded_checkpoint_loads_into_a_plain_model(sharded: Path, tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=0.5)
    model(torch.randn(2, 64)).sum().backward()
    opt.step()
    ckpt.load_sharded_into(sharded, model, opt)
    weights = dcp_safe.load_tensors(sharded / "dcp", "model.")
    assert torch.equal(model[0].weight.detach(), weights["0.weight"])
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)  # a bytes entry, read weights_only
    out = ckpt.export_safetensors(sharded, tmp_path / "w.safetensors")
    from safetensors.torch import load_file

    assert set(load_file(str(out))) == {"0.weight", "0.bias", "2.weight", "2.bias"}


@pytest.mark.parametrize("verb", ["verify", "export", "resume"])
def test_a_crafted_index_cannot_create_a_file(sharded: Path, tmp_path: Path, verb: str) -> None:
    canary = tmp_path / "PWNED"
    path = _craft(sharded, tmp_path, canary)
    pickle.loads((path / "dcp" / ".metadata").read_bytes())  # the payload is live: it fires here
    assert canary.exists()
    canary.unlink()
    if verb == "verify":
        res = run_lmdev("checkpoint", "verify", str(path), cwd=tmp_path)
        assert res.returncode == 1 and "CORRUPT" in res.stdout and "refused" in res.stdout, res.stdout + res.stderr
    elif verb == "export":
        res = run_lmdev("checkpoint", "export", str(path), str(tmp_path / "out.safetensors"), cwd=tmp_path)
        assert res.returncode == 2 and "refused" in res.stderr
        assert not (tmp_path / "out.safetensors").exists()
    else:
        (tmp_path / "canary.yaml").write_text(CONFIG)
        res = run_lmdev("train", str(tmp_path / "canary.yaml"), "--no-telemetry", "--resume", str(path),
                        cwd=tmp_path, env={"LMDEV_HOME": str(tmp_path / ".lmdev")})
        assert res.returncode == 2 and "refused" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not canary.exists()


def test_the_safe_planner_refuses_a_pickled_bytes_entry(sharded: Path, tmp_path: Path) -> None:
    """The optimizer's hyper-parameters are stored with torch.save; DCP's own planner loads them
    with weights_only=False. A shard whose bytes entry carries a payload is refused."""
    canary = tmp_path / "PWNED"
    path = tmp_path / sharded.name
    shutil.copytree(sharded, path)
    md = dcp_safe.read_metadata(path / "dcp" / ".metadata")
    key = next(k for k in md.storage_data if k.fqn == "optim.param_groups.0.lr")
    info = md.storage_data[key]
    shard = path / "dcp" / info.relative_path
    import io

    buf = io.BytesIO()
    torch.save(_Canary(canary), buf)
    data = shard.read_bytes()
    shard.write_bytes(data + buf.getvalue())
    info.offset, info.length = len(data), len(buf.getvalue())
    (path / "dcp" / ".metadata").write_bytes(pickle.dumps(md))
    model = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=0.5)
    with pytest.raises(dcp_safe.UnsafeCheckpoint):
        ckpt.load_sharded_into(path, model, opt)
    assert not canary.exists()


@pytest.mark.parametrize("payload", [
    b"not a pickle",
    pickle.dumps({"a": 1}),
    pickle.dumps(Path("x")),  # an allowed class, but not a Metadata
    b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.",
])
def test_odd_indexes_are_refused(tmp_path: Path, payload: bytes) -> None:
    meta = tmp_path / ".metadata"
    meta.write_bytes(payload)
    with pytest.raises(dcp_safe.UnsafeCheckpoint):
        dcp_safe.read_metadata(meta)


def test_a_shard_name_outside_the_folder_is_refused(sharded: Path, tmp_path: Path) -> None:
    md = dcp_safe.read_metadata(sharded / "dcp" / ".metadata")
    next(iter(md.storage_data.values())).relative_path = "../../etc/passwd"
    meta = tmp_path / ".metadata"
    meta.write_bytes(pickle.dumps(md))
    with pytest.raises(dcp_safe.UnsafeCheckpoint, match="outside"):
        dcp_safe.read_metadata(meta)
