"""The model scanner beside picklescan, modelscan and fickling, on a generated corpus.

Writes the corpus of tests/unit/secure/corpus.py (malicious files assembled opcode by opcode,
never loaded; benign torch, numpy, joblib, safetensors, Keras, ONNX, GGUF and plain pickles),
asks every scanner for a verdict on every file, and prints recall (malicious flagged) and false
alarms (benign flagged), the files each one misses, then the time to judge a 1 GiB torch
checkpoint (in-process, median of 5, after one warm-up) beside picklescan and a `cat` of the file.
Budget (PRODUCT.md): 100% recall, 0 false alarms, no slower than picklescan.

    pip install 'lmdev[bench]'
    PYTHONPATH=src .venv/bin/python benchmarks/secure_scan.py [--big-gib 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "secure"))
import corpus


def lmdev_flags(path: Path) -> bool:
    from lmdev.secure import scan_file

    return scan_file(path, log=False).verdict == "unsafe"


def picklescan_flags(path: Path) -> bool:
    from picklescan.scanner import scan_file_path

    result = scan_file_path(str(path))
    if result.scan_err and not result.infected_files:
        raise RuntimeError("scan error")
    return result.infected_files > 0


def modelscan_flags(path: Path) -> bool:
    from modelscan.modelscan import ModelScan

    result = ModelScan().scan(str(path))
    if result["errors"] and not result["issues"]:
        raise RuntimeError("scan error")
    return bool(result["issues"])


def fickling_flags(path: Path) -> bool:
    import fickling

    return not fickling.is_likely_safe(str(path))


SCANNERS: dict[str, Callable[[Path], bool]] = {"lmdev": lmdev_flags, "picklescan": picklescan_flags,
                                               "modelscan": modelscan_flags, "fickling": fickling_flags}


def verdict(scanner: Callable[[Path], bool], path: Path) -> str:
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return "flagged" if scanner(path) else "passed"
    except Exception:  # an anchor that crashes on a file: counted as an error (not flagged)
        return "error"


def judge(folder: Path) -> None:
    canary = folder / "CANARY"
    bad = corpus.write_all(corpus.malicious(canary), folder / "malicious")
    good = corpus.write_all(corpus.benign(), folder / "benign")
    print(f"corpus: {len(bad)} malicious, {len(good)} benign files\n")
    print(f"{'scanner':<11} {'recall':>14} {'false alarms':>14} {'errors':>7}  missed / false alarms")
    for name, scanner in SCANNERS.items():
        bad_v = {p.name: verdict(scanner, p) for p in bad}
        good_v = {p.name: verdict(scanner, p) for p in good}
        caught = sum(v == "flagged" for v in bad_v.values())
        alarms = sum(v == "flagged" for v in good_v.values())
        errors = sum(v == "error" for v in [*bad_v.values(), *good_v.values()])
        missed = [n for n, v in bad_v.items() if v != "flagged"]
        false = [n for n, v in good_v.items() if v == "flagged"]
        print(f"{name:<11} {caught:>3}/{len(bad)} {100 * caught / len(bad):5.1f}%  {alarms:>3}/{len(good)} "
              f"{100 * alarms / len(good):5.1f}% {errors:>6}  missed: {', '.join(missed) or '-'}"
              f"\n{'':<50}false: {', '.join(false) or '-'}")
    assert not canary.exists(), "a payload ran"


def timed(fn: Callable[[], object], runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def big_checkpoint(folder: Path, gib: float) -> None:
    import torch

    path = folder / "big.pt"
    n = int(gib * (1 << 30) / 4 / 16)
    torch.save({f"layer{i}.weight": torch.empty(n) for i in range(16)}, path)
    size = path.stat().st_size
    print(f"\n{size / (1 << 30):.2f} GiB torch checkpoint ({size} bytes), median of 5:")
    rows = {
        "lmdev secure scan": timed(lambda: lmdev_flags(path)),
        "picklescan": timed(lambda: picklescan_flags(path)),
        "modelscan": timed(lambda: modelscan_flags(path)),
        "cat FILE > /dev/null": timed(lambda: subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL)),
    }
    anchor = rows["picklescan"]
    for name, t in rows.items():
        print(f"  {name:<22} {t * 1000:9.1f} ms   {t / anchor:6.2f}x picklescan")
    print(f"  lmdev is {anchor / rows['lmdev secure scan']:.1f}x picklescan's speed (budget >= 1x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-gib", type=float, default=1.0, help="size of the torch checkpoint (0: skip)")
    parser.add_argument("--keep", type=Path, help="write the corpus here and keep it")
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        judge(folder)
        if args.big_gib > 0:
            big_checkpoint(Path(tmp), args.big_gib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
