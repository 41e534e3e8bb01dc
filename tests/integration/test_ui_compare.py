"""The Compare and Hyper-parameters pages in a real headless Chromium (issue 18): several runs and
several metrics on one chart, a legend that hides and shows series, every setting in the address
(surviving a reload), a drag-zoom that survives live updates, and the runs' configs against a
final metric. Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from tests.integration import test_ui_browser as kit
from tests.integration.test_ui_browser import LiveWriter, Server, chart, open_page, wait_js

from tests.unit.ui.helpers import make_sweep

browser, page = kit.browser, kit.page  # the real-Chromium fixtures (a page per test, screenshot after)

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-compare") / ".lmdev"
    ids = make_sweep(home)
    srv = Server(home)
    yield home, ids, srv
    srv.stop()


def _series_shown(pg) -> dict[str, bool]:
    return pg.evaluate("(() => { const c = window.lmdev.charts.get('compare'); "
                       "return Object.fromEntries(c.plot.series.slice(1).map(s => [s.label, s.show])); })()")


def test_compare_draws_several_runs_and_metrics_with_a_clickable_legend(page, sweep):
    _home, ids, srv = sweep
    runs = ",".join([ids["lr-0.0001"], ids["lr-0.01"], ids["lr-0.1"]])
    q = urllib.parse.urlencode({"runs": runs, "keys": "val/loss,train/loss", "smoothing": "0"})
    open_page(page, f"{srv.base}/#/compare?{q}")
    wait_js(page, "window.lmdev.charts.has('compare')")
    c = chart(page, "compare")
    mains = {"lr-0.0001 · val/loss", "lr-0.01 · val/loss", "lr-0.1 · val/loss",
             "lr-0.0001 · train/loss", "lr-0.01 · train/loss", "lr-0.1 · train/loss"}
    assert set(c["labels"]) == mains  # smoothing 0: one line each, no raw copy
    # the Keras run's val_loss is drawn as val/loss, its last value where it was logged
    keras = c["data"][1 + c["labels"].index("lr-0.01 · val/loss")]
    assert keras[c["data"][0].index(100)] == pytest.approx(0.8 + 2.2 * 2.718281828459045 ** -5)
    # one colour per run, one dash per metric
    styles = page.evaluate("window.lmdev.charts.get('compare').plot.series.slice(1)"
                           ".map(s => [s.label, s._stroke || s.stroke, JSON.stringify(s.dash || null)])")
    by = {label: (stroke, dash) for label, stroke, dash in styles}
    assert by["lr-0.1 · val/loss"][0] == by["lr-0.1 · train/loss"][0] != by["lr-0.01 · val/loss"][0]
    assert by["lr-0.1 · val/loss"][1] != by["lr-0.1 · train/loss"][1]
    # the legend hides a series and shows it again; what is hidden is in the address
    page.click('#compare-legend .legend-item[data-label="lr-0.1 · train/loss"]')
    assert _series_shown(page)["lr-0.1 · train/loss"] is False
    assert "hide=lr-0.1" in page.url
    page.click('#compare-legend .legend-item[data-label="lr-0.01 · val/loss"]')
    page.click('#compare-legend .legend-item[data-label="lr-0.1 · train/loss"]')
    shown = _series_shown(page)
    assert shown["lr-0.1 · train/loss"] is True and shown["lr-0.01 · val/loss"] is False
    # settings: smoothing, log scale, x axis; then a reload shows the same chart
    page.evaluate("""(() => { const s = document.getElementById('smoothing'); s.value = '0.7';
        s.dispatchEvent(new Event('input', { bubbles: true })); })()""")
    page.check("#logscale")
    page.select_option("#xaxis", "rel")
    page.reload()
    wait_js(page, "window.lmdev.ready && window.lmdev.charts.has('compare')")
    assert page.input_value("#smoothing") == "0.7" and page.is_checked("#logscale")
    assert page.input_value("#xaxis") == "rel"
    after = chart(page, "compare")
    assert {label for label in after["labels"] if not label.endswith(" raw")} == mains
    assert _series_shown(page)["lr-0.01 · val/loss"] is False
    assert page.locator('#compare-legend .legend-item.off').count() == 1
    assert page.evaluate("window.lmdev.charts.get('compare').plot.scales.y.distr") == 3
    assert "optimizer.lr" in page.locator("#diff-table").inner_text()


def test_compare_adds_and_removes_metrics_and_runs(page, sweep):
    _home, ids, srv = sweep
    open_page(page, f"{srv.base}/#/compare?runs={ids['lr-0.0001']},{ids['lr-0.001']}")
    wait_js(page, "window.lmdev.charts.has('compare')")
    assert chart(page, "compare")["labels"] == ["lr-0.0001 raw", "lr-0.0001", "lr-0.001 raw", "lr-0.001"]
    page.select_option("#compare-add-key", "train/lr")
    wait_js(page, "window.lmdev.charts.get('compare').labels.includes('lr-0.001 · train/lr')")
    assert "keys=val%2Floss%2Ctrain%2Flr" in page.url or "keys=val/loss,train/lr" in urllib.parse.unquote(page.url)
    # a schedule is never smoothed, even beside a smoothed loss
    assert "lr-0.001 · train/lr raw" not in chart(page, "compare")["labels"]
    wait_js(page, "document.querySelectorAll('#compare-add-run option').length > 1")
    page.select_option("#compare-add-run", ids["lr-0.1"])
    wait_js(page, "window.lmdev.ready && window.lmdev.charts.has('compare') && "
                  "window.lmdev.charts.get('compare').labels.includes('lr-0.1 · train/lr')")
    assert ids["lr-0.1"] in urllib.parse.unquote(page.url)
    page.click(f'#compare-runs .chip[data-run="{ids["lr-0.0001"]}"] .chip-x')
    wait_js(page, "window.lmdev.ready && window.lmdev.charts.has('compare') && "
                  "!window.lmdev.charts.get('compare').labels.some(l => l.startsWith('lr-0.0001'))")


def _scales(pg) -> list[float]:
    return pg.evaluate("(() => { const s = window.lmdev.charts.get('compare').plot.scales; "
                       "return [s.x.min, s.x.max, s.y.min, s.y.max]; })()")


def test_a_compare_zoom_survives_live_updates(page, sweep):
    home, ids, srv = sweep
    with LiveWriter(home, "live-cmp", "val/loss", more=20, project="live") as writer:
        live = writer.id
        open_page(page, f"{srv.base}/#/compare?runs={live},{ids['lr-0.0001']}&keys=val/loss")
        wait_js(page, "window.lmdev.charts.has('compare')")
        box = page.locator('.card[data-key="compare"] .u-over').bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.4, y, steps=5)
        page.mouse.up()
        zoomed = _scales(page)
        writer.advance()
        wait_js(page, "Array.from(window.lmdev.charts.get('compare').data[0]).includes(119)", timeout=15)
        page.wait_for_timeout(200)
        assert _scales(page) == zoomed
        writer.finish()


def test_hyper_parameters_against_a_final_metric(page, sweep):
    _home, ids, srv = sweep
    open_page(page, f"{srv.base}/#/hparams?project=sweep&metric=val/loss")
    hp = page.evaluate("window.lmdev.hparams")
    axes = {a["key"]: a for a in hp["axes"]}
    assert set(axes) == {"optimizer.lr", "model.width", "val/loss"}  # seed and optimizer.name do not vary
    assert axes["optimizer.lr"]["log"] and axes["optimizer.lr"]["kind"] == "number"
    assert set(hp["runs"]) == set(ids.values())  # the Keras run (val_loss) included
    rows = page.locator("#hp-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.run)")
    assert rows == [ids["lr-0.0001"], ids["lr-0.001"], ids["lr-0.01"], ids["lr-0.1"]]  # best (lowest) first
    first = page.locator("#hp-table tbody tr").first.inner_text()
    assert "0.0001" in first and "64" in first
    # something was drawn on the canvas
    assert page.evaluate("(() => { const c = document.getElementById('hp-canvas'); const d = c.getContext('2d')"
                         ".getImageData(0, 0, c.width, c.height).data; let n = 0; "
                         "for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; })()") > 1000
    page.select_option("#hp-metric", "train/loss")
    wait_js(page, "location.hash.includes('metric=train%2Floss') && window.lmdev.ready && "
                  "window.lmdev.hparams.axes.some(a => a.key === 'train/loss')")
    assert json.dumps(page.evaluate("window.lmdev.hparams.runs"))
