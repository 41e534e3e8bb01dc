"""The GPU checks behind benchmarks/gpu/run.sh: each runs real lmdev commands (or the same model in
a plain PyTorch loop beside them) on the GPU and writes its figures as JSON.

Checks (``--dry-run`` lists them): ``bench`` (matmul per dtype against the datasheet peak),
``mfu`` (the GPT demo trained by lmdev in bf16 beside a plain PyTorch loop of the same model),
``amp`` (fp32 and bf16 autocast both train and agree in loss; the bf16 speed-up), ``compile``
(torch.compile), ``ddp`` and ``fsdp`` (one rank on one GPU through torchrun), ``resume`` (a run
killed after a checkpoint and resumed ends with exactly the metrics of an uninterrupted run) and
``plan`` (the planner against measured peaks on the GPU)."""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "examples" / "arithmetic_gpt.yaml"
STEPS = 300


def lmdev(args: list[str], home: Path, timeout: float = 300) -> dict[str, Any]:
    """``lmdev train ... --json`` (or another command) in a fresh process; its JSON document."""
    env = dict(os.environ, LMDEV_HOME=str(home), NO_COLOR="1")
    proc = subprocess.run([sys.executable, "-m", "lmdev", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=home, check=False)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"lmdev {' '.join(args[:2])} exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    return json.loads(proc.stdout)


def train_args(*sets: str, steps: int = STEPS) -> list[str]:
    base = [f"train.max_steps={steps}", "device=cuda", "train.log_every=50", "train.eval_every=100000"]
    return ["train", str(CONFIG), "--json", "--no-telemetry"] + [x for s in (*base, *sets) for x in ("--set", s)]


def metric(result: dict[str, Any], name: str) -> float | None:
    train = result.get("train") or {}
    value = train.get(f"train/{name}", train.get(name))
    return float(value) if value is not None else None


def check_bench(home: Path) -> dict[str, Any]:
    from lmdev.bench import peak_table

    doc = lmdev(["bench", "--json"], home, timeout=240)
    return {"rows": [r for r in peak_table(doc) if r["device"] != "cpu"], "allreduce": doc.get("allreduce")}


def plain_loop_tokens_per_s(steps: int) -> dict[str, Any]:
    """The demo's model (lmdev.train.models.GPT, the example's shapes) in a hand-written bf16 loop."""
    import torch

    from lmdev.train.config import GPTConfig
    from lmdev.train.models import GPT

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=4, n_head=4, n_kv_head=2, n_embd=128)
    model = GPT(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1, betas=(0.9, 0.95))
    x = torch.randint(0, 256, (32, 64), device="cuda")
    t0 = 0.0
    for i in range(steps):
        if i == 20:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, 256), x.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return {"tokens_per_s": (steps - 20) * 32 * 64 / (time.perf_counter() - t0)}


def check_mfu(home: Path) -> dict[str, Any]:
    res = lmdev(train_args("precision=bf16"), home)
    plain = plain_loop_tokens_per_s(STEPS)
    tps = metric(res, "tokens_per_s")
    return {"ok": res.get("status") == "finished", "lmdev_tokens_per_s": tps, "lmdev_mfu": metric(res, "mfu"),
            "plain_tokens_per_s": plain["tokens_per_s"],
            "ratio_lmdev_over_plain": tps / plain["tokens_per_s"] if tps else None, "status": res.get("status")}


def check_amp(home: Path) -> dict[str, Any]:
    fp32 = lmdev(train_args("precision=fp32"), home)
    bf16 = lmdev(train_args("precision=bf16"), home)
    l32, l16 = metric(fp32, "loss"), metric(bf16, "loss")
    return {"fp32_loss": l32, "bf16_loss": l16, "fp32_tokens_per_s": metric(fp32, "tokens_per_s"),
            "bf16_tokens_per_s": metric(bf16, "tokens_per_s"), "status": [fp32.get("status"), bf16.get("status")],
            "ok": bool(l32 and l16 and abs(l16 - l32) <= 0.1 * l32)}


def check_compile(home: Path) -> dict[str, Any]:
    res = lmdev(train_args("precision=bf16", "compile=true"), home, timeout=400)
    return {"ok": res.get("status") == "finished", "status": res.get("status"), "loss": metric(res, "loss"),
            "tokens_per_s": metric(res, "tokens_per_s"), "seconds": res.get("seconds")}


