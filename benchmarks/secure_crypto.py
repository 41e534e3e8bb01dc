"""Encryption at rest (age format via pyrage) beside a plain copy of the same 1 GiB file.

Each operation runs in its own process so that its peak memory (ru_maxrss) is its own:
`cp` (shutil.copyfile), the same copy fsynced (lmdev's writes fsync before the rename, a plain
copy leaves the data in the page cache), `lmdev secure encrypt`, `lmdev secure decrypt`, alternating runs, the
median of --runs. Prints throughput, the ratio to the copy (budget >= 0.7x) and peak memory
beside the file size (flat: it must not grow with the file), and the CPU seconds each used (on a
shared machine the wall-clock ratio depends on how much CPU the process gets; the copy is
kernel I/O, encryption is CPU work).

`encrypt` / `decrypt` are what lmdev does by default: whole files go through the `age` command
(Go) when it is installed; the `-pyrage` rows are the same operations through pyrage (Rust, in
process; what lmdev does without the command, or with LMDEV_AGE_CLI=0). The profile rows show
where the time goes: the cipher alone, with no file written: ChaCha20-Poly1305 (the AEAD the age format
fixes) over the file in 64 KiB chunks (age's chunk size) through OpenSSL, and AES-256-GCM the
same way (a faster AEAD on CPUs with AES instructions, which the age format does not allow).

    PYTHONPATH=src .venv/bin/python benchmarks/secure_crypto.py [--gib 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
if op.endswith("-pyrage"):
    os.environ["LMDEV_AGE_CLI"] = "0"
    op = op.removesuffix("-pyrage")
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
elif op == "decrypt":
    crypto.decrypt(Path(src), Path(dst))
else:  # the cipher alone, in memory: what any implementation of the format pays
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    aead = (ChaCha20Poly1305 if op == "chacha20poly1305" else AESGCM)(os.urandom(32))
    nonce = bytes(12)
    with open(src, "rb", buffering=0) as f:
        buf = bytearray(1 << 24)
        view = memoryview(buf)
        while n := f.readinto(buf):
            for i in range(0, n, 65536):
                aead.encrypt(nonce, view[i:min(i + 65536, n)], None)
s = time.perf_counter() - t0
ru = resource.getrusage(resource.RUSAGE_SELF)
rc = resource.getrusage(resource.RUSAGE_CHILDREN)  # the age command's CPU
cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime + rc.ru_utime + rc.ru_stime
ru = ru if ru.ru_maxrss >= rc.ru_maxrss else rc
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
        ops = {"copy": src, "copy+fsync": src, "encrypt": src, "decrypt": enc}
        if shutil.which("age"):  # else encrypt / decrypt are the pyrage rows already
            ops |= {"encrypt-pyrage": src, "decrypt-pyrage": enc}
        ops |= {"chacha20poly1305": src, "aes256gcm": src}
        results: dict[str, list[dict[str, float]]] = {op: [] for op in ops}
        for _ in range(args.runs):
            for op, source in ops.items():
                results[op].append(run(op, source, folder / "out.bin", env))
    copy_s = statistics.median(r["s"] for r in results["copy"])
    durable_s = statistics.median(r["s"] for r in results["copy+fsync"])
    print(f"{size / (1 << 30):.2f} GiB file, median of {args.runs} (each in its own process), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}:")
    for op, rows in results.items():
        s = statistics.median(r["s"] for r in rows)
        rss = max(r["rss"] for r in rows)
        cpu = statistics.median(r["cpu"] for r in rows)
        ratio = copy_s / s
        durable = durable_s / s
        verdict = "" if op.startswith(("copy", "chacha", "aes")) else (
            f"  {durable:4.2f}x copy+fsync (budget {BUDGET}x of copy: {'met' if ratio >= BUDGET else 'MISSED'})")
        print(f"  {op:<16} {s:6.2f} s  {size / s / 1e6:7.0f} MB/s  {ratio:5.2f}x copy speed  "
              f"peak RSS {rss / (1 << 20):5.0f} MiB  CPU {cpu:5.2f} s ({size / cpu / 1e6:5.0f} MB per CPU-s){verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
