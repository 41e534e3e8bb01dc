"""`lmdev data check` on a generated 10M-row table: wall time and peak memory, beside pandas
(`read_csv` + `duplicated()`, the anchor the issue names for duplicates) on the same file.

Each side runs in its own fresh process under GNU time (`/usr/bin/time -v`), so the peak is the
kernel's maximum resident set of that process. Default settings of `lmdev data check` (label
errors on a sample; the sample size is in the report).

    python benchmarks/data_scale.py                 # 10,000,000 rows x 13 columns (~1.3 GB csv)
    python benchmarks/data_scale.py --rows 1000000  # a smaller run
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PANDAS = "import sys, pandas as pd; d = pd.read_csv(sys.argv[1]); print(int(d.duplicated().sum()))"


def generate(path: Path, rows: int, chunk: int = 1_000_000) -> None:
    """The planted table of benchmarks/data_check.py, written chunk by chunk (2% repeated rows)."""
    from lmdev.data.planted import make_table

    with path.open("w") as f:
        for start in range(0, rows, chunk):
            p = make_table(min(chunk, rows - start), seed=start // chunk, val_rows=0)
            names = [f"f{i}" for i in range(p.x.shape[1])] + ["label"]
            import numpy as np

            np.savetxt(f, np.column_stack([p.x, p.y]), delimiter=",", fmt="%.6g",
                       header=",".join(names) if start == 0 else "", comments="")


def measured(argv: list[str]) -> dict[str, float | str]:
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"seconds": wall, "peak_rss_bytes": int(rss.group(1)) * 1024 if rss else float("nan"),
            "returncode": proc.returncode, "stdout": proc.stdout}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--keep", help="write the csv here and keep it (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "big.csv"
        t0 = time.perf_counter()
        if not path.exists():
            generate(path, args.rows)
        mb = path.stat().st_size / 1e6
        print(f"{args.rows:,} rows, {mb:,.0f} MB csv (generated in {time.perf_counter() - t0:.0f} s)", flush=True)
        ours = measured([sys.executable, "-m", "lmdev", "data", "check", str(path), "--json"])
        doc = json.loads(ours["stdout"]) if ours["stdout"].strip().startswith("{") else {}
        theirs = measured([sys.executable, "-c", PANDAS, str(path)])
    dups = [f for f in doc.get("findings", []) if f.get("id") == "rows.duplicate"]
    print(f"lmdev data check : {ours['seconds']:8.1f} s  peak {ours['peak_rss_bytes'] / 2**20:8.0f} MiB  "
          f"(exit {ours['returncode']}; duplicates found: {dups[0]['count'] if dups else 0:,}; "
          f"label-error sample: {doc.get('sample_size')})")
    print(f"pandas read+dup  : {theirs['seconds']:8.1f} s  peak {theirs['peak_rss_bytes'] / 2**20:8.0f} MiB  "
          f"(duplicates: {theirs['stdout'].strip()})")
    print(f"ratio lmdev / pandas: time {ours['seconds'] / theirs['seconds']:.2f}x, "
          f"peak memory {ours['peak_rss_bytes'] / theirs['peak_rss_bytes']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
