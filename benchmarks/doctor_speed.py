"""`lmdev doctor --json` against `python -m torch.utils.collect_env`, side by side.

Both run as whole processes from the same virtual environment, alternating A B A B so that a
drift in the machine's speed hits both alike. Prints each median and the ratio; the budget
(../shared/PRODUCT.md) is lmdev doctor at most 0.15x collect_env's wall time.

    .venv/bin/python benchmarks/doctor_speed.py [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

BUDGET = 0.15


def wall(argv: list[str]) -> float:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    doctor = [sys.executable, "-m", "lmdev", "doctor", "--json"]
    collect_env = [sys.executable, "-m", "torch.utils.collect_env"]
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ImportError
    except ImportError:
        print("torch is not installed in this environment: collect_env cannot run", file=sys.stderr)
        return 2
    wall(doctor), wall(collect_env)  # warm the file cache for both
    a, b = [], []
    for _ in range(args.runs):
        a.append(wall(doctor))
        b.append(wall(collect_env))
    ma, mb = statistics.median(a), statistics.median(b)
    ratio = ma / mb
    print(f"runs each:                 {args.runs} (alternating, after one warm-up)")
    print(f"lmdev doctor --json:       median {ma * 1000:7.0f} ms  (min {min(a) * 1000:.0f}, max {max(a) * 1000:.0f})")
    print(f"torch.utils.collect_env:   median {mb * 1000:7.0f} ms  (min {min(b) * 1000:.0f}, max {max(b) * 1000:.0f})")
    print(f"ratio doctor/collect_env:  {ratio:.3f}x   (budget <= {BUDGET}x: {'met' if ratio <= BUDGET else 'MISSED'})")
    print(f"doctor is {mb / ma:.1f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
