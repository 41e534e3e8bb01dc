"""Checkpoints: round trip, a crash mid-save, a corrupt newest checkpoint, keep-K with the best."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lmdev.errors import LmdevError
from lmdev.train import checkpoint as ckpt
from lmdev.train.config import GPTConfig, OptimizerConfig
from lmdev.train.models import GPT
from lmdev.train.optim import make_optimizer

ROOT = Path(__file__).resolve().parents[3]


def _save(folder: Path, step: int, value: float = 1.0) -> Path:
    weights = {"w": torch.full((3, 4), value), "b": torch.arange(4, dtype=torch.float32) * value}
    tensors = {"rng.torch": torch.get_rng_state(), "acc.loss": torch.tensor([value])}
    path, manifest = ckpt.save(folder, step, weights, tensors, {"step": step, "note": f"v{value}"})
    assert set(manifest) == set(ckpt.FILES)
    return path


def test_round_trip(tmp_path: Path) -> None:
    path = _save(tmp_path, 42, value=2.5)
    assert path == tmp_path / "step-00000042"
    assert sorted(p.name for p in path.iterdir()) == sorted([*ckpt.FILES, "manifest.json"])
    assert ckpt.verify(path) is None
    got = ckpt.load(path)
    assert got.step == 42 and got.state["note"] == "v2.5"
    assert torch.equal(got.weights["w"], torch.full((3, 4), 2.5))
    assert torch.equal(got.weights["b"], torch.arange(4, dtype=torch.float32) * 2.5)
    assert torch.equal(got.tensors["rng.torch"], torch.get_rng_state())
    manifest = json.loads((path / "manifest.json").read_text())
    assert all(len(entry["sha256"]) == 64 and entry["bytes"] > 0 for entry in manifest.values())
    assert not list(tmp_path.glob(".*.tmp"))


def test_no_pickle_anywhere(tmp_path: Path) -> None:
    """Every file of a checkpoint is safetensors or JSON, read as such from its bytes: a pickle
    (``\\x80`` + protocol) or torch.save's zip (``PK``) would fail these parses."""
    import struct

    path = _save(tmp_path, 1)
    assert sorted(p.name for p in path.iterdir()) == sorted([*ckpt.FILES, "manifest.json"])
    for name in ("model.safetensors", "optimizer.safetensors"):
        raw = (path / name).read_bytes()
        (header_len,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + header_len])  # safetensors: u64 length, JSON header, raw data
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        assert 8 + header_len + max(ends) == len(raw), name
    for name in ("state.json", "manifest.json"):
        assert isinstance(json.loads((path / name).read_text(encoding="utf-8")), dict)


def test_tied_weights_round_trip(tmp_path: Path) -> None:
    model = GPT(GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=8, block_size=4))
    path, _ = ckpt.save(tmp_path, 1, model.state_dict(), {}, {"step": 1})
    other = GPT(GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=8, block_size=4))
    other.load_state_dict(ckpt.load(path).weights)
    for (n, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), n
    assert other.head.weight is other.embed.weight


