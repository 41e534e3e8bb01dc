"""`lmdev secure audit verify` on a log of 1M entries (budget: under 5 s).

The entries are written with the log's own line format (lmdev.secure.audit.format_entry) in one
buffered pass (append() fsyncs every entry, which is what makes it crash-safe and what a
benchmark of a million entries cannot wait for), then the chain is verified, in process, and the
time printed beside `sha256sum` of the same file (the floor: every byte hashed once).

    PYTHONPATH=src .venv/bin/python benchmarks/secure_audit.py [--entries 1000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 5.0


def write_log(home: Path, n: int) -> Path:
    from lmdev.secure import audit

    path = audit.log_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    prev = audit.GENESIS
    with open(path, "wb", buffering=1 << 20) as f:
        for seq in range(n):
            line = audit.format_entry(prev, seq, "scan", {"path": f"/models/m{seq % 97}.safetensors",
                                                         "format": "safetensors", "verdict": "safe",
                                                         "findings": 0, "first": ""})
            f.write(line)
            prev = line[-67:-3].decode()
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    args = parser.parse_args()
    from lmdev.secure import audit

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        path = write_log(home, args.entries)
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        result = audit.verify(home)
        verify_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        subprocess.run(["sha256sum", str(path)], stdout=subprocess.DEVNULL, check=True)
        sha_s = time.perf_counter() - t0
    assert result.ok and result.entries == args.entries
    print(f"{args.entries} entries, {size / 1e6:.0f} MB")
    print(f"  lmdev secure audit verify  {verify_s:6.2f} s  ({verify_s / sha_s:.1f}x sha256sum of the file, "
          f"budget {BUDGET_S:.0f} s: {'met' if verify_s < BUDGET_S else 'MISSED'})")
    print(f"  sha256sum FILE             {sha_s:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
