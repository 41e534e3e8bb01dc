"""`lmdev explain` keeps its result with the run and the dashboard shows it (issue 19): a real
tabular run explained by the CLI (feature importance as bars, the planted feature first), and a
small GPT and a digits model explained in-process (token attributions as coloured tokens, an
8x8 heat map), in a real headless Chromium. Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmdev.explain import ExplainOptions, explain_run, record_explanation
from tests.conftest import run_lmdev
from tests.integration import test_ui_browser as kit
from tests.integration.test_ui_browser import Server, open_page, wait_js

browser, page = kit.browser, kit.page  # the real-Chromium fixtures (a page per test, screenshot after)

pytestmark = [pytest.mark.integration]

NAMES = ["age", "height", "weight", "speed", "colour", "noise"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("ui-explain")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6))
    y = (x[:, 3] > 0).astype(int)  # the label is feature "speed" alone
    np.savetxt(d / "planted.csv", np.column_stack([x, y]), delimiter=",", header=",".join(NAMES + ["label"]),
               comments="", fmt="%.5f")
    (d / "table.yaml").write_text(
        "name: planted\nmodel: {type: mlp, hidden: [16]}\ndata: {type: csv:planted.csv, target: label, batch_size: 64}\n"
        "optimizer: {type: adam, lr: 0.01}\ntrain: {max_steps: 100, eval_every: 100, log_every: 50}\n"
        "checkpoint: {every: 100}\ndevice: cpu\n")
    (d / "gpt.yaml").write_text(
        "name: tiny-gpt\nmodel: {type: gpt, n_layer: 1, n_head: 2, n_embd: 16, block_size: 32}\n"
        "data: {type: synthetic, batch_size: 8, seq_len: 32, n_examples: 200, val_fraction: 0.1}\n"
        "train: {max_steps: 3, eval_every: 3, log_every: 3}\ncheckpoint: {every: 3}\ndevice: cpu\n")
    (d / "digits.yaml").write_text(
        "name: digits\nmodel: {type: mlp, hidden: [16]}\ndata: {type: digits, batch_size: 32}\n"
        "train: {max_steps: 5, eval_every: 5, log_every: 5}\ncheckpoint: {every: 5}\ndevice: cpu\n")
    env = {"LMDEV_HOME": str(d / "home"), "OMP_NUM_THREADS": "1"}
    for cfg in ("table.yaml", "gpt.yaml", "digits.yaml"):
        res = run_lmdev("train", cfg, "--no-telemetry", "--json", cwd=d, env=env)
        assert res.returncode == 0, res.stderr
    return d, env


def test_explain_keeps_its_result_and_the_dashboard_shows_it(page, trained):
    d, env = trained
    home = d / "home"
    res = run_lmdev("explain", "planted", "--count", "2", "--json", cwd=d, env=env)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    kept = home / "runs" / doc["run_id"] / "explain" / "100-integrated-gradients.json"
    assert json.loads(kept.read_text()) == doc  # what --json printed is what the run keeps
    assert run_lmdev("explain", "planted", "--method", "saliency", "--no-record", "--json", cwd=d, env=env).returncode == 0
    assert not (kept.parent / "100-saliency.json").exists()
    gpt = explain_run("tiny-gpt", ExplainOptions(home=home, data_dir=d, count=1, method="saliency"))
    record_explanation(gpt, home)
    digits = explain_run("digits", ExplainOptions(home=home, data_dir=d, count=1, method="occlusion"))
    record_explanation(digits, home)
    srv = Server(home)
    try:
        open_page(page, f"{srv.base}/#/run/{doc['run_id']}")
        wait_js(page, "!document.querySelector('button[data-tab=\"Explanations\"]').hidden")
        page.click('button[data-tab="Explanations"]')
        card = page.locator("#pane-explanations .explanation")
        assert card.count() == 1
        assert "integrated-gradients at step 100" in card.locator("h2").inner_text()
        bars = card.locator(".xbars.importance .xbar")
        assert bars.count() == 6 and bars.first.get_attribute("data-name") == "speed"  # the planted feature first
        widths = page.evaluate("[...document.querySelectorAll('#pane-explanations .importance .xbar-fill')]"
                               ".map((b) => parseFloat(b.style.width))")
        assert widths[0] == 100 and all(w < 100 for w in widths[1:])
        assert card.locator(".xitem").count() == 2 and "val row" in card.locator(".xitem").first.inner_text()

        open_page(page, f"{srv.base}/#/run/{gpt.run_id}")
        wait_js(page, "!document.querySelector('button[data-tab=\"Explanations\"]').hidden")
        page.click('button[data-tab="Explanations"]')
        tokens = page.locator("#pane-explanations .xtoken")
        assert tokens.count() == len(gpt.items[0].tokens)
        shaded = page.evaluate("[...document.querySelectorAll('#pane-explanations .xtoken')]"
                               ".filter((t) => t.style.background.startsWith('rgba')).length")
        assert shaded == tokens.count()  # every token carries its attribution as a background
        assert "saliency at step 3" in page.locator("#pane-explanations h2").inner_text()

        open_page(page, f"{srv.base}/#/run/{digits.run_id}")  # an image: an 8x8 heat map grid
        wait_js(page, "!document.querySelector('button[data-tab=\"Explanations\"]').hidden")
        page.click('button[data-tab="Explanations"]')
        grid = page.locator("#pane-explanations .xgrid")
        assert grid.locator(".xcell").count() == 64
        assert page.evaluate("document.querySelector('#pane-explanations .xgrid').style.gridTemplateColumns") \
            == "repeat(8, 14px)"
        assert page.locator("#pane-explanations .xbars.importance .xbar").count() == 15  # the top pixels
    finally:
        srv.stop()
