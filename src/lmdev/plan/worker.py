"""The measurement worker: runs a few real steps of one shape in a clean process and reports its
peak memory as one JSON line on stdout.

Run as ``python -m lmdev.plan.worker '<json request>'`` by :mod:`lmdev.plan.measure`; never
imported by the CLI process (it imports torch and transformers). The model is built from its
config with random weights: nothing is downloaded.

CPU: the peak resident set (``VmHWM``) minus the resident set before the model was built, with
the peak reset (``/proc/self/clear_refs``) once the model exists, so weight initialisation does
not count. GPU: ``max_memory_allocated`` and ``max_memory_reserved`` plus the CUDA context.
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


def _trim() -> None:
    """Hand freed heap memory back to the OS (glibc), so the resident set is what is in use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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


def run(req: dict[str, Any]) -> dict[str, Any]:
    import torch
    import transformers

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
    cfg = hf_config(spec, attention)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = task == "train" and half is not None
    weight_dtype = torch.float32 if (task == "train" or half is None) else half

    cuda = device.startswith("cuda")
    context = 0
    if cuda:
        free0, _total = torch.cuda.mem_get_info()
        torch.zeros(1, device=device)
        free1, _ = torch.cuda.mem_get_info()
        context = free0 - free1
    ids = torch.randint(0, spec["vocab"], (b, t), device=device)
    _warm_up(torch, device)
    is_encoder = spec.get("encoder", False)
    auto = transformers.AutoModelForMaskedLM if is_encoder else transformers.AutoModelForCausalLM
    tiny = dict(spec, n_layers=1, hidden=64, n_heads=2, n_kv_heads=1 if spec.get("n_kv_heads") else None,
                head_dim=None, ffn=64, vocab=64, n_experts=min(2, spec.get("n_experts", 1)))
    _build(auto, hf_config(tiny, attention), weight_dtype)  # imports the model's code
    if spec.get("family") == "lmdev-gpt":
        _build_engine_gpt(dict(tiny, vocab=64, max_positions=16), False)
    import gc
    gc.collect()
    _trim()
    baseline = _status_kb("VmRSS") or 0

    engine = spec.get("family") == "lmdev-gpt"
    if engine:
        model = _build_engine_gpt(spec, bool(req.get("activation_checkpointing"))).to(device=device,
                                                                                      dtype=weight_dtype)
    else:
        model = _build(auto, cfg, weight_dtype).to(device)
        if task == "train" and req.get("activation_checkpointing"):
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = sum(p.numel() for p in model.parameters())
    opt = None
    if task == "train":
        model.train()
        if req.get("optimizer", "adamw") == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        elif req.get("optimizer") == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    else:
        model.eval()

    import gc
    gc.collect()
    _trim()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset = _reset_peak()
    after_build = _status_kb("VmRSS") or 0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        if task == "train":
            with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=half or torch.bfloat16,
                                enabled=autocast):
                if engine:
                    logits = model(ids)
                    loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]),
                                                             ids.view(-1))
                else:
                    out = model(input_ids=ids, labels=ids)
                    logits, loss = out.logits, out.loss
            loss.backward()
            del logits, loss
            if not engine:
                del out
            opt.step()  # type: ignore[union-attr]
            opt.zero_grad(set_to_none=True)  # type: ignore[union-attr]
        else:
            new = int(req.get("new_tokens", 4))
            prompt = ids[:, : max(1, t - new)]
            with torch.inference_mode():
                if engine:
                    model(ids)
                elif is_encoder:
                    model(input_ids=ids)
                else:
                    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
                    past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                    del out
                    for _ in range(t - prompt.shape[1]):
                        out = model(input_ids=nxt, past_key_values=past, use_cache=True)
                        past, nxt = out.past_key_values, out.logits[:, -1:].argmax(-1)
                        del out
                    del past
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    result: dict[str, Any] = {"params": params, "step_seconds": min(times), "steps": steps, "device": device}
    if cuda:
        result.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(),
                      peak_reserved_bytes=torch.cuda.max_memory_reserved(), context_bytes=context,
                      peak_bytes=torch.cuda.max_memory_reserved() + context)
    else:
        hwm = _status_kb("VmHWM") or 0
        result.update(baseline_rss_bytes=baseline, after_build_rss_bytes=after_build, peak_rss_bytes=hwm,
                      peak_bytes=hwm - baseline, peak_reset=reset)
    return result


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
