"""`lmdev compress hf:PATH --method prune` on a tiny transformers GPT-2 through the real CLI: heads
and MLP channels pruned, fine-tuned on the --data text, written, and read back by
lmdev.compress.load. (Refusals, e.g. pruning every head, are unit tests: each CLI start here costs
about 10 s of imports.)"""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_lmdev

pytestmark = pytest.mark.integration

FAST = ["--threads", "1", "--budget", "0.05", "--no-memory", "--no-record"]


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    import transformers

    folder = tmp_path_factory.mktemp("gpt2tiny")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=256, n_positions=32, n_embd=64, n_layer=2, n_head=4)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(folder, safe_serialization=True)
    # a small byte-level text (300 training and 75 held-out sequences of 32 bytes) keeps the run short
    (folder.parent / "corpus.txt").write_text("".join(f"{a} + {b} = {a + b}\n" for a in range(40) for b in range(25)))
    return folder


def test_prune_heads_and_channels_of_an_hf_gpt2(gpt2_folder, tmp_path):
    corpus = gpt2_folder.parent / "corpus.txt"
    r = run_lmdev("compress", f"hf:{gpt2_folder}", "--data", f"text:{corpus}", "--method", "prune", "--ratio", "0.5",
                  "--prune-layout", "uniform", "--steps", "4", "--backend", "pruned", "-o", "out", "--json", *FAST, cwd=tmp_path,
                  env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    (v,) = doc["variants"]
    assert doc["chosen"] == "pruned" and v["settings"]["parts"] == ["heads", "mlp"]
    assert v["settings"]["heads_per_layer"] == 2 and v["settings"]["mlp_channels"] == 128
    assert v["measurement"]["file_bytes"] < doc["baseline"]["measurement"]["file_bytes"]
    assert v["measurement"]["quality"]["perplexity"] is not None

    from lmdev.compress import load

    model = load(tmp_path / "out")
    attn = model.inner.transformer.h[0].attn
    assert attn.c_attn.weight.shape == (64, 3 * 32) and model.inner.transformer.h[0].mlp.c_fc.weight.shape == (64, 128)
    assert model(torch.zeros(1, 8, dtype=torch.long)).shape == (1, 8, 256)



def test_prune_layers_of_an_hf_gpt2(gpt2_folder, tmp_path):
    corpus = gpt2_folder.parent / "corpus.txt"
    r = run_lmdev("compress", f"hf:{gpt2_folder}", "--data", f"text:{corpus}", "--method", "prune", "--prune",
                  "layers", "--ratio", "0.5", "--steps", "2", "--backend", "pruned", "-o", "out", "--json", *FAST,
                  cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    (v,) = json.loads(r.stdout)["variants"]
    assert v["settings"]["parts"] == ["layers"] and v["settings"]["n_layer"] == 1
    assert len(v["settings"]["layers_removed"]) == 1 and len(v["settings"]["layer_scores"]) == 2

    from lmdev.compress import load

    model = load(tmp_path / "out")
    assert len(model.inner.transformer.h) == 1 and model.inner.config.n_layer == 1