def test_optimizer_state_round_trip_continues_bit_exactly(tmp_path: Path) -> None:
    def setup() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        return model, make_optimizer(model, OptimizerConfig(type="adamw", lr=0.01, weight_decay=0.1), torch.device("cpu"))

    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))

    def step(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()

    model, opt = setup()
    for _ in range(3):
        step(model, opt)
    tensors, rest = ckpt.optimizer_to_flat(opt)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    path, _ = ckpt.save(tmp_path, 3, model.state_dict(), tensors, {"step": 3, "optimizer": rest})
    saved = ckpt.load(path)  # through the files: JSON and safetensors
    model2, opt2 = setup()
    model2.load_state_dict(saved.weights)
    ckpt.optimizer_from_flat(opt2, saved.tensors, saved.state["optimizer"])
    step(model, opt)
    step(model2, opt2)
    assert torch.equal(model.weight, model2.weight) and torch.equal(model.bias, model2.bias)


def _crash_in_subprocess(folder: Path, step: int, point: str) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import torch
        from pathlib import Path
        from lmdev.train import checkpoint as ckpt
        ckpt.save(Path({str(folder)!r}), {step}, {{"w": torch.full((3, 4), 9.0)}}, {{}}, {{"step": {step}}})
    """)
    env = dict(os.environ, LMDEV_TEST_CRASH_AT=point)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False, timeout=120)


def test_crash_mid_save_leaves_earlier_checkpoints_and_prune_cleans_up(tmp_path: Path) -> None:
    _save(tmp_path, 10, value=1.0)
    _save(tmp_path, 20, value=2.0)
    done = _crash_in_subprocess(tmp_path, 30, "after_weights:30")
    assert done.returncode == 137, done.stderr
    leftovers = list(tmp_path.glob(".step-00000030.*.tmp"))
    assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").exists()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000010", "step-00000020"]
    latest = ckpt.load_latest(tmp_path)
    assert latest is not None and latest.step == 20 and torch.equal(latest.weights["w"], torch.full((3, 4), 2.0))
    ckpt.prune(tmp_path, keep=5)
    assert not list(tmp_path.glob(".*.tmp"))
    assert len(ckpt.list_checkpoints(tmp_path)) == 2


def test_crash_point_with_a_step_only_fires_at_that_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMDEV_TEST_CRASH_AT", "before_rename:2")
    _save(tmp_path, 1)  # another step: no crash
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000001"]
    monkeypatch.delenv("LMDEV_TEST_CRASH_AT")
    done = _crash_in_subprocess(tmp_path, 2, "before_rename:2")
    assert done.returncode == 137
    (tmp,) = tmp_path.glob(".step-00000002.*.tmp")
    assert (tmp / "manifest.json").exists()  # complete, but never renamed into place
    assert ckpt.load_latest(tmp_path).step == 1


def test_a_failed_save_removes_its_temporary_folder(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        ckpt.save(tmp_path, 3, {"w": torch.zeros(2)}, {}, {"step": 3, "bad": object()})
    assert not list(tmp_path.iterdir())


def _flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_newest_checkpoint_falls_back_with_a_warning(tmp_path: Path) -> None:
    for s in (1, 2, 3):
        _save(tmp_path, s, value=float(s))
    _flip_byte(tmp_path / "step-00000003" / "model.safetensors")
    assert "model.safetensors" in (ckpt.verify(tmp_path / "step-00000003") or "")
    warnings: list[str] = []
    latest = ckpt.load_latest(tmp_path, warn=warnings.append)
    assert latest is not None and latest.step == 2
    assert torch.equal(latest.weights["w"], torch.full((3, 4), 2.0))
    assert len(warnings) == 1 and "step-00000003" in warnings[0] and "corrupt" in warnings[0]
    with pytest.raises(LmdevError, match="corrupt"):
        ckpt.load(tmp_path / "step-00000003")


@pytest.mark.parametrize("damage", ["truncate", "no_manifest", "no_state"])
def test_other_damage_is_detected(tmp_path: Path, damage: str) -> None:
    _save(tmp_path, 1)
    path = _save(tmp_path, 2)
    if damage == "truncate":
        data = (path / "optimizer.safetensors").read_bytes()
        (path / "optimizer.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "no_manifest":
        (path / "manifest.json").unlink()
    else:
        (path / "state.json").unlink()
    assert ckpt.verify(path) is not None
    assert ckpt.load_latest(tmp_path).step == 1


def test_load_latest_before_a_step(tmp_path: Path) -> None:
    for s in (10, 20, 30, 40):
        _save(tmp_path, s, value=float(s))
    _flip_byte(tmp_path / "step-00000020" / "model.safetensors")
    warnings: list[str] = []
    found = ckpt.load_latest(tmp_path, warn=warnings.append, before=30)
    assert found is not None and found.step == 10
    assert len(warnings) == 1 and "step-00000020" in warnings[0]  # 30 and 40 are not looked at
    assert ckpt.load_latest(tmp_path, before=10) is None
    assert ckpt.load_latest(tmp_path).step == 40


def test_all_corrupt_gives_none(tmp_path: Path) -> None:
    path = _save(tmp_path, 1)
    _flip_byte(path / "state.json", 1)
    assert ckpt.load_latest(tmp_path) is None
    assert ckpt.load_latest(tmp_path / "nothing-here") is None


def test_keep_k_protects_the_best(tmp_path: Path) -> None:
    for s in range(1, 7):
        _save(tmp_path, s * 10)
    (tmp_path / ".step-00000070.abc.tmp").mkdir()
    removed = ckpt.prune(tmp_path, keep=2, protect=tmp_path / "step-00000020")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000020", "step-00000050", "step-00000060"]
    assert sorted(p.name for p in removed) == ["step-00000010", "step-00000030", "step-00000040"]
    assert not (tmp_path / ".step-00000070.abc.tmp").exists()
    ckpt.prune(tmp_path, keep=1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000060"]


def test_steps_sort_numerically_and_other_folders_are_ignored(tmp_path: Path) -> None:
    for s in (9, 100, 10):
        _save(tmp_path, s)
    (tmp_path / "step-latest").mkdir()
    (tmp_path / "notes").mkdir()
    assert [int(p.name[5:]) for p in ckpt.list_checkpoints(tmp_path)] == [9, 10, 100]
    assert ckpt.load_latest(tmp_path).step == 100
