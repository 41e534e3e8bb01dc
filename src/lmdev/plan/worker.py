"""The measurement worker: runs a few real steps of one shape in a clean process and reports its
peak memory as one JSON line on stdout.

Run as ``python -m lmdev.plan.worker '<json request>'`` by :mod:`lmdev.plan.measure`; never
imported by the CLI process (it imports torch and transformers). The model is built from its
config with random weights: nothing is downloaded.

CPU: the peak resident set (``VmHWM``) minus the resident set before the model was built, with
the peak reset (``/proc/self/clear_refs``) once the model exists, so weight initialisation does
not count. ``VmHWM`` is the kernel's own high-water mark: exact (sampling RSS with psutil misses
peaks shorter than the sampling period, and a training step's logits peak lasts milliseconds)
and resettable (``getrusage``'s ``ru_maxrss`` is not, so it would report the model build's peak).
GPU: ``max_memory_allocated`` and ``max_memory_reserved`` plus the CUDA context.

No allocator setting is touched: glibc's malloc and PyTorch's caching allocator run with their
defaults, as in a user's process (no ``MALLOC_*`` variables, no ``malloc_trim``).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _warm_up(torch: Any, device: str) -> None:
    """Load the kernels' libraries and per-thread buffers before the baseline is read."""
    x = torch.randn(64, 64, device=device, requires_grad=True)
    for dtype in (torch.float32, torch.bfloat16):
        with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype,
                            enabled=dtype != torch.float32):
            y = torch.nn.functional.scaled_dot_product_attention(x[None, None], x[None, None], x[None, None],
                                                                 is_causal=True)
            (y.sum() + (x @ x).sum()).backward()


def hf_config(spec: dict[str, Any], attention: str) -> Any:
    """A transformers config with the shapes of a planner ModelSpec (as a dict)."""
    import transformers

    fam = spec.get("family") or ("gpt2" if spec.get("learned_positions") else "llama")
    if fam == "gpt2":
        return transformers.GPT2Config(
            n_layer=spec["n_layers"], n_embd=spec["hidden"], n_head=spec["n_heads"], vocab_size=spec["vocab"],
            n_positions=spec.get("max_positions") or 1024, n_inner=spec["ffn"],
            activation_function=spec.get("activation") or "gelu_new",
            attn_pdrop=spec.get("attn_dropout", 0.0), resid_pdrop=spec.get("hidden_dropout", 0.0),
            embd_pdrop=spec.get("hidden_dropout", 0.0), attn_implementation=attention,
            tie_word_embeddings=spec.get("tied_embeddings", True))
    if fam == "bert":
        return transformers.BertConfig(
            num_hidden_layers=spec["n_layers"], hidden_size=spec["hidden"], num_attention_heads=spec["n_heads"],
            intermediate_size=spec["ffn"], vocab_size=spec["vocab"],
            max_position_embeddings=spec.get("max_positions") or 512, type_vocab_size=spec.get("type_vocab", 2),
            attention_probs_dropout_prob=spec.get("attn_dropout", 0.0),
            hidden_dropout_prob=spec.get("hidden_dropout", 0.0), attn_implementation=attention)
    kwargs = dict(  # noqa: C408
        num_hidden_layers=spec["n_layers"], hidden_size=spec["hidden"], num_attention_heads=spec["n_heads"],
        num_key_value_heads=spec.get("n_kv_heads") or spec["n_heads"], intermediate_size=spec["ffn"],
        vocab_size=spec["vocab"], max_position_embeddings=spec.get("max_positions") or 4096,
        tie_word_embeddings=spec.get("tied_embeddings", False), attention_bias=spec.get("qkv_bias", False),
        attn_implementation=attention)
    if spec.get("head_dim"):
        kwargs["head_dim"] = spec["head_dim"]
    if spec.get("n_experts", 1) > 1:
        return transformers.MixtralConfig(num_local_experts=spec["n_experts"],
                                          num_experts_per_tok=spec.get("experts_per_token", 2), **kwargs)
    return transformers.LlamaConfig(**kwargs)


def _build(auto: Any, cfg: Any, dtype: Any) -> Any:
    try:
        return auto.from_config(cfg, dtype=dtype)
    except TypeError:  # transformers < 4.56 calls it torch_dtype
        return auto.from_config(cfg, torch_dtype=dtype)


