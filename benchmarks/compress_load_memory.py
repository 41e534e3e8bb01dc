"""Peak memory of loading each compressed variant of a GPT-2-shaped model, beside fp32's, and file sizes.

The model (transformers GPT2LMHeadModel, Conv1D layers, head tied to the embedding) is built from
its config with random weights (sizes and memory do not depend on the values). Every variant is
written the way ``lmdev compress -o OUT`` writes it, then loaded by ``lmdev.compress.load``'s reader
in a fresh process and run once on a batch (``lmdev.compress.memprobe``); printed: file size, load
peak, run peak and peak, each with its ratio to fp32's.

    python benchmarks/compress_load_memory.py --small     # 4 layers, width 256 (16.3M parameters)
    python benchmarks/compress_load_memory.py             # GPT-2 small, 124M parameters
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from lmdev.compress import formats, quantize
from lmdev.compress.memprobe import peak_memory
from lmdev.compress.source import ModelSpec
from lmdev.compress.variant import Variant

MB = 2**20


def build(small: bool) -> tuple[ModelSpec, torch.nn.Module]:
    import transformers

    from lmdev.train.models import HFCausalLM

    transformers.logging.set_verbosity_error()
    shape: dict[str, Any] = (dict(n_layer=4, n_embd=256, n_head=4) if small
                             else dict(n_layer=12, n_embd=768, n_head=12))
    cfg = transformers.GPT2Config(vocab_size=50257, n_positions=1024, **shape)
    torch.manual_seed(0)
    return ModelSpec("hf", cfg.to_dict()), HFCausalLM(transformers.GPT2LMHeadModel(cfg)).eval()


def variants(spec: ModelSpec, model: torch.nn.Module, example: torch.Tensor, work: Path,
             skip: set[str]) -> list[tuple[str, Any]]:
    """(backend, writer of the folder) for fp32 and each variant; a writer returns the manifest's load."""
    out: list[tuple[str, Any]] = [("fp32", lambda f: formats.write_torch(model, f))]
    makers = {"torch.ao-int8": lambda: quantize.ao_int8(spec, model),
              "torchao-int8": lambda: quantize.torchao_int8(spec, model),
              "int4-weights": lambda: quantize.int4_weights(spec, model),
              "onnxruntime-fp32": lambda: quantize.onnx_variant(spec, model, example, work, int8=False),
              "onnxruntime-int8": lambda: quantize.onnx_variant(spec, model, example, work, int8=True)}
    for name, make in makers.items():
        if name in skip:
            continue
        try:
            v: Variant = make()
        except quantize.BackendFailed as exc:
            print(f"  {name}: {exc}", file=sys.stderr)
            continue
        out.append((name, v.write))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="4 layers, width 256 instead of GPT-2 small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip", action="append", default=[], help="a backend to leave out (repeatable)")
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spec, model = build(args.small)
    ids = torch.randint(0, 50257, (args.batch, args.seq))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        save_file({"x": ids}, str(work / "x.safetensors"))
        for name, write in variants(spec, model, ids[:1], work, set(args.skip)):
            folder = work / f"v-{name}"
            folder.mkdir()
            load = write(folder)
            size = sum(f.stat().st_size for f in folder.iterdir())
            peak, why = peak_memory(folder, spec.to_dict(), load, work / "x.safetensors", args.threads)
            if peak is None:
                print(f"  {name}: {why}", file=sys.stderr)
                continue
            rows.append({"variant": name, "file_bytes": size, "load_peak_bytes": peak.load_peak_bytes,
                         "run_peak_bytes": peak.run_peak_bytes, "peak_bytes": peak.peak_bytes})
            print(f"  {name}: done", file=sys.stderr)
    base = rows[0]
    # fp32's weights are memory-mapped: they count when the run first touches them, so its load
    # figure is small and every load peak is compared with fp32's peak instead
    against = {"file_bytes": "file_bytes", "load_peak_bytes": "peak_bytes", "run_peak_bytes": "run_peak_bytes",
               "peak_bytes": "peak_bytes"}
    print(f"{'variant':18} {'file':>9} {'x':>6} {'load peak':>9} {'x peak':>6} {'run peak':>9} {'x':>6} "
          f"{'peak':>8} {'x':>6}")
    for r in rows:
        cells = [f"{r[k] / MB:8.1f}M {r[k] / max(base[b], 1):5.2f}x" for k, b in against.items()]
        print(f"{r['variant']:18} " + " ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"small": args.small, "batch": args.batch, "seq": args.seq,
                                         "threads": args.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