def check_strategy(home: Path, strategy: str) -> dict[str, Any]:
    res = lmdev(train_args("precision=bf16", f"strategy={strategy}", steps=100) + ["--nproc", "1"], home)
    return {"ok": res.get("status") == "finished", "status": res.get("status"), "loss": metric(res, "loss"),
            "tokens_per_s": metric(res, "tokens_per_s")}


def check_resume(home: Path) -> dict[str, Any]:
    """Uninterrupted vs killed (SIGKILL after the first checkpoint) and resumed: the same metrics."""
    sets = ("precision=bf16", "checkpoint.every=50")
    straight = lmdev(train_args(*sets, steps=200) + ["--name", "straight"], home)
    args = [sys.executable, "-m", "lmdev", *train_args(*sets, steps=200), "--name", "killed"]
    env = dict(os.environ, LMDEV_HOME=str(home), NO_COLOR="1")
    proc = subprocess.Popen(args, cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        found = [p for p in glob.glob(str(home / "**" / "*.safetensors"), recursive=True) if "killed" in p]
        if found:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = lmdev(train_args(*sets, steps=200) + ["--resume", "killed"], home)
    same = (straight.get("train"), straight.get("val")) == (resumed.get("train"), resumed.get("val"))
    return {"ok": same, "bit_exact": same, "straight": {"train": straight.get("train"), "val": straight.get("val")},
            "resumed": {"train": resumed.get("train"), "val": resumed.get("val")}}


def check_plan(home: Path) -> dict[str, Any]:
    out = home / "plan.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plan_accuracy.py"), "--device", "cuda", "--seed", "8",
                    "--configs", "6", "--save", str(out)], timeout=300, check=False, cwd=home,
                   stdout=subprocess.DEVNULL)
    doc = json.loads(out.read_text())
    rows = [{k: r.get(k) for k in ("name", "memory_error", "time_error")} for r in doc.get("rows", [])]
    return {"ok": bool((doc.get("summary") or {}).get("budget_met")), "summary": doc.get("summary"), "rows": rows}


CHECKS: dict[str, tuple[str, Callable[[Path], dict[str, Any]]]] = {
    "bench": ("lmdev bench --json: best matmul per dtype against the datasheet peak", check_bench),
    "mfu": (f"lmdev train {CONFIG.name} (bf16, {STEPS} steps) beside a plain PyTorch loop of the same GPT", check_mfu),
    "amp": ("fp32 and bf16 autocast: both train, losses agree within 10%, the bf16 speed-up", check_amp),
    "compile": ("compile=true (torch.compile) trains", check_compile),
    "ddp": ("strategy=ddp through torchrun, one rank on one GPU", lambda h: check_strategy(h, "ddp")),
    "fsdp": ("strategy=fsdp through torchrun, one rank on one GPU", lambda h: check_strategy(h, "fsdp")),
    "resume": ("SIGKILL after a checkpoint, --resume: the same final metrics as an uninterrupted run", check_resume),
    "plan": ("benchmarks/plan_accuracy.py --device cuda: the planner against measured GPU peaks", check_plan),
}


def gpu_missing() -> str | None:
    """Why there is no usable CUDA GPU, or None when there is one."""
    if not shutil.which("nvidia-smi") and not Path("/proc/driver/nvidia/version").exists():
        return "no NVIDIA driver (no nvidia-smi, no /proc/driver/nvidia)"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (CPU-only build or driver mismatch: run `lmdev doctor`)"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="lmdev's GPU checks; figures as JSON under $OUT/gpu")
    ap.add_argument("--dry-run", action="store_true", help="list the checks and exit")
    ap.add_argument("--only", default="", help="comma-separated check names")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "gpu" / "out"))
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        print(f"unknown check(s): {', '.join(unknown)}; known: {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    if args.dry_run:
        for n in names:
            print(f"{n:8s} {CHECKS[n][0]}")
        return 0
    why = gpu_missing()
    if why:
        print(f"benchmarks/gpu/run.sh: no GPU to check: {why}", file=sys.stderr)
        return 2
    out = Path(args.out) / "gpu"
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for n in names:
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            try:
                result = {"ok": True, **CHECKS[n][1](Path(tmp))}
            except Exception as exc:  # noqa: BLE001 - one failed check is a figure, the others still run
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["seconds"] = round(time.time() - t0, 1)
        (out / f"{n}.json").write_text(json.dumps(result, indent=1, allow_nan=False, default=str))
        summary[n] = {"ok": result.get("ok"), "seconds": result["seconds"]}
        print(f"{n:8s} {'ok' if result.get('ok') else 'FAILED'} {result['seconds']:.0f} s", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return 0 if all(v["ok"] for v in summary.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