def _build_engine_gpt(spec: dict[str, Any], checkpointing: bool) -> Any:
    """lmdev's own gpt (lmdev.train.models.GPT) with the shapes of a planner ModelSpec."""
    from lmdev.train.config import GPTConfig
    from lmdev.train.models import GPT

    cfg = GPTConfig(vocab_size=spec["vocab"], block_size=spec.get("max_positions") or 1024, n_layer=spec["n_layers"],
                    n_head=spec["n_heads"], n_kv_head=spec.get("n_kv_heads"), n_embd=spec["hidden"],
                    ffn_hidden=spec["ffn"], norm=spec.get("norm", "rmsnorm"),
                    position="learned" if spec.get("learned_positions") else "rope",
                    mlp="swiglu" if spec.get("mlp") == "swiglu" else "gelu", bias=bool(spec.get("qkv_bias")),
                    tie_embeddings=bool(spec.get("tied_embeddings", True)), dropout=spec.get("hidden_dropout", 0.0),
                    activation_checkpointing=checkpointing)
    return GPT(cfg)


def _optimizer(torch: Any, model: Any, name: str) -> Any:
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=1e-4)
    return torch.optim.AdamW(model.parameters(), lr=1e-4)


def _train_step(torch: Any, model: Any, opt: Any, ids: Any, ctx: dict[str, Any]) -> None:
    with torch.autocast(device_type=ctx["autocast_device"], dtype=ctx["half"] or torch.bfloat16,
                        enabled=ctx["autocast"]):
        if ctx["engine"]:
            logits = model(ids)
            loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), ids.view(-1))
        else:
            out = model(input_ids=ids, labels=ids)
            logits, loss = out.logits, out.loss
            del out
    loss.backward()
    del logits, loss
    opt.step()
    opt.zero_grad(set_to_none=True)


