"""CPU specifics of the planner: half precisions a CPU only emulates are flagged, and the heap
glibc keeps when a training step's logits are heap-served is counted."""

from __future__ import annotations

from lmdev.catalog.models import ModelSpec
from lmdev.plan.advisor import default_precision, make_plan
from lmdev.plan.hardware import Hardware, cpu_slow_dtypes
from lmdev.plan.memory import Workload, estimate_memory

MiB = 1024**2
AVX2 = ["avx", "avx2", "fma", "f16c"]


def cpu(features: list[str]) -> Hardware:
    return Hardware(name="cpu", label="test CPU", kind="cpu", memory_bytes=64 * 1024 * MiB,
                    peak_flops={"fp32": 1e12, "bf16": 1e12}, this_machine=True,
                    slow=cpu_slow_dtypes(features, "x86_64"))


def small() -> ModelSpec:
    return ModelSpec(name="small", family="llama", n_layers=2, hidden=128, n_heads=2, n_kv_heads=2, ffn=384,
                     vocab=8000, max_positions=2048, mlp="swiglu", activation="silu")


def test_bf16_is_slow_without_avx512_bf16_or_amx():
    assert set(cpu_slow_dtypes(AVX2)) == {"bf16", "fp16"}
    assert "bf16" not in cpu_slow_dtypes(AVX2 + ["avx512f", "avx512_bf16"])
    assert "bf16" not in cpu_slow_dtypes(AVX2 + ["amx_tile", "amx_bf16"])
    assert "bf16" not in cpu_slow_dtypes(["asimd", "bf16"], "aarch64")
    assert "bf16" in cpu_slow_dtypes(["asimd"], "aarch64")


def test_plan_in_bf16_on_a_cpu_without_bf16_warns_and_defaults_to_fp32():
    hw = cpu(AVX2)
    plan = make_plan(small(), Workload(task="train", precision="bf16", seq=256), [hw])
    assert any("bf16 is slow here" in m and "AVX512-BF16" in m for m in plan.warnings)
    assert default_precision(hw) == "fp32"
    native = cpu(AVX2 + ["avx512f", "avx512_bf16"])
    assert default_precision(native) == "bf16"
    assert not any("slow here" in m for m in make_plan(small(), Workload(task="train", precision="bf16", seq=256),
                                                       [native]).warnings)


def test_fp32_training_is_not_advised_to_switch_to_emulated_bf16():
    plan = make_plan(small(), Workload(task="train", precision="fp32", seq=256), [cpu(AVX2)])
    reasons = {e.option: e.reason for e in plan.excluded}
    assert "emulated" in reasons["bf16 mixed precision"]
    assert not any(r.change.get("precision") == "bf16" for r in plan.recommendations)


# Measured on this project's development CPU (glibc 2.36, torch 2.14, transformers' Llama, fp32,
# AdamW, the default allocator): the resident-set peak once the heap reached its steady state
# (third training step) was 223.1 MiB above the process before the model was built.
HELD_LOGITS = ModelSpec(name="gen8", family="llama", n_layers=5, hidden=128, n_heads=2, n_kv_heads=2, ffn=416,
                        vocab=18509, max_positions=4096, mlp="swiglu", activation="silu", tied_embeddings=True)
HELD_LOGITS_PEAK = 223.1 * MiB


def test_heap_served_logits_larger_than_the_head_count_one_more_logits_tensor():
    w = Workload(task="train", precision="fp32", optimizer="adamw", batch=1, seq=384)
    mem = estimate_memory(HELD_LOGITS, w, device="cpu")
    assert mem.total_bytes >= 0.95 * HELD_LOGITS_PEAK  # was 192.5 MiB (-14%) without the split hole
    assert mem.total_bytes <= 1.15 * HELD_LOGITS_PEAK
    # with a sequence twice as long each logits tensor (54 MiB) is mapped: no heap hole to split
    longer = estimate_memory(HELD_LOGITS, Workload(task="train", precision="fp32", batch=1, seq=768), device="cpu")
    logits_each = 768 * 18509 * 4
    assert longer.allocator_bytes < logits_each
