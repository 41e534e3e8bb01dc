"""`lmdev explain` on real trained runs: a tabular model whose label is one planted feature, and
a small GPT on the arithmetic corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmdev.errors import LmdevError
from lmdev.explain import ExplainOptions, explain_run
from tests.conftest import run_lmdev

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1200, 6))
    y = (x[:, 3] > 0).astype(int)  # the label is feature "speed" alone
    names = ["age", "height", "weight", "speed", "colour", "noise"]
    np.savetxt(d / "planted.csv", np.column_stack([x, y]), delimiter=",", header=",".join(names + ["label"]),
               comments="", fmt="%.5f")
    (d / "table.yaml").write_text(
        "name: planted\nmodel: {type: mlp, hidden: [16]}\ndata: {type: csv:planted.csv, target: label, batch_size: 64}\n"
        "optimizer: {type: adam, lr: 0.01}\ntrain: {max_steps: 150, eval_every: 150, log_every: 50}\n"
        "checkpoint: {every: 75}\ndevice: cpu\n")
    (d / "gpt.yaml").write_text(
        "name: tiny-gpt\nmodel: {type: gpt, n_layer: 1, n_head: 2, n_embd: 16, block_size: 32}\n"
        "data: {type: synthetic, batch_size: 8, seq_len: 32, n_examples: 500, val_fraction: 0.1}\n"
        "train: {max_steps: 5, eval_every: 5, log_every: 5}\ncheckpoint: {every: 5}\ndevice: cpu\n")
    env = {"LMDEV_HOME": str(d / "home"), "OMP_NUM_THREADS": "1"}
    for cfg in ("table.yaml", "gpt.yaml"):
        res = run_lmdev("train", cfg, "--no-telemetry", "--json", cwd=d, env=env)
        assert res.returncode == 0, res.stderr
    return d, env


def explain(trained, *args):
    d, env = trained
    return run_lmdev("explain", *args, cwd=d, env=env)


def explain_here(trained, ref: str, **kw):
    """explain_run in this process (the CLI's core function): cheaper than a subprocess each."""
    d, env = trained
    return explain_run(ref, ExplainOptions(home=env["LMDEV_HOME"], data_dir=d, **kw)).to_dict()


@pytest.mark.parametrize("method", ["integrated-gradients", "saliency", "occlusion"])
def test_the_planted_feature_is_the_most_important(trained, method):
    doc = explain_here(trained, "planted", method=method)
    assert doc["importance"][0]["feature"] == "speed"
    assert doc["kind"] == "table" and doc["step"] == 150 and len(doc["items"]) == 3


def test_the_cli_json_document(trained):
    res = explain(trained, "planted", "--json", "--count", "2")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert doc["schema"] == "lmdev.explain/1" and doc["importance"][0]["feature"] == "speed"
    assert len(doc["items"]) == 2 and len(doc["items"][0]["scores"]) == 6


def test_chosen_rows_an_earlier_step_and_the_html_report(trained, tmp_path):
    res = explain(trained, "planted@75", "--input", "4", "--input", "9", "--html", str(tmp_path / "e.html"))
    assert res.returncode == 0, res.stderr
    assert "at step 75" in res.stdout and "val row 4" in res.stdout and "val row 9" in res.stdout
    page = (tmp_path / "e.html").read_text()
    assert page.startswith("<!doctype html>") and "speed" in page


def test_user_errors(trained):
    for ref, kw, words in (("planted@3", {}, "no checkpoint at step 3"),
                           ("planted", {"inputs": ["99999"]}, "row number"),
                           ("planted", {"method": "attention"}, "transformer")):
        with pytest.raises(LmdevError, match=words):
            explain_here(trained, ref, **kw)
    res = explain(trained, "nope")
    assert res.returncode == 2 and "no run matches" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("method", ["integrated-gradients", "attention"])
def test_token_attributions_for_the_gpt(trained, method):
    item = explain_here(trained, "tiny-gpt", method=method, inputs=["12+34="])["items"][0]
    assert item["tokens"] == list("12+34=") and len(item["scores"]) == 6
    if method == "attention":
        assert abs(sum(item["scores"]) - 1) < 1e-4
    else:
        assert item["delta"] is not None