def _infer_step(torch: Any, model: Any, ids: Any, req: dict[str, Any], ctx: dict[str, Any]) -> dict[str, float]:
    """Prefill (the whole prompt; all positions' logits or only the last) and, with new tokens,
    generation one token at a time from the KV cache. Returns the phases' seconds."""
    new = int(req.get("new_tokens", 0))
    keep = 1 if (new > 0 or req.get("logits") == "last") else 0
    sync = ctx["sync"]
    with torch.inference_mode():
        t0 = time.perf_counter()
        if ctx["engine"] or ctx["encoder"]:
            model(ids) if ctx["engine"] else model(input_ids=ids)
            sync()
            return {"prefill_seconds": time.perf_counter() - t0, "decode_seconds_per_token": 0.0}
        out = model(input_ids=ids, use_cache=True, logits_to_keep=keep)
        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
        del out
        sync()
        t1 = time.perf_counter()
        for _ in range(new):
            out = model(input_ids=nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
            del out
        sync()
        t2 = time.perf_counter()
        del past
    return {"prefill_seconds": t1 - t0, "decode_seconds_per_token": (t2 - t1) / new if new else 0.0}


def matmul_anchor(torch: Any, device: str, dtype_name: str, n: int = 1024, reps: int = 4) -> float:
    """FLOP/s of an n x n linear layer (``F.linear``, the form a model's matmuls take: on a CPU
    without native bf16 it is several times faster than ``a @ b``) in ``dtype_name`` here, now:
    the anchor the benchmark predicts time from, measured in the same process after the steps."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    x = torch.randn(n, n, device=device).to(dtype)
    weight = torch.randn(n, n, device=device).to(dtype)
    linear = torch.nn.functional.linear
    linear(x, weight)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        linear(x, weight)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best


def copy_anchor(torch: Any, device: str, nbytes: int = 64 << 20, reps: int = 4) -> float:
    """Memory bandwidth here, now: bytes read + written per second by a large tensor copy."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * nbytes / best


def run(req: dict[str, Any]) -> dict[str, Any]:
    """Build the model, run ``steps`` real steps, report the peak and the step time.

    Nothing tunes the allocator: glibc's malloc and PyTorch's caching allocator run with their
    defaults, as in a user's process."""
    import torch

    torch.manual_seed(0)
    if req.get("threads"):
        torch.set_num_threads(int(req["threads"]))
    device = req.get("device", "cpu")
    task, precision = req["task"], req["precision"]
    b, t, steps = int(req["batch"]), int(req["seq"]), int(req.get("steps", 2))
    attention = {"flash": "sdpa"}.get(req.get("attention", "sdpa"), req.get("attention", "sdpa"))
    if device.startswith("cuda") and req.get("attention") == "flash":
        import importlib.util

        # the flash-attn package when installed; otherwise sdpa, whose CUDA flash kernel keeps the same tensors
        attention = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    spec = req["spec"]
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    cuda = device.startswith("cuda")
    ctx: dict[str, Any] = {"half": half, "autocast": task == "train" and half is not None,
                           "autocast_device": "cuda" if cuda else "cpu",
                           "engine": spec.get("family") == "lmdev-gpt", "encoder": spec.get("encoder", False),
                           "sync": (lambda: torch.cuda.synchronize()) if cuda else (lambda: None)}
    weight_dtype = torch.float32 if (task == "train" or half is None) else half
    context = 0
    if cuda:
        free0, _total = torch.cuda.mem_get_info()
        torch.zeros(1, device=device)
        free1, _ = torch.cuda.mem_get_info()
        context = free0 - free1
    ids = torch.randint(0, spec["vocab"], (b, t), device=device)
    _warm_up(torch, device)
    model = _load_model(torch, spec, attention, weight_dtype, req)
    model.to(device)
    params = sum(p.numel() for p in model.parameters())
    opt = None
    if task == "train":
        model.train()
        opt = _optimizer(torch, model, req.get("optimizer", "adamw"))
    else:
        model.eval()
    import gc

    gc.collect()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset = _reset_peak()
    after_build = _status_kb("VmRSS") or 0
    times: list[float] = []
    phases: list[dict[str, float]] = []
    for _ in range(steps):
        t0 = time.perf_counter()
        if task == "train":
            _train_step(torch, model, opt, ids, ctx)
        else:
            phases.append(_infer_step(torch, model, ids, req, ctx))
        ctx["sync"]()
        times.append(time.perf_counter() - t0)
    result: dict[str, Any] = {"params": params, "step_seconds": min(times), "steps": steps, "device": device,
                              "torch": torch.__version__}
    if phases:
        result["prefill_seconds"] = min(p["prefill_seconds"] for p in phases)
        result["decode_seconds_per_token"] = min(p["decode_seconds_per_token"] for p in phases)
    if cuda:
        result.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(),
                      peak_reserved_bytes=torch.cuda.max_memory_reserved(), context_bytes=context,
                      peak_bytes=torch.cuda.max_memory_reserved() + context)
    else:
        hwm = _status_kb("VmHWM") or 0
        result.update(baseline_rss_bytes=req["_baseline"], after_build_rss_bytes=after_build, peak_rss_bytes=hwm,
                      peak_bytes=hwm - req["_baseline"], peak_reset=reset)
    if req.get("anchor"):
        del model, opt
        gc.collect()
        result["anchor_matmul_flops"] = matmul_anchor(torch, device, precision if half is not None else "fp32")
        result["anchor_bandwidth_bytes_s"] = copy_anchor(torch, device)
    return result


def _load_model(torch: Any, spec: dict[str, Any], attention: str, weight_dtype: Any, req: dict[str, Any]) -> Any:
    """Import the model's code with a tiny copy, read the baseline resident set, build the model."""
    import transformers

    is_encoder = spec.get("encoder", False)
    auto = transformers.AutoModelForMaskedLM if is_encoder else transformers.AutoModelForCausalLM
    tiny = dict(spec, n_layers=1, hidden=64, n_heads=2, n_kv_heads=1 if spec.get("n_kv_heads") else None,
                head_dim=None, ffn=64, vocab=64, n_experts=min(2, spec.get("n_experts", 1)))
    _build(auto, hf_config(tiny, attention), weight_dtype)  # imports the model's code
    if spec.get("family") == "lmdev-gpt":
        _build_engine_gpt(dict(tiny, vocab=64, max_positions=16), False)
    import gc

    gc.collect()
    req["_baseline"] = _status_kb("VmRSS") or 0
    checkpointing = bool(req.get("activation_checkpointing")) and req["task"] == "train"
    if spec.get("family") == "lmdev-gpt":
        return _build_engine_gpt(spec, checkpointing).to(dtype=weight_dtype)
    model = _build(auto, hf_config(spec, attention), weight_dtype)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def main() -> None:
    req = json.loads(sys.argv[1])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        out = run(req)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as data; it decides what the user sees
        out = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("LMDEV_RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
