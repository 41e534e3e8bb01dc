"""Dashboard load: `lmdev ui` side by side with TensorBoard serving the same data, in one run.

For runs of 1k, 100k and 1M points (one metric) and for stores of 10, 100 and 1,000 runs it
measures
  - the API's response time (median of several requests): lmdev's downsampled metric series
    (GET /api/runs/ID/metrics) or runs table (GET /api/runs); TensorBoard's scalars endpoint
    (GET /data/plugin/scalars/scalars) once it has loaded the event files,
  - the time to the first drawn chart in headless Chromium (from navigation start): lmdev's run
    page (its first uPlot chart drawn) and, for the run-count stores, its runs table; TensorBoard's
    Time Series page (its first scalar chart drawn),
  - TensorBoard's load time: from its start until the whole series is served (lmdev reads SQLite
    directly and has none).

Budget (docs/figures/ui.md): lmdev's run page with 1M points draws in under 1.5 s, and no slower
than TensorBoard. Exit status 1 if it is missed.

    python benchmarks/ui_load.py [--quick] [--json] [--no-tensorboard]

Needs Debian's Chromium (/usr/bin/chromium), Playwright for Python, and tensorboard
(pip install 'lmdev[test]').
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
BUDGET_S = 1.5
REQUESTS = 5
PAGE_LOADS = 3


# -- data ----------------------------------------------------------------------------------------

def curve(n: int, seed: int = 0) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = np.arange(n, dtype=float)
    return 2.0 * np.exp(-x / max(1.0, n / 5)) + 0.1 + 0.05 * rng.standard_normal(n)


def write_store(home: Path, runs: int, points: int, keys: tuple[str, ...] = ("train/loss",)) -> list[str]:
    """A store of ``runs`` runs, each with ``points`` points per key; returns the run ids."""
    import numpy as np

    from lmdev.track.store import Store, pack_chunk
    from lmdev.track.types import RunInfo

    ids = []
    t0 = time.time() - 3600
    with Store(home) as st:
        for r in range(runs):
            rid_s = f"bench{r:06d}"
            info = RunInfo(id=rid_s, name=f"run-{r}", project="bench", status="finished", start_time=t0 + r,
                           config={"lr": 10 ** -(2 + r % 3), "seed": r}, tags=["bench"], host="bench")
            rid = st.create_run(info)
            st.update_run(rid, end_time=t0 + r + 600)
            with st.write() as c:
                kids = st.key_ids(c, keys)
            chunks = []
            for k_i, key in enumerate(keys):
                vals = curve(points, seed=r * 10 + k_i)
                steps = np.arange(points, dtype=np.int64)
                times = t0 + r + steps * (600.0 / max(1, points))
                for a in range(0, points, 100_000):
                    b = min(points, a + 100_000)
                    chunks.append(pack_chunk(rid, kids[key], steps[a:b].tolist(), times[a:b].tolist(),
                                             vals[a:b].tolist()))
            st.insert_batch(rid, metrics=chunks)
            ids.append(rid_s)
    return ids


def write_events(home: Path, out: Path) -> float:
    """The same store as TensorBoard event files (one folder per run); returns seconds taken.

    Written with TensorBoard's own record writer into a plain file (its EventFileWriter adds a
    thread and an fsync per file, which only slows the set-up of a 1,000-run store)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.record_writer import RecordWriter

    from lmdev.track.store import Store

    t = time.perf_counter()
    with Store(home) as st:
        for run in st.list_runs():
            folder = out / run.name
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f"events.out.tfevents.{int(run.start_time)}.bench", "wb") as f:
                w = RecordWriter(f)
                w.write(Event(wall_time=run.start_time, file_version="brain.Event:2").SerializeToString())
                for key, points in st.metrics(run).items():
                    for step, value, wall in points:
                        w.write(Event(wall_time=wall, step=step, summary=Summary(
                            value=[Summary.Value(tag=key, simple_value=value)])).SerializeToString())
    return time.perf_counter() - t


# -- servers -------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 120) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def timed_get(url: str, n: int = REQUESTS) -> dict[str, float]:
    first = None
    times = []
    for i in range(n):
        t = time.perf_counter()
        body = get(url)
        dt = time.perf_counter() - t
        if i == 0:
            first = dt
        times.append(dt)
    return {"median_s": statistics.median(times), "first_s": first or 0.0, "bytes": len(body)}


