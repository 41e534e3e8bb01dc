"""`lmdev ui` in a real headless Chromium against a real server on loopback.

Needs Debian's Chromium at /usr/bin/chromium (the CI script installs it) and Playwright for
Python (driving that Chromium; Playwright's own browser download is never used). Screenshots go
to test-artifacts/ui/.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.unit.ui.helpers import make_store

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "ui"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no Chromium at {CHROMIUM} "
                       "(apt-get install -y chromium; .ci/run installs it)"),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed "
                                     "(pip install 'lmdev[test]')")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Server:
    """`lmdev ui` in a subprocess; ``url`` is the address it printed."""

    def __init__(self, home: Path, host: str = "127.0.0.1", *extra: str) -> None:
        self.port = free_port(host)
        env = dict(os.environ, PYTHONUNBUFFERED="1", LMDEV_TELEMETRY="0")
        self.proc = subprocess.Popen([sys.executable, "-m", "lmdev", "ui", "--home", str(home), "--host", host,
                                      "--port", str(self.port), *extra], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 30
        self.url = ""
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if "serving" in line:
                self.url = line.split(" at ", 1)[1].strip()
                break
            if self.proc.poll() is not None:
                raise RuntimeError(f"lmdev ui exited: {self.proc.stderr.read()}")
        assert self.url, "lmdev ui did not start"
        self.base = f"http://{host}:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui-browser") / ".lmdev"
    return home, make_store(home)


@pytest.fixture(scope="module")
def server(store):
    srv = Server(store[0])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, request):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        pg.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    finally:
        ctx.close()
    assert not errors, errors


def wait_js(pg, expr: str, timeout: float = 10.0):
    """Poll ``expr`` until truthy (Playwright's wait_for_function would evaluate a string, which the
    dashboard's Content-Security-Policy rightly forbids)."""
    deadline = time.time() + timeout
    while True:
        value = pg.evaluate(expr)
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {expr}")
        time.sleep(0.05)


def open_page(pg, url: str) -> None:
    pg.goto(url)
    wait_js(pg, "!!(window.lmdev && window.lmdev.ready)")


def chart(pg, key: str):
    return pg.evaluate(f"""(() => {{ const c = window.lmdev.charts.get({json.dumps(key)});
        return c ? {{ labels: c.labels, data: c.data.map(a => Array.from(a)) }} : null; }})()""")


def test_runs_table_lists_the_runs(page, server, store):
    _, ids = store
    open_page(page, server.url)
    rows = page.locator("#runs-table tbody tr[data-run]")
    assert rows.count() == 2
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.run)")) == set(ids.values())
    text = page.locator("#runs-table").inner_text()
    assert "digits-mlp" in text and "tiny-gpt" in text and "finished" in text
    page.fill("#run-search", "gpt")
    assert page.locator("#runs-table tbody tr[data-run]").count() == 1


def test_chart_draws_the_series_and_smoothing_changes_it(page, server, store):
    _home, ids = store
    open_page(page, f"{server.base}/#/run/{ids['digits-mlp']}")
    wait_js(page, "window.lmdev.charts.has('train/loss')")
    c = chart(page, "train/loss")
    assert c["labels"] == ["raw", "smoothed"]
    steps, raw = c["data"][0], c["data"][1]
    assert steps == list(range(200))
    assert abs(raw[0] - 2.1) < 1e-9 and abs(raw[199] - (2.0 * 2.718281828459045 ** (-199 / 40) + 0.1)) < 1e-9
    before_line = c["data"][2]
    canvas = page.locator('.card[data-key="train/loss"] canvas')
    before_px = canvas.screenshot()
    page.evaluate("""(() => { const s = document.getElementById('smoothing'); s.value = '0.95';
        s.dispatchEvent(new Event('input', { bubbles: true })); })()""")
    after = chart(page, "train/loss")
    assert after["data"][2] != before_line  # the smoothed series changed
    assert after["data"][1] == raw  # the raw one did not
    page.wait_for_timeout(100)
    assert canvas.screenshot() != before_px  # and what is drawn changed
    # NaN and Inf: gaps in the line, flagged under the chart
    g = wait_js(page, "window.lmdev.charts.has('train/grad_norm') && true") and chart(page, "train/grad_norm")
    assert g["data"][1] == [None, 1.5, None, 1.2]
    note = page.locator('.card[data-key="train/grad_norm"] .note').inner_text()
    assert "2 non-finite" in note and "nan at step 200" in note


