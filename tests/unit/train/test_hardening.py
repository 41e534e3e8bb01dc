"""Bad input to training answered with one LmdevError naming the problem (issue 11): configs
that are binary, UTF-16, huge, devices or YAML bombs; numbers that are not finite; damaged
manifests; full disks; special files as outputs; odd factory arguments; non-UTF-8 git output."""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from lmdev.errors import LmdevError
from lmdev.fsutil import atomic_write_text
from lmdev.train import checkpoint as ckpt
from lmdev.train.config import load_config

# ----------------------------------------------------------------------------- config files


def _config(tmp_path: Path, data: bytes, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data, needle", [
    (b"\xff\xfen\x00a\x00m\x00e\x00:\x00 \x00x\x00", "not UTF-8 text"),  # UTF-16 with its BOM
    ("name: caf\u00e9\n".encode("utf-16-be"), "not UTF-8 text"),
    (bytes(range(256)) * 4, "not UTF-8 text"),
    (b"name: \xc3\x28\n", "not UTF-8 text"),
])
def test_binary_and_utf16_configs_are_refused(tmp_path: Path, data: bytes, needle: str) -> None:
    with pytest.raises(LmdevError, match=needle):
        load_config(str(_config(tmp_path, data)))


def test_a_utf8_bom_is_fine(tmp_path: Path) -> None:
    assert load_config(str(_config(tmp_path, "\ufeffname: bom\n".encode()))).name == "bom"


@pytest.mark.parametrize("path, needle", [("/dev/zero", "not a regular file"), ("/", "a folder")])
def test_devices_and_folders_are_refused_before_reading(path: str, needle: str) -> None:
    with pytest.raises(LmdevError, match=needle):
        load_config(path)


def test_a_huge_config_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(64 * 1024**2)  # sparse: no disk used
    with pytest.raises(LmdevError, match="more than"):
        load_config(str(big))


@pytest.mark.parametrize("text, field", [
    ("optimizer: {lr: 1e400}", "optimizer.lr"),
    ("optimizer: {lr: Infinity}", "optimizer.lr"),
    ("optimizer: {lr: .inf}", "optimizer.lr"),
    ("optimizer: {lr: .nan}", "optimizer.lr"),
    ("optimizer: {lr: -0.1}", "optimizer.lr"),
    ("optimizer: {betas: [0.9, -1]}", "optimizer.betas.1"),
    ("optimizer: {weight_decay: .nan}", "optimizer.weight_decay"),
    ("train: {grad_clip: .inf}", "train.grad_clip"),
    ("model: {type: gpt, rope_theta: -5}", "model.rope_theta"),
    ("loss: {type: huber, huber_delta: .nan}", "loss.huber_delta"),
])
def test_non_finite_and_negative_numbers_are_refused_with_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(LmdevError) as info:
        load_config(str(_config(tmp_path, text.encode())))
    assert f"  {field}: " in info.value.message, info.value.message


def test_a_non_finite_override_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LmdevError, match="optimizer.lr"):
        load_config(str(_config(tmp_path, b"name: x\n")), ["optimizer.lr=1e400"])


def _laughs(levels: int = 9) -> str:
    lines = ["model:", "  type: python:m:f", "  kwargs:", "    a0: &a0 [" + ",".join(['"lol"'] * 10) + "]"]
    lines += [f"    a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LmdevError, match="YAML aliases"):
        load_config(str(_config(tmp_path, _laughs().encode())))


def test_a_billion_laughs_in_an_override_is_refused(tmp_path: Path) -> None:
    value = "[" + ",".join(["&x" + str(i) + " [" + ",".join(["*x" + str(i - 1)] * 10) + "]" if i else
                            "&x0 [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]" for i in range(8)]) + "]"
    with pytest.raises(LmdevError, match="YAML aliases"):
        load_config(str(_config(tmp_path, b"name: x\n")), [f"model.kwargs.a={value}"])


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LmdevError, match="refers to itself"):
        load_config(str(_config(tmp_path, b"model: {type: 'python:m:f', kwargs: {a: &a [*a]}}\n")))


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    cfg = load_config(str(_config(tmp_path, b"model: {type: 'python:m:f', kwargs: {a: &a [1, 2], b: *a}}\n")))
    assert cfg.model.kwargs == {"a": [1, 2], "b": [1, 2]}


def test_deeply_nested_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LmdevError, match="nested too deeply|not valid JSON"):
        load_config(str(_config(tmp_path, b"{\"a\":" * 100000 + b"1" + b"}" * 100000, "c.json")))


# ----------------------------------------------------------------------------- checkpoints


def _save(folder: Path, step: int = 1) -> Path:
    path, _ = ckpt.save(folder, step, {"w": torch.ones(3)}, {"rng.torch": torch.get_rng_state()},
                        {"step": step})
    return path


