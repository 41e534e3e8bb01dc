"""Lineage, media and the data check on a run's page, in a real headless Chromium (issue 18):
resumes drawn as markers on the charts, a fork's curve continuing its parent's, the lineage
line (parent, forks), histograms over steps and images at a step with a step slider, text and
tables per step, and the data-check report `lmdev train` stores with a run. Screenshots go to
test-artifacts/ui/."""

from __future__ import annotations

import pytest

from lmdev import track
from tests.integration import test_ui_browser as kit
from tests.integration.test_ui_browser import Server, chart, open_page, wait_js

browser, page = kit.browser, kit.page  # the real-Chromium fixtures (a page per test, screenshot after)

pytestmark = [pytest.mark.integration]


def _lineage(home):
    """A run resumed from its step-30 checkpoint (the points it logged past 30 replaced), and a
    fork of it from step 20, both through lmdev.init."""
    base = track.init("base", home=home, telemetry=False, flush_interval=0.05)
    for step in range(0, 50):
        base.log({"train/loss": 2.0 - step * 0.02}, step=step)
    base.finish("killed")
    again = track.init(resume=f"{base.id}@30", home=home, telemetry=False, flush_interval=0.05)
    for step in range(31, 40):
        again.log({"train/loss": 1.3 - (step - 30) * 0.01}, step=step)
    again.finish()
    fork = track.init("base-lowlr", fork=f"{base.id}@20", home=home, telemetry=False, flush_interval=0.05)
    for _ in range(21, 60):
        fork.log({"train/loss": 0.5})
    fork.finish()
    return base.id, fork.id


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-lineage") / ".lmdev"
    ids = _lineage(home)
    srv = Server(home)
    yield home, ids, srv
    srv.stop()


def test_resumes_are_marked_and_forks_listed(page, lab):
    _home, (base, fork), srv = lab
    open_page(page, f"{srv.base}/#/run/{base}")
    wait_js(page, "window.lmdev.charts.has('train/loss')")
    markers = page.evaluate("window.lmdev.charts.get('train/loss').markers")
    assert markers == [{"text": "resumed", "x": 30}]
    lineage = page.locator("#lineage").inner_text()
    assert "resumed 1 time: from step 30 (19 later points replaced)" in lineage
    assert "1 fork: base-lowlr at step 20" in lineage
    c = chart(page, "train/loss")
    assert c["data"][0] == list(range(40))  # one curve: the points past 30 replaced by the resumed ones
    page.click(f'#lineage a[data-run="{fork}"]')
    wait_js(page, f"location.hash.includes('{fork}') && window.lmdev.ready && window.lmdev.charts.has('train/loss')")
    assert "forked from base at step 20" in page.locator("#lineage").inner_text()
    assert {"text": "fork of base", "x": 20} in page.evaluate("window.lmdev.charts.get('train/loss').markers")


def test_a_fork_is_drawn_continuing_its_parent(page, lab):
    _home, (base, fork), srv = lab
    open_page(page, f"{srv.base}/#/run/{fork}?smoothing=0")
    wait_js(page, "window.lmdev.charts.has('train/loss')")
    c = chart(page, "train/loss")
    assert c["labels"] == ["parent", "value"]
    steps, parent, own = c["data"]
    assert steps == list(range(60))
    assert parent[0] == pytest.approx(2.0) and parent[20] == pytest.approx(1.6)  # the parent's points up to the fork
    assert all(v is None for v in parent[22:]) and all(v is None for v in own[:21])
    assert own[21] == own[59] == 0.5
    # on Compare the fork is drawn the same way beside its parent
    open_page(page, f"{srv.base}/#/compare?runs={base},{fork}&keys=train/loss&smoothing=0")
    wait_js(page, "window.lmdev.charts.has('compare')")
    assert chart(page, "compare")["labels"] == ["base", "base-lowlr (parent)", "base-lowlr"]
    assert page.evaluate("window.lmdev.charts.get('compare').markers") == [{"text": "fork: base-lowlr", "x": 20}]