class Proc:
    def __init__(self, cmd: list[str], ready_url: str, timeout: float = 60) -> None:
        self.start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=dict(os.environ, LMDEV_TELEMETRY="0"))
        deadline = time.time() + timeout
        while True:
            try:
                get(ready_url, timeout=5)
                break
            except OSError as exc:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"{cmd[0:3]} did not start") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def lmdev_server(home: Path) -> tuple[Proc, str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    return Proc([sys.executable, "-m", "lmdev", "ui", "--home", str(home), "--port", str(port)],
                base + "/api/health"), base


def tensorboard_server(logdir: Path, run: str, tag: str, last_step: int, timeout: float) -> tuple[Proc | None, str, float | None]:
    """TensorBoard on ``logdir``; returns (process, base URL, seconds until the series is whole)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tb = Proc([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port), "--reload_interval", "1"], base + "/data/environment", timeout=60)
    url = base + "/data/plugin/scalars/scalars?" + urllib.parse.urlencode({"run": run, "tag": tag})
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            data = json.loads(get(url, timeout=30))
            if data and data[-1][1] == last_step:
                return tb, base, time.perf_counter() - tb.start
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    return tb, base, None


# -- the browser ---------------------------------------------------------------------------------

def poll(page: Any, expr: str, timeout: float) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = page.evaluate(expr)
        if value:
            return value
        time.sleep(0.01)
    return None


LMDEV_CHART = "window.lmdev && window.lmdev.firstChartAt"
LMDEV_TABLE = "window.lmdev && window.lmdev.tableAt"
# TensorBoard's Time Series page: a scalar card with its line chart's canvas (or SVG), no loading
# spinner left, and the card's data table filled in (which needs the series' data).
TB_CHART = """(() => {
  for (const c of document.querySelectorAll('scalar-card')) {
    if (c.querySelector('mat-spinner, mat-progress-spinner')) continue;
    const canvas = c.querySelector('line-chart canvas');
    const svgLine = c.querySelector('line-chart svg path');
    const row = c.querySelector('tb-data-table-content-row, .data-table tr');
    if ((canvas && canvas.width > 0 || svgLine) && row) return performance.now();
  }
  return null;
})()"""


def page_time(browser: Any, url: str, expr: str, timeout: float = 60) -> float | None:
    """Median seconds from navigation start to ``expr`` becoming truthy (it returns performance.now())."""
    out = []
    for _ in range(PAGE_LOADS):
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        try:
            page.goto(url, wait_until="commit")
            at = poll(page, expr, timeout)
            out.append(None if at is None else float(at) / 1000.0)
        finally:
            ctx.close()
        if out[-1] is None:  # nothing drawn: do not wait that long again
            break
    got = [x for x in out if x is not None]
    return statistics.median(got) if got else None


# -- the scenarios -------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1k and 100k points, 10 and 100 runs")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--no-tensorboard", action="store_true", help="lmdev only")
    ap.add_argument("--tb-timeout", type=float, default=120, help="seconds TensorBoard may take to load a store")
    args = ap.parse_args()
    if not os.path.exists(CHROMIUM):
        print(f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    point_sizes = [1_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000]
    run_counts = [10, 100] if args.quick else [10, 100, 1_000]
    use_tb = not args.no_tensorboard
    results: dict[str, Any] = {"machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                                           "cpus": os.cpu_count()}, "points": [], "runs": []}
    with tempfile.TemporaryDirectory(prefix="lmdev-ui-load-") as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        root = Path(tmp)
        for n in point_sizes:
            home = root / f"points-{n}"
            t = time.perf_counter()
            (run_id,) = write_store(home, 1, n)
            row: dict[str, Any] = {"points": n, "write_s": time.perf_counter() - t}
            srv, base = lmdev_server(home)
            try:
                row["lmdev_api"] = timed_get(f"{base}/api/runs/{run_id}/metrics?keys=train%2Floss")
                row["lmdev_first_chart_s"] = page_time(browser, f"{base}/#/run/{run_id}", LMDEV_CHART)
            finally:
                srv.stop()
            if use_tb:
                row.update(_tensorboard_points(browser, home, root / f"tb-points-{n}", n, args.tb_timeout))
            results["points"].append(row)
            _progress(row, args.json)
        for r in run_counts:
            home = root / f"runs-{r}"
            t = time.perf_counter()
            ids = write_store(home, r, 100, keys=("train/loss", "val/loss"))
            row = {"runs": r, "write_s": time.perf_counter() - t}
            srv, base = lmdev_server(home)
            try:
                row["lmdev_api"] = timed_get(f"{base}/api/runs")
                row["lmdev_runs_table_s"] = page_time(browser, f"{base}/", LMDEV_TABLE)
                row["lmdev_first_chart_s"] = page_time(browser, f"{base}/#/run/{ids[-1]}", LMDEV_CHART)
            finally:
                srv.stop()
            if use_tb:
                row.update(_tensorboard_runs(browser, home, root / f"tb-runs-{r}", r, args.tb_timeout))
            results["runs"].append(row)
            _progress(row, args.json)
        browser.close()
    big = next(r for r in results["points"] if r["points"] == max(point_sizes))
    ok = big["lmdev_first_chart_s"] is not None and big["lmdev_first_chart_s"] < BUDGET_S
    if use_tb and big.get("tb_first_chart_s") is not None:
        ok = ok and big["lmdev_first_chart_s"] <= big["tb_first_chart_s"]
    results["budget"] = {"points": big["points"], "lmdev_first_chart_s": big["lmdev_first_chart_s"],
                         "tensorboard_first_chart_s": big.get("tb_first_chart_s"), "limit_s": BUDGET_S, "ok": ok}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _table(results, use_tb)
    return 0 if ok else 1


def _tensorboard_points(browser: Any, home: Path, logdir: Path, n: int, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {"tb_export_s": write_events(home, logdir)}
    tb, base, load = tensorboard_server(logdir, "run-0", "train/loss", n - 1, timeout)
    try:
        out["tb_load_s"] = load
        if load is not None:
            q = urllib.parse.urlencode({"run": "run-0", "tag": "train/loss"})
            out["tb_api"] = timed_get(f"{base}/data/plugin/scalars/scalars?{q}")
            out["tb_first_chart_s"] = page_time(browser, f"{base}/#timeseries", TB_CHART)
    finally:
        if tb:
            tb.stop()
    return out


def _tensorboard_runs(browser: Any, home: Path, logdir: Path, runs: int, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {"tb_export_s": write_events(home, logdir)}
    tb, base, load = tensorboard_server(logdir, f"run-{runs - 1}", "val/loss", 99, timeout)
    try:
        out["tb_load_s"] = load
        if load is not None:
            out["tb_api"] = timed_get(f"{base}/data/runs")
            out["tb_first_chart_s"] = page_time(browser, f"{base}/#timeseries", TB_CHART, timeout=30)
            if out["tb_first_chart_s"] is None:
                out["tb_note"] = ("no curve drawn within 30 s: with this many runs TensorBoard selects none "
                                  "by default and shows empty charts until runs are ticked")
    finally:
        if tb:
            tb.stop()
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def _progress(row: dict[str, Any], quiet: bool) -> None:
    if True:  # on stderr: the JSON document stays alone on stdout
        print("  measured", {k: v for k, v in row.items() if not isinstance(v, dict)}, file=sys.stderr, flush=True)


def _table(res: dict[str, Any], tb: bool) -> None:
    print(f"lmdev ui load ({res['machine']['platform']}, {res['machine']['cpus']} CPUs)\n")
    print("points  | lmdev API | lmdev first chart | TB load | TB API | TB first chart | ratio (TB/lmdev chart)")
    for r in res["points"]:
        ratio = (r.get("tb_first_chart_s") or math.nan) / (r["lmdev_first_chart_s"] or math.nan)
        print(f"{r['points']:>7} | {_fmt(r['lmdev_api']['median_s']):>9} | {_fmt(r['lmdev_first_chart_s']):>17} | "
              f"{_fmt(r.get('tb_load_s')):>7} | {_fmt((r.get('tb_api') or {}).get('median_s')):>6} | "
              f"{_fmt(r.get('tb_first_chart_s')):>14} | {ratio:.2f}x")
    print("\nruns    | lmdev API /api/runs | lmdev runs table | lmdev first chart | TB load | TB API /data/runs | TB first chart")
    for r in res["runs"]:
        print(f"{r['runs']:>7} | {_fmt(r['lmdev_api']['median_s']):>19} | {_fmt(r['lmdev_runs_table_s']):>16} | "
              f"{_fmt(r['lmdev_first_chart_s']):>17} | {_fmt(r.get('tb_load_s')):>7} | "
              f"{_fmt((r.get('tb_api') or {}).get('median_s')):>17} | {_fmt(r.get('tb_first_chart_s')):>14}")
    b = res["budget"]
    print(f"\nbudget: run page with {b['points']:,} points drawn in {_fmt(b['lmdev_first_chart_s'])} "
          f"(limit {b['limit_s']} s; TensorBoard {_fmt(b['tensorboard_first_chart_s'])}): "
          f"{'OK' if b['ok'] else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