@pytest.mark.parametrize("manifest", [
    b"[1, 2, 3]",
    b"\xff\xfe{",
    b'{"state.json": "x"}',
    b'{"state.json": {"sha256": 5, "bytes": "many"}}',
    b'{"../../etc/passwd": {"sha256": "00", "bytes": 1}}',
    b'{"/etc/passwd": {"sha256": "00", "bytes": 1}}',
    b'{"state.json": {"sha256": "00", "bytes": true}}',
    b"null",
])
def test_a_malformed_manifest_is_reported_not_raised(tmp_path: Path, manifest: bytes) -> None:
    path = _save(tmp_path)
    (path / "manifest.json").write_bytes(manifest)
    problem = ckpt.verify(path)
    assert problem and "manifest.json" in problem
    with pytest.raises(LmdevError):
        ckpt.load(path)
    assert ckpt.load_latest(tmp_path) is None


def test_a_state_without_a_step_is_refused(tmp_path: Path) -> None:
    path, _ = ckpt.save(tmp_path, 1, {"w": torch.ones(3)}, {}, {"note": "no step"})
    with pytest.raises(LmdevError, match="state.json"):
        ckpt.load(path)


def test_a_full_disk_during_a_checkpoint_save_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors import SafetensorError

    good = _save(tmp_path, 1)

    def full(*args: object, **kwargs: object) -> None:
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(ckpt.SaveError, match="No space left on device") as info:
        _save(tmp_path, 2)
    assert info.value.exit_code == 1 and "--resume" in (info.value.hint or "")
    assert ckpt.list_checkpoints(tmp_path) == [good] and ckpt.verify(good) is None
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_real_full_disk_during_a_checkpoint_save(tmp_path: Path) -> None:
    """On a 256 KiB tmpfs, where this machine lets the test mount one."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        good, _ = ckpt.save(mnt, 1, {"w": torch.ones(8)}, {}, {"step": 1})
        with pytest.raises(ckpt.SaveError, match="No space left"):
            ckpt.save(mnt, 2, {"w": torch.ones(200_000)}, {}, {"step": 2})
        assert ckpt.list_checkpoints(mnt) == [good] and ckpt.verify(good) is None
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# ----------------------------------------------------------------------------- output files


def test_atomic_writes_refuse_what_is_not_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "real.txt"
    target.write_text("keep")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    for path, needle in ((tmp_path, "a folder"), (Path("/"), "a folder"), (link, "symbolic link")):
        with pytest.raises(LmdevError, match=needle):
            atomic_write_text(path, "new")
    assert target.read_text() == "keep" and link.is_symlink()
    if os.path.exists("/dev/full"):
        with pytest.raises(LmdevError, match="special file"):
            atomic_write_text("/dev/full", "x")
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)  # still the device node
    atomic_write_text(target, "new")  # a regular file is replaced as before
    assert target.read_text() == "new"


def test_a_full_disk_in_an_atomic_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("old")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(LmdevError, match="No space left"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


# ----------------------------------------------------------------------------- results and models


def test_json_results_carry_null_and_a_reason_for_non_finite_values() -> None:
    from lmdev.train.trainer import TrainResult

    doc = TrainResult(None, "diverged", 3, train={"train/loss": math.nan}, val={"val/loss": math.inf}).to_dict()
    text = json.dumps(doc, allow_nan=False)
    back = json.loads(text)
    assert back["train"]["train/loss"] is None and back["val"]["val/loss"] is None
    assert back["non_finite"] == {"train/loss": "nan", "val/loss": "inf"}


def test_bad_factory_kwargs_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmdev.train.config import PythonModelConfig
    from lmdev.train.models import DataShape, build_model

    (tmp_path / "lmdev_test_factories.py").write_text(
        "import torch\n\ndef build(width=4):\n    return torch.nn.Linear(64, width)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    shape = DataShape("table", (64,), 10, "classification")
    with pytest.raises(LmdevError, match=r"model.kwargs do not fit .*bogus.*it takes: width"):
        build_model(PythonModelConfig(type="python:lmdev_test_factories:build", kwargs={"bogus": 1}), shape)
    model = build_model(PythonModelConfig(type="python:lmdev_test_factories:build", kwargs={"width": 10}), shape)
    assert model.out_features == 10


def test_non_utf8_git_output_is_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lmdev.track as track
    from lmdev.track import Store

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.email=a@b", "-c", "user.name=n"]
    name = os.fsdecode(b"f\xff")
    for cmd in (["init", "-q"], ["config", "core.quotepath", "false"], ["checkout", "-q", "-b", os.fsdecode(b"br\xfe")]):
        subprocess.run(git + cmd, cwd=repo, check=True)
    (repo / name).write_text("a")
    subprocess.run(git + ["add", "-A"], cwd=repo, check=True)
    subprocess.run(git + ["commit", "-qm", "x"], cwd=repo, check=True)
    (repo / name).write_text("b")  # `git status` now names a non-UTF-8 file
    monkeypatch.chdir(repo)
    run = track.init("git", home=tmp_path / "home", telemetry=False)
    run.finish()
    with Store(tmp_path / "home") as store:
        info = store.get_run(run.id)
    assert info.git_commit and len(info.git_commit) == 40 and info.git_dirty is True