def test_the_data_check_report_is_shown_with_the_run(page, tmp_path):
    from lmdev.data.check import CheckOptions, check

    home = tmp_path / ".lmdev"
    rows = [f"{i % 7},{(i * 3) % 11},{i % 2}" for i in range(60)]
    (tmp_path / "train.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "val.csv").write_text("a,b,label\n" + "\n".join(rows[:20]) + "\n")  # all of val is in train
    run = track.init("checked", home=home, telemetry=False)
    run.log({"train/loss": 1.0}, step=0)
    out = run.dir / "data-check"
    report = check(tmp_path / "train.csv", CheckOptions(val=str(tmp_path / "val.csv"), out_dir=out, fast=True))
    run.log_artifact(out / "report.json", kind="data-check")
    run.summary["best_val_acc"] = 0.875  # what run.summary holds is shown beside the config
    run.finish()
    assert any(f.id == "split.overlap" for f in report.findings)
    srv = Server(home)
    try:
        open_page(page, f"{srv.base}/#/run/{run.id}")
        wait_js(page, "!document.querySelector('button[data-tab=\"Data check\"]').hidden")
        page.click('button[data-tab="Data check"]')
        status = page.locator("#data-check-status").inner_text()
        assert report.to_dict()["status"] in status
        findings = page.locator("#data-check-findings").inner_text()
        assert "split.overlap" in findings and "val" in findings
        assert page.locator("#data-check-splits tbody tr").count() == 2
        page.click('button[data-tab="Config"]')
        assert "best_val_acc\t0.875" in page.locator("#run-summary").inner_text()
    finally:
        srv.stop()



def test_compression_page_lists_the_recorded_variants(page, lab):
    home, (base, _fork), srv = lab
    # a variant as `lmdev compress --out` records it (compress/core.py: start_run)
    v = track.init("compress-torchao", home=home, telemetry=False, parent=base, tags=["lmdev-compress", "quantize"],
                   config={"compress": {"method": "quantize", "backend": "torchao", "bits": 8},
                           "source": {"ref": base}, "target": "latency", "max_drop": 0.02})
    v.log({"compress/file_bytes": 3.0 * 2**20, "compress/size_ratio": 3.9, "compress/speedup_b1": 2.4,
           "compress/latency_b1_p50_ms": 1.25}, step=0)
    v.finish()
    open_page(page, f"{srv.base}/#/compression")
    row = page.locator(f'#compress-table tr[data-run="{v.id}"]').inner_text()
    assert "compress-torchao" in row and "base" in row and "quantize / torchao" in row and "bits=8" in row
    assert "3.9×" in row and "2.4×" in row and "3.0 MiB" in row
    open_page(page, f"{srv.base}/#/run/{base}")
    assert "1 compressed variant: compress-torchao" in page.locator("#lineage").inner_text()
    open_page(page, f"{srv.base}/#/run/{v.id}")
    assert "compressed from base" in page.locator("#lineage").inner_text()


def test_media_histograms_images_text_and_tables_with_a_step_slider(page, tmp_path):
    import numpy as np

    from lmdev.track.media import Histogram, Image, Table, Text

    home = tmp_path / ".lmdev"
    run = track.init("media", home=home, telemetry=False)
    rng = np.random.default_rng(0)
    for step in range(0, 50, 10):
        img = np.zeros((32, 32, 3), dtype=np.uint8)
        img[:, : 6 * (step // 10 + 1)] = 255  # a white band that widens with the step
        run.log({"train/loss": 1.0 / (step + 1), "weights/fc1": Histogram(rng.normal(step / 10, 1.0, 500), bins=16),
                 "samples": Image(img, caption=f"band at step {step}"), "notes": Text(f"note {step}"),
                 "preds": Table(["input", "label"], [[f"x{step}", step % 3]])}, step=step)
    run.finish()
    srv = Server(home)
    try:
        open_page(page, f"{srv.base}/#/run/{run.id}")
        page.click('button[data-tab="Media"]')
        wait_js(page, "window.lmdev.media && ['weights/fc1', 'samples', 'notes', 'preds'].every(k => window.lmdev.media[k])")
        media = page.evaluate("window.lmdev.media")
        hist = media["weights/fc1"]
        assert hist["kind"] == "histogram" and hist["steps"] == [0, 10, 20, 30, 40] and hist["columns"] == 5
        assert sum(hist["counts"]) == 500 and hist["step"] == 40  # the latest step at first
        assert media["samples"]["step"] == 40 and media["preds"]["step"] == 40
        # the slider moves every view to another step
        for key in ("weights/fc1", "samples", "preds"):
            page.evaluate(f"""(() => {{ const s = document.querySelector('.media-step[data-key="{key}"]'); s.value = '1';
                s.dispatchEvent(new Event('input', {{ bubbles: true }})); }})()""")
        media = page.evaluate("window.lmdev.media")
        assert media["weights/fc1"]["step"] == 10 and media["samples"]["step"] == 10
        card = page.locator('.card.media[data-key="samples"]')
        assert "band at step 10" in card.inner_text()
        img = card.locator("img")
        wait_js(page, "(() => { const i = document.querySelector('.card.media[data-key=\"samples\"] img'); "
                      "return i && i.complete && i.naturalWidth === 32; })()")
        # the PNG is decoded: the band 12 pixels wide at step 10
        assert img.evaluate("i => { const c = document.createElement('canvas'); c.width = 32; c.height = 32; "
                            "const x = c.getContext('2d'); x.drawImage(i, 0, 0); const d = x.getImageData(0, 16, 32, 1).data; "
                            "return [d[11 * 4], d[12 * 4]]; }") == [255, 0]
        assert "x10" in page.locator('.card.media[data-key="preds"]').inner_text()
        notes = page.locator('.card.media[data-key="notes"] tbody tr').evaluate_all("rs => rs.map(r => r.innerText)")
        assert len(notes) == 5 and "note 40" in notes[0] and "note 0" in notes[-1]
    finally:
        srv.stop()
