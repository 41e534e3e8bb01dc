"""Media logging: lmdev's ``run.log`` of a histogram and of an image, side by side with
TensorBoard's ``add_histogram`` and ``add_image``, in one run; and the scalar path measured
while media are logged too (it must keep its budget: >= 10x cheaper than ``add_scalar``).

For each it measures the caller's cost per call (what the training loop pays), best of
``ROUNDS`` rounds, then the time until everything is on disk (lmdev: ``finish()``; TensorBoard:
``close()``), and checks that every item was stored.

- histogram: a 64-bin histogram of a fresh 65,536-value float32 tensor (``lmdev.Histogram(t,
  bins=64)`` vs ``add_histogram(tag, t, bins=64)``... TensorBoard's ``bins`` takes a bin count
  only through numpy's rules, so both are given the same array);
- image: a 256x256 RGB float image in [0, 1] (``lmdev.Image(x)`` vs ``add_image(tag, x,
  dataformats="HWC")``).

    python benchmarks/media_logging.py [--quick] [--json]

Needs the anchor: pip install tensorboard (lmdev's extra "tensorboard") and torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROUNDS = 5


def per_call(fn: Any, n: int) -> float:
    """Seconds per call of fn(i): the best of ROUNDS rounds of n // ROUNDS calls."""
    best = float("inf")
    per_round = max(1, n // ROUNDS)
    for r in range(ROUNDS):
        t = time.perf_counter()
        for i in range(r * per_round, (r + 1) * per_round):
            fn(i)
        best = min(best, (time.perf_counter() - t) / per_round)
    return best


def inputs() -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal(65_536).astype(np.float32), rng.random((256, 256, 3), dtype=np.float32)


def bench_lmdev(home: Path, n_hist: int, n_img: int, n_scalar: int) -> dict[str, Any]:
    import lmdev
    from lmdev.track.store import Store

    values, image = inputs()
    out: dict[str, Any] = {}
    for kind, n, make in (("histogram", n_hist, lambda: {"w": lmdev.Histogram(values, bins=64)}),
                          ("image", n_img, lambda: {"x": lmdev.Image(image)})):
        run = lmdev.init(f"bench-{kind}", home=home, telemetry=False)
        t = time.perf_counter()
        out[f"{kind}_call_s"] = per_call(lambda i, run=run, make=make: run.log(make(), step=i), n)
        run.finish()
        out[f"{kind}_to_disk_s"] = time.perf_counter() - t
        with Store(home) as store:
            out[f"{kind}_stored"] = len(store.media(store.get_run(run.id)))
        out[f"{kind}_logged"] = (n // ROUNDS) * ROUNDS
    run = lmdev.init("bench-scalar-with-media", home=home, telemetry=False)
    hist = lmdev.Histogram(values, bins=64)

    def scalar(i: int) -> None:
        run.log({"loss": 1.0 / (i + 1)}, step=i)
        if i % 100 == 0:
            run.log({"w": hist}, step=i)

    out["scalar_call_s"] = per_call(scalar, n_scalar)
    run.finish()
    return out


def bench_tensorboard(logdir: Path, n_hist: int, n_img: int, n_scalar: int) -> dict[str, Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    values, image = inputs()
    out: dict[str, Any] = {}
    for kind, n in (("histogram", n_hist), ("image", n_img)):
        w = SummaryWriter(str(logdir / kind))
        t = time.perf_counter()
        if kind == "histogram":
            out["histogram_call_s"] = per_call(lambda i, w=w: w.add_histogram("w", values, i, bins=64), n)
        else:
            out["image_call_s"] = per_call(lambda i, w=w: w.add_image("x", image, i, dataformats="HWC"), n)
        w.close()
        out[f"{kind}_to_disk_s"] = time.perf_counter() - t
        acc = EventAccumulator(str(logdir / kind), size_guidance={"histograms": 0, "images": 0})
        acc.Reload()
        out[f"{kind}_stored"] = len(acc.Histograms("w")) if kind == "histogram" else len(acc.Images("x"))
        out[f"{kind}_logged"] = (n // ROUNDS) * ROUNDS
    w = SummaryWriter(str(logdir / "scalar"))
    out["scalar_call_s"] = per_call(lambda i: w.add_scalar("loss", 1.0 / (i + 1), i), n_scalar)
    w.close()
    return out


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:10.1f} µs"


def main() -> int:
    p = argparse.ArgumentParser(description="lmdev media logging vs TensorBoard")
    p.add_argument("--quick", action="store_true", help="fewer calls (a smoke run, noisier figures)")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON document")
    a = p.parse_args()
    scale = 5 if a.quick else 1
    n_hist, n_img, n_scalar = 2_000 // scale, 500 // scale, 50_000 // scale
    warnings.filterwarnings("ignore")
    results: dict[str, Any] = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()},
        "calls": {"histogram": n_hist, "image": n_img, "scalar": n_scalar},
    }
    with tempfile.TemporaryDirectory(prefix="lmdev-media-bench-") as tmp:
        results["lmdev"] = bench_lmdev(Path(tmp) / "lmdev", n_hist, n_img, n_scalar)
        results["tensorboard"] = bench_tensorboard(Path(tmp) / "tb", n_hist, n_img, n_scalar // 5)
    lm, tb = results["lmdev"], results["tensorboard"]
    ratios = {k: tb[f"{k}_call_s"] / lm[f"{k}_call_s"] for k in ("histogram", "image", "scalar")}
    lost = sum(lm[f"{k}_logged"] - lm[f"{k}_stored"] for k in ("histogram", "image"))
    results["ratios"] = ratios
    results["budget"] = {"scalar_vs_tensorboard_with_media": {"value": ratios["scalar"], "budget": ">= 10",
                                                              "ok": ratios["scalar"] >= 10},
                         "lost": {"value": lost, "budget": "== 0", "ok": lost == 0}}
    ok = all(b["ok"] for b in results["budget"].values())
    if a.json:
        print(json.dumps(results, indent=1))
        return 0 if ok else 1
    print(f"caller cost per call (lmdev: {n_hist} histograms, {n_img} images, {n_scalar} scalars)")
    print(f"  {'':12} {'lmdev run.log':>16} {'TensorBoard':>16} {'TB / lmdev':>11}")
    for k, label in (("histogram", "64-bin hist"), ("image", "256x256 img"), ("scalar", "scalar*")):
        print(f"  {label:12} {_us(lm[f'{k}_call_s']):>16} {_us(tb[f'{k}_call_s']):>16} {ratios[k]:10.1f}x")
    print("  * lmdev's scalar calls interleaved with a histogram every 100 steps")
    print("until on disk (all calls of all rounds, then finish / close)")
    for k in ("histogram", "image"):
        print(f"  {k:10} lmdev {lm[f'{k}_to_disk_s']:7.2f} s (stored {lm[f'{k}_stored']}/{lm[f'{k}_logged']})"
              f"   TensorBoard {tb[f'{k}_to_disk_s']:7.2f} s (stored {tb[f'{k}_stored']}/{tb[f'{k}_logged']})")
    for name, b in results["budget"].items():
        print(f"  {name}: {b['value']:.1f} (budget {b['budget']}) {'ok' if b['ok'] else 'MISSED'}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
