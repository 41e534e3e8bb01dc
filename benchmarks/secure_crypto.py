"""Encryption at rest (age format via pyrage) beside a plain copy of the same 1 GiB file.

Each operation runs in its own process so that its peak memory (ru_maxrss) is its own:
`cp` (shutil.copyfile), the same copy fsynced (lmdev's writes fsync before the rename, a plain
copy leaves the data in the page cache), `lmdev secure encrypt`, `lmdev secure decrypt`, alternating runs, the
median of --runs. Prints throughput, the ratio to the copy (budget >= 0.7x) and peak memory
beside the file size (flat: it must not grow with the file), and the CPU seconds each used (on a
shared machine the wall-clock ratio depends on how much CPU the process gets; the copy is
kernel I/O, encryption is CPU work).

    PYTHONPATH=src .venv/bin/python benchmarks/secure_crypto.py [--gib 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BUDGET = 0.7
OP = r"""
import json, os, resource, shutil, sys, time
from pathlib import Path
op, src, dst = sys.argv[1:4]
from lmdev.secure import crypto
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
if op.startswith("copy"):
    shutil.copyfile(src, dst)
    if op == "copy+fsync":  # what lmdev's writes do: the data is on disk before the rename
        fd = os.open(dst, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
elif op == "encrypt":
    crypto.encrypt(Path(src), Path(dst))
else:
    crypto.decrypt(Path(src), Path(dst))
s = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
print(json.dumps({"s": s, "cpu": cpu, "rss": ru.ru_maxrss * 1024}))
"""


def run(op: str, src: Path, dst: Path, env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", OP, op, str(src), str(dst)], env=env, check=True,
                         capture_output=True, text=True).stdout
    if dst.is_file():
        dst.unlink()
    return json.loads(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        folder = Path(tmp)
        env = dict(os.environ, LMDEV_HOME=str(folder / "home"))
        subprocess.run([sys.executable, "-m", "lmdev", "secure", "keygen"], env=env, check=True,
                       capture_output=True)
        src = folder / "weights.bin"
        size = int(args.gib * (1 << 30))
        with open(src, "wb") as f:
            f.writelines(os.urandom(1 << 24) for _ in range(size // (1 << 24)))
        enc = folder / "weights.bin.age"
        run("encrypt", src, enc, env)  # warm the page cache and leave one ciphertext for decrypt
        subprocess.run([sys.executable, "-c", OP, "encrypt", str(src), str(enc)], env=env, check=True,
                       capture_output=True)
        results: dict[str, list[dict[str, float]]] = {"copy": [], "copy+fsync": [], "encrypt": [], "decrypt": []}
        for _ in range(args.runs):
            results["copy"].append(run("copy", src, folder / "copy.bin", env))
            results["copy+fsync"].append(run("copy+fsync", src, folder / "copy.bin", env))
            results["encrypt"].append(run("encrypt", src, folder / "out.age", env))
            results["decrypt"].append(run("decrypt", enc, folder / "plain.bin", env))
    copy_s = statistics.median(r["s"] for r in results["copy"])
    durable_s = statistics.median(r["s"] for r in results["copy+fsync"])
    print(f"{size / (1 << 30):.2f} GiB file, median of {args.runs} (each in its own process):")
    for op, rows in results.items():
        s = statistics.median(r["s"] for r in rows)
        rss = max(r["rss"] for r in rows)
        cpu = statistics.median(r["cpu"] for r in rows)
        ratio = copy_s / s
        durable = durable_s / s
        verdict = "" if op.startswith("copy") else (
            f"  {durable:4.2f}x copy+fsync (budget {BUDGET}x of copy: {'met' if ratio >= BUDGET else 'MISSED'})")
        print(f"  {op:<10} {s:6.2f} s  {size / s / 1e6:7.0f} MB/s  {ratio:5.2f}x copy speed  "
              f"peak RSS {rss / (1 << 20):5.0f} MiB  CPU {cpu:5.2f} s ({size / cpu / 1e6:5.0f} MB per CPU-s){verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
