"""`lmdev compress --method prune` through the real CLI: the key/value groups of a grouped-query
lmdev gpt (the shipped arithmetic example, made tiny) and the global layout of a GPT-2's heads and
channels, each written, reloaded and checked; what cannot be pruned exits 2 with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_lmdev

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FAST = ["--threads", "1", "--budget", "0.05", "--no-memory", "--steps", "2", "--json"]
TINY = ["model.n_layer=1", "model.n_embd=32", "model.block_size=16", "data.seq_len=16", "data.n_examples=400",
        "data.batch_size=8", "train.max_steps=4", "checkpoint.every=4", "train.eval_every=4",
        "schedule.warmup_steps=1", "device=cpu", "precision=fp32"]


@pytest.fixture(scope="module")
def gqa_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("gqa")
    env = {"LMDEV_HOME": str(cwd / ".lmdev"), "LMDEV_TELEMETRY": "0", "OMP_NUM_THREADS": "1"}
    sets = [a for s in TINY for a in ("--set", s)]
    r = run_lmdev("train", str(REPO / "examples/arithmetic_gpt.yaml"), *sets, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    return cwd, env


def test_heads_of_the_grouped_query_example_lose_whole_groups(gqa_run):
    cwd, env = gqa_run
    r = run_lmdev("compress", "arithmetic-gpt", "--method", "prune", "--prune", "heads", "--backend", "pruned",
                  "-o", "out/heads", *FAST, cwd=cwd, env=env)
    assert r.returncode == 0, r.stderr
    (v,) = json.loads(r.stdout)["variants"]
    assert v["settings"]["kv_groups_per_layer"] == 1 and v["settings"]["heads_per_layer"] == 2
    config = json.loads((cwd / "out/heads/manifest.json").read_text())["model"]["config"]
    assert (config["n_head"], config["n_kv_head"], config["head_dim"]) == (2, 1, 8)  # 4:2 -> 2:1, width kept

    from lmdev.compress import load

    model = load(cwd / "out/heads")
    assert model(torch.zeros(1, 16, dtype=torch.long)).shape == (1, 16, 256)

    # the variant has one key/value group left: its heads cannot be pruned again
    again = run_lmdev("compress", "out/heads", "--method", "prune", "--prune", "heads", *FAST, cwd=cwd, env=env)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "one (n_kv_head 1" in again.stderr and "--prune mlp" in again.stderr
    assert len([line for line in again.stderr.splitlines() if line.strip()]) <= 2  # the message and its hint


def test_a_gpt2_is_pruned_in_the_global_layout_by_default(tmp_path):
    import transformers

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=64,
                                                                 n_layer=2, n_head=4))
    with torch.no_grad():  # block 1 writes almost nothing: it should lose more than block 0
        for conv in (model.transformer.h[1].attn.c_proj, model.transformer.h[1].mlp.c_proj):
            conv.weight *= 0.01
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    (tmp_path / "corpus.txt").write_text("".join(f"{a} + {b} = {a + b}\n" for a in range(40) for b in range(25)))
    env = {"LMDEV_HOME": str(tmp_path / ".lmdev"), "LMDEV_TELEMETRY": "0", "OMP_NUM_THREADS": "1"}
    r = run_lmdev("compress", f"hf:{tmp_path / 'hf'}", "--data", f"text:{tmp_path / 'corpus.txt'}", "--method",
                  "prune", "--backend", "pruned", "--no-record", "-o", "out", *FAST,
                  cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    (v,) = json.loads(r.stdout)["variants"]
    heads, chans = v["settings"]["heads_per_layer"], v["settings"]["mlp_channels"]
    assert v["settings"]["layout"] == "global"  # the default for a GPT-2
    assert heads[1] < heads[0] and chans[1] < chans[0] and sum(heads) == 4 and sum(chans) == 256

    from lmdev.compress import load

    pruned = load(tmp_path / "out")
    assert [b.attn.num_heads for b in pruned.inner.transformer.h] == heads
