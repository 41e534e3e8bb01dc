"""`lmdev compress` with torch-fp8 and 2:4 sparsity end to end: a real training run, the real CLI,
the variant measured with its verdict in the JSON report, written and read back; a model 2:4
does not apply to exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_lmdev

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FAST = ["--threads", "1", "--budget", "0.05", "--no-memory", "--json"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("lowprec")
    env = {"LMDEV_HOME": str(cwd / ".lmdev"), "LMDEV_TELEMETRY": "0", "OMP_NUM_THREADS": "1"}
    r = run_lmdev("train", str(REPO / "examples/digits_mlp.yaml"), "--set", "train.max_steps=150",
                  "--set", "checkpoint.every=150", cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    return cwd, env


def _digits():
    from lmdev.train.data import load_digits

    x, y = load_digits()
    return torch.from_numpy(x / 16.0).float(), torch.from_numpy(y)


def test_fp8_variant_is_measured_judged_written_and_reads_back(trained):
    cwd, env = trained
    r = run_lmdev("compress", "digits-mlp", "--method", "quantize", "--backend", "torch-fp8", "-o", "out/fp8",
                  *FAST, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    (v,) = doc["variants"]
    assert v["backend"] == "torch-fp8" and v["error"] is None and v["verdict"]
    assert v["settings"]["dtype"] == "fp8-e4m3" and "_scaled_mm" in v["settings"]["kernel"]
    assert v["size_ratio"] < 0.35 and f"{v['size_ratio']:.2f}x size" in v["verdict"]
    # the verdict is read off the measurement: "faster" only when measured faster
    assert ("faster" in v["verdict"]) == v["faster"] and (not v["faster"]) == ("no speed-up" in v["verdict"])
    assert v["measurement"]["quality"]["top1_agreement"] > 0.9
    assert doc["chosen"] == "torch-fp8" and doc["out"]
    from lmdev.compress import load

    x, y = _digits()
    assert (load(cwd / "out/fp8")(x).argmax(1) == y).float().mean() > 0.75


def test_2of4_variant_is_measured_as_size_only_written_and_reads_back(trained):
    cwd, env = trained
    r = run_lmdev("compress", "digits-mlp", "--method", "prune", "--prune", "2:4", "--steps", "40",
                  "--backend", "sparse-2:4", "-o", "out/s24", *FAST, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    (v,) = doc["variants"]
    assert v["backend"] == "sparse-2:4" and v["method"] == "prune" and v["settings"]["finetune_steps"] == 40
    assert v["size_ratio"] < 0.62 and "size" in v["verdict"]
    assert ("faster" in v["verdict"]) == v["faster"]
    assert any("no sparse kernel on this machine: size only" in n for n in v["notes"])
    from lmdev.compress import load

    model = load(cwd / "out/s24")
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            assert bool(((m.weight.reshape(-1, 4) != 0).sum(1) == 2).all())
    x, y = _digits()
    assert (model(x).argmax(1) == y).float().mean() > 0.6


def test_2of4_on_a_model_without_an_eligible_layer_exits_2(trained, tmp_path):
    from lmdev.compress.core import baseline_variant
    from lmdev.compress.output import write_variant
    from tests.unit.compress.conftest import make_source

    cwd, env = trained
    csv = tmp_path / "three.csv"
    csv.write_text("a,b,c,y\n" + "".join(f"{i % 3},{i % 5},{i % 7},{i % 2}\n" for i in range(60)))
    s = make_source({"type": "mlp", "hidden": [6]}, {"type": f"csv:{csv}", "batch_size": 8})  # 3 -> 6 -> 2
    write_variant(baseline_variant(s), tmp_path / "three", s)  # an fp32 OUT folder is a SOURCE too
    r = run_lmdev("compress", str(tmp_path / "three"), "--method", "prune", "--prune", "2:4", "-o", "out/none",
                  "--json", cwd=cwd, env=env)
    assert r.returncode == 2 and "multiple of 4" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not r.stdout
    assert not (cwd / "out/none").exists()