def test_run_page_tabs_show_system_events_artifacts_output(page, server, store):
    _, ids = store
    open_page(page, f"{server.base}/#/run/{ids['digits-mlp']}")
    page.click("button[data-tab=System]")
    wait_js(page, "window.lmdev.charts.has('sys:cpu_percent') && window.lmdev.charts.has('sys:gpu_util_percent')")
    page.click("button[data-tab=Events]")
    assert "loss spike" in page.locator("#events").inner_text()
    page.click("button[data-tab=Artifacts]")
    arts = page.locator("#artifacts").inner_text()
    assert "step-200.safetensors" in arts and "checkpoint" in arts
    import hashlib

    assert hashlib.sha256(b"weights" * 100).hexdigest() in arts
    page.click("button[data-tab=Output]")
    assert "done training" in page.locator("#pane-output").inner_text()


def test_a_log_from_another_process_appears_within_3_s(page, server, store):
    home, _ = store
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, lmdev.track as t
        run = t.init("live-run", home={str(home)!r}, telemetry=False)
        for i in range(10):
            run.log({{"train/loss": 1.0 / (i + 1)}}, step=i)
        run.flush()
        print(run.id, flush=True)
        sys.stdin.readline()
        run.log({{"train/loss": 123.0}}, step=10)
        sys.stdin.readline()
        run.finish()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        run_id = child.stdout.readline().strip()
        open_page(page, f"{server.base}/#/run/{run_id}")
        wait_js(page, "window.lmdev.charts.has('train/loss')")
        assert chart(page, "train/loss")["data"][0] == list(range(10))
        assert "running" in page.locator("#run-status").inner_text()
        child.stdin.write("\n")
        child.stdin.flush()
        t0 = time.time()
        wait_js(page, "(() => { const c = window.lmdev.charts.get('train/loss'); "
                      "return c && Array.from(c.data[0]).includes(10); })()", timeout=3.0)
        elapsed = time.time() - t0
        assert chart(page, "train/loss")["data"][1][-1] == 123.0
        assert elapsed < 3.0
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=30)
        wait_js(page, "document.getElementById('run-status').innerText.includes('finished')", timeout=5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_compare_overlays_two_runs(page, server, store):
    _, ids = store
    open_page(page, server.url)
    page.check(f"input[data-id='{ids['digits-mlp']}']")
    page.check(f"input[data-id='{ids['tiny-gpt']}']")
    page.click("#compare-selected")
    wait_js(page, "location.hash.startsWith('#/compare') && window.lmdev.ready && window.lmdev.charts.has('compare')")
    page.select_option("#compare-key", "val/loss")
    wait_js(page, "window.lmdev.charts.get('compare').labels.length === 4 && "
                  "document.querySelector('.card[data-key=compare] h3').textContent === 'val/loss'")
    c = chart(page, "compare")
    assert sorted(c["labels"]) == ["digits-mlp", "digits-mlp raw", "tiny-gpt", "tiny-gpt raw"]
    for series in c["data"][1:]:
        assert sum(v is not None for v in series) >= 6
    diff = page.locator("#diff-table").inner_text()
    assert "model.kind" in diff and "model.width" in diff


def test_unknown_run_shows_a_404_page(page, server):
    open_page(page, f"{server.base}/#/run/does-not-exist")
    assert "no run matches" in page.locator("#not-found").inner_text()


def test_machine_page_shows_the_doctor_report(page, server):
    open_page(page, f"{server.base}/#/machine")
    text = page.locator("#view").inner_text()
    assert "Findings" in text and "Benchmarks" in text


def test_dark_and_light_themes(page, server):
    open_page(page, server.url)
    first = page.evaluate("document.documentElement.dataset.theme")
    page.click("#theme")
    wait_js(page, "window.lmdev.ready")
    assert page.evaluate("document.documentElement.dataset.theme") != first


def test_non_loopback_server_needs_its_token(page, store):
    home, _ids = store
    srv = Server(home, "127.0.0.2")
    try:
        assert "?token=" in srv.url and srv.url.startswith(f"http://127.0.0.2:{srv.port}/")
        # without the token: 401, for the page and the API
        resp = page.goto(srv.base + "/")
        assert resp.status == 401
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(srv.base + "/api/runs", timeout=10)
        assert err.value.code == 401
        # with it: the dashboard opens, and the token leaves the address bar for a cookie
        open_page(page, srv.url)
        assert "token" not in page.url
        assert page.locator("#runs-table tbody tr[data-run]").count() >= 2
        cookies = page.context.cookies()
        assert any(c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies)
    finally:
        srv.stop()


def test_thousands_of_metric_keys_are_grouped_and_searchable(page, server, store):
    from lmdev import track

    home, _ = store
    run = track.init("wide", home=home, telemetry=False, flush_interval=0.05)
    for step in range(3):
        run.log({f"layer{i // 100:02d}/param{i}/grad_norm": float(i + step) for i in range(2000)}, step=step)
    run.finish()
    open_page(page, f"{server.base}/#/run/{run.id}")
    groups = page.locator("details.group")
    assert groups.count() == 20  # one per prefix, each folded (100 keys is too many to open)
    assert page.evaluate("window.lmdev.charts.size") == 0
    page.fill("#key-search", "param1234/")
    assert page.locator("details.group").count() == 1
    page.locator("details.group > summary").click()
    wait_js(page, "window.lmdev.charts.has('layer12/param1234/grad_norm')")
    assert chart(page, "layer12/param1234/grad_norm")["data"][1] == [1234.0, 1235.0, 1236.0]


def test_a_missing_store_shows_a_banner_saying_what_to_do(page, tmp_path):
    srv = Server(tmp_path / "empty")
    try:
        open_page(page, srv.url)
        banner = page.locator("#banner")
        assert banner.is_visible()
        text = banner.inner_text()
        assert "no run store" in text and "lmdev demo" in text
    finally:
        srv.stop()


# -- second round: the defects of issue 18 ------------------------------------------------------


def test_project_filter_lists_the_projects_and_filters(page, server, store):
    from lmdev import track

    home, _ = store
    other = track.init("elsewhere", project="vision", home=home, telemetry=False)
    other.log({"train/loss": 1.0}, step=0)
    other.finish()
    open_page(page, server.url)
    options = page.locator("#project-filter option").evaluate_all("os => os.map(o => o.value)")
    assert "vision" in options and "" in options
    assert "[object" not in page.locator("#project-filter").inner_text()
    page.select_option("#project-filter", "vision")
    rows = page.locator("#runs-table tbody tr[data-run]")
    assert rows.count() == 1 and rows.first.get_attribute("data-run") == other.id


def _x_scale(pg, key: str) -> list[float]:
    return pg.evaluate(f"(() => {{ const s = window.lmdev.charts.get({json.dumps(key)}).plot.scales; "
                       "return [s.x.min, s.x.max, s.y.min, s.y.max]; })()")


class LiveWriter:
    """A run logged by another process: steps 0-99 of ``key`` at once, ``more`` steps after
    ``advance()``, finished after a second ``advance()``."""

    def __init__(self, home: Path, name: str, key: str, more: int, project: str = "default") -> None:
        self.child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sys, lmdev.track as t
            run = t.init({name!r}, project={project!r}, home={str(home)!r}, telemetry=False)
            for i in range(100):
                run.log({{{key!r}: 1.0 / (i + 1)}}, step=i)
            run.flush()
            print(run.id, flush=True)
            sys.stdin.readline()
            for i in range(100, {100 + more}):
                run.log({{{key!r}: 0.001}}, step=i)
            run.flush()
            sys.stdin.readline()
            run.finish()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.child.stdout is not None and self.child.stdin is not None
        self.id = self.child.stdout.readline().strip()

    def advance(self) -> None:
        assert self.child.stdin is not None
        self.child.stdin.write("\n")
        self.child.stdin.flush()

    def finish(self) -> None:
        self.advance()
        self.child.wait(timeout=30)

    def __enter__(self) -> LiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.child.poll() is None:
            self.child.kill()
            self.child.wait()


def test_a_drag_zoom_survives_live_updates(page, server, store):
    home, _ = store
    with LiveWriter(home, "zoom-run", "train/loss", more=10) as writer:
        run_id = writer.id
        open_page(page, f"{server.base}/#/run/{run_id}")
        wait_js(page, "window.lmdev.charts.has('train/loss')")
        full = _x_scale(page, "train/loss")
        box = page.locator('.card[data-key="train/loss"] .u-over').bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.3, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
        page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=5)
        page.mouse.up()
        zoomed = _x_scale(page, "train/loss")
        assert zoomed[0] > full[0] and zoomed[1] < full[1]  # the drag zoomed in
        writer.advance()
        wait_js(page, "(() => { const c = window.lmdev.charts.get('train/loss'); "
                      "return c && Array.from(c.data[0]).includes(109); })()", timeout=10)
        page.wait_for_timeout(200)
        assert _x_scale(page, "train/loss") == zoomed  # the new points did not reset the zoom
        # a double-click goes back to the whole run, new points included
        page.locator('.card[data-key="train/loss"] .u-over').dblclick()
        assert _x_scale(page, "train/loss")[1] >= 109
        writer.finish()


