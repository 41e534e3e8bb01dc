"""The Compare page with 10 runs x 100k points each: `lmdev ui` beside TensorBoard, same data, one run.

Measures the time from navigation start to the first drawn chart in headless Chromium:
  - lmdev: the Compare page (``#/compare?runs=<all ten>&keys=train/loss``), its overlay chart drawn
    (``window.lmdev.firstChartAt``); the API answer behind it (``GET /api/compare``) timed too;
  - TensorBoard: its Time Series page, which overlays every run on the tag's card (a scalar card
    drawn with its data table filled in), after TensorBoard has loaded the event files (its load
    time is reported apart; lmdev reads the store directly and has none).

Budget (issue 18, docs/figures/ui.md): lmdev's Compare page draws before TensorBoard's does.
Prints the ratio (TensorBoard / lmdev); exit status 1 if the budget is missed.

    python benchmarks/ui_compare.py [--runs 10] [--points 100000] [--json] [--no-tensorboard]

Needs Debian's Chromium (/usr/bin/chromium), Playwright for Python and tensorboard
(pip install 'lmdev[test]'). The store and the event files are generated (the same curves).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_load import (  # noqa: E402  (the same store, servers and page timing as the 1M-point benchmark)
    ARGS,
    CHROMIUM,
    LMDEV_CHART,
    TB_CHART,
    lmdev_server,
    page_time,
    tensorboard_server,
    timed_get,
    write_events,
    write_store,
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--points", type=int, default=100_000, help="points per run")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    ap.add_argument("--no-tensorboard", action="store_true", help="lmdev only")
    ap.add_argument("--tb-timeout", type=float, default=300, help="seconds TensorBoard may take to load")
    args = ap.parse_args()
    if not os.path.exists(CHROMIUM):
        print(f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {"machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                                       "cpus": os.cpu_count(), "load_average": os.getloadavg()},
                           "runs": args.runs, "points_per_run": args.points}
    with tempfile.TemporaryDirectory(prefix="lmdev-ui-compare-") as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        home = Path(tmp) / "store"
        t = time.perf_counter()
        ids = write_store(home, args.runs, args.points)
        out["write_s"] = time.perf_counter() - t
        runs = ",".join(ids)
        srv, base = lmdev_server(home)
        try:
            out["lmdev_api"] = timed_get(f"{base}/api/compare?" + urllib.parse.urlencode(
                {"runs": runs, "keys": "train/loss", "lineage": "1"}))
            out["lmdev_first_chart_s"] = page_time(
                browser, f"{base}/#/compare?" + urllib.parse.urlencode({"runs": runs, "keys": "train/loss"}), LMDEV_CHART)
        finally:
            srv.stop()
        _progress(out)
        if not args.no_tensorboard:
            logdir = Path(tmp) / "tb"
            out["tb_export_s"] = write_events(home, logdir)
            tb, tb_base, load = tensorboard_server(logdir, f"run-{args.runs - 1}", "train/loss", args.points - 1,
                                                   args.tb_timeout)
            try:
                out["tb_load_s"] = load
                if load is not None:
                    out["tb_first_chart_s"] = page_time(browser, f"{tb_base}/#timeseries", TB_CHART)
            finally:
                if tb:
                    tb.stop()
        browser.close()
    lm, tb_s = out["lmdev_first_chart_s"], out.get("tb_first_chart_s")
    out["ratio_tb_over_lmdev"] = (tb_s / lm) if lm and tb_s else None
    out["ok"] = lm is not None and (tb_s is None or lm < tb_s)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _report(out)
    return 0 if out["ok"] else 1


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def _progress(row: dict[str, Any]) -> None:
    print("  measured", {k: v for k, v in row.items() if not isinstance(v, dict)}, file=sys.stderr, flush=True)


def _report(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"Compare page, {r['runs']} runs x {r['points_per_run']:,} points "
          f"({m['platform']}, {m['cpus']} CPUs, load average {m['load_average'][0]:.1f})\n")
    print(f"lmdev   /api/compare (median of 5)  {_fmt(r['lmdev_api']['median_s'])} ({r['lmdev_api']['bytes'] / 1e3:.0f} kB)")
    print(f"lmdev   first chart                 {_fmt(r['lmdev_first_chart_s'])}")
    if "tb_load_s" in r:
        print(f"TensorBoard load (event files)      {_fmt(r.get('tb_load_s'))}")
        print(f"TensorBoard first chart             {_fmt(r.get('tb_first_chart_s'))}")
    ratio = r["ratio_tb_over_lmdev"]
    print(f"\nratio TensorBoard / lmdev (first chart): {'-' if ratio is None else f'{ratio:.2f}x'}; "
          f"budget (faster than TensorBoard): {'OK' if r['ok'] else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