def test_chart_settings_live_in_the_url_and_survive_a_reload(page, server, store):
    _, ids = store
    open_page(page, f"{server.base}/#/run/{ids['digits-mlp']}")
    page.evaluate("""(() => { const s = document.getElementById('smoothing'); s.value = '0.8';
        s.dispatchEvent(new Event('input', { bubbles: true })); })()""")
    page.select_option("#xaxis", "rel")
    page.check("#logscale")
    assert "smoothing=0.8" in page.url and "x=rel" in page.url and "log=1" in page.url
    page.reload()
    wait_js(page, "window.lmdev.ready && window.lmdev.charts.has('train/loss')")
    assert page.input_value("#smoothing") == "0.8"
    assert page.input_value("#xaxis") == "rel"
    assert page.is_checked("#logscale")
    plot = page.evaluate("(() => { const u = window.lmdev.charts.get('train/loss').plot; "
                         "return [u.scales.y.distr, u.series[0].label]; })()")
    assert plot == [3, "s"]  # log y, x in seconds


def test_smoothing_is_not_applied_to_schedules(page, server, store):
    from lmdev import track

    home, _ = store
    run = track.init("sched", home=home, telemetry=False)
    for step in range(50):
        run.log({"train/loss": 1.0 / (step + 1), "train/lr": 0.1 if step < 25 else 0.01,
                 "epoch": float(step // 10)}, step=step)
    run.finish()
    open_page(page, f"{server.base}/#/run/{run.id}?smoothing=0.9")
    wait_js(page, "['train/loss', 'train/lr'].every(k => window.lmdev.charts.has(k))")
    assert chart(page, "train/loss")["labels"] == ["raw", "smoothed"]
    lr = chart(page, "train/lr")
    assert lr["labels"] == ["value"] and lr["data"][1][25] == 0.01  # the step is sharp
    if not page.evaluate("document.querySelector('details.group[data-group=\"(no prefix)\"]').open"):
        page.locator('details.group[data-group="(no prefix)"] > summary').click()
    wait_js(page, "window.lmdev.charts.has('epoch')")
    assert chart(page, "epoch")["labels"] == ["value"]


def _tick_overflow(pg, key: str) -> float:
    """How many CSS pixels the widest x tick label reaches past the chart's canvas (<= 0: none)."""
    return pg.evaluate(f"""(() => {{
        const u = window.lmdev.charts.get({json.dumps(key)}).plot;
        const ax = u.axes[0]; const ctx = u.ctx; ctx.save(); ctx.font = ax.font[0]; let worst = -1e9;
        ax._splits.forEach((v, i) => {{
            const label = ax._values[i]; if (label == null || v < u.scales.x.min || v > u.scales.x.max) return;
            const right = u.valToPos(v, 'x') + u.bbox.left / devicePixelRatio
                + ctx.measureText(String(label)).width / devicePixelRatio / 2;
            worst = Math.max(worst, right - u.width); }});
        ctx.restore(); return worst; }})()""")


def test_the_last_x_tick_label_is_not_clipped(page, server, store):
    from lmdev import track

    home, ids = store
    long = track.init("long-run", home=home, telemetry=False)
    for step in range(0, 100_001, 5_000):  # the last tick, "100,000", sits on the right edge
        long.log({"train/loss": 1.0 / (step + 1)}, step=step)
    long.finish()
    for run_id, xmode in ((long.id, "step"), (ids["digits-mlp"], "step"), (ids["digits-mlp"], "wall")):
        open_page(page, f"{server.base}/#/run/{run_id}?x={xmode}")
        wait_js(page, "window.lmdev.charts.has('train/loss')")
        assert _tick_overflow(page, "train/loss") <= 0, (run_id, xmode)


def test_plan_page_without_warnings_and_with_a_negative_headroom(page, server):
    open_page(page, f"{server.base}/#/plan")
    page.select_option("#plan-model", "gpt2")
    page.select_option("#plan-task", "infer")
    page.select_option("#plan-hardware", "h200")
    page.click("#plan-go")
    wait_js(page, "!!document.getElementById('plan-verdict')")
    text = _shown_plan(page)
    assert "null" not in text and "fits" in text
    page.select_option("#plan-model", "llama-3-70b")
    page.select_option("#plan-task", "train")
    page.select_option("#plan-hardware", "rtx-4090")
    page.click("#plan-go")
    wait_js(page, "(document.getElementById('plan-verdict') || {}).innerText?.includes('does not fit')")
    verdict = page.locator("#plan-verdict").inner_text()
    import re

    assert re.search(r"over by [\d.]+ (GiB|TiB)", verdict), verdict
    assert not re.search(r"-\d+ B", _shown_plan(page))


def _shown_plan(pg) -> str:
    """The plan as shown (the folded JSON dump of the whole plan left out)."""
    return pg.evaluate("[...document.getElementById('plan-result').children]"
                       ".filter(e => e.tagName !== 'DETAILS').map(e => e.innerText).join('\\n')")


def test_machine_page_is_tables_not_json(page, server, store):
    home, _ = store
    bench = {"schema": "lmdev.bench/1", "created": "2026-11-28T14:30:00+00:00", "quick": True, "hostname": "vm",
             "cpu": {"model": "Test CPU", "peak_flops": {"fp32": 2.69e11},
                     "peak_source": "cores x clock x FLOPs per cycle",
                     "matmul": {"fp32": [{"size": 512, "seconds": 0.01, "flops": 3.0e10, "percent_of_peak": 11.2},
                                         {"size": 1024, "seconds": 0.03, "flops": 6.6e10, "percent_of_peak": 24.5}],
                                "int8": [{"size": 256, "error": "no int8 kernel"}]},
                     "memory_bandwidth_bytes_s": 4.6e9},
             "gpus": [], "disk": {"path": "/tmp", "write_bytes_s": 9.4e8, "read_bytes_s": 7.8e8}, "allreduce": None}
    (home / "bench").mkdir(exist_ok=True)
    (home / "bench" / "latest.json").write_text(json.dumps(bench))
    try:
        open_page(page, f"{server.base}/#/machine")
        assert page.locator("#facts table[data-section=host]").count() == 1
        host = page.locator("#facts table[data-section=host]").inner_text()
        assert "cpu.model" in host and "memory.total_bytes" in host and "GiB" in host
        rows = page.locator("#bench tbody tr").evaluate_all("rs => rs.map(r => r.innerText)")
        fp32 = next(r for r in rows if "matmul fp32" in r)
        assert "66 GFLOP/s" in fp32 and "269 GFLOP/s" in fp32 and "24.5 %" in fp32  # best size beside the peak
        assert any("int8" in r and "no int8 kernel" in r for r in rows)
        assert any("memory bandwidth" in r and "GiB/s" in r for r in rows)
        assert "{" not in page.locator("#view").inner_text()  # no JSON dump anywhere
    finally:
        (home / "bench" / "latest.json").unlink()
