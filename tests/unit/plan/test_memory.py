"""The planner's memory parts, each checked against its defining formula or a published figure."""

from __future__ import annotations

import dataclasses

import pytest

from lmdev.catalog.models import ModelSpec, param_count, presets
from lmdev.errors import LmdevError
from lmdev.plan.memory import (
    Workload,
    attention_scores_bytes,
    estimate_memory,
    half_weight_copies_bytes,
    kv_cache_bytes,
    layer_activation_bytes,
    logits_bytes,
    lora_params,
)

TINY = ModelSpec(name="tiny", family="llama", n_layers=4, hidden=256, n_heads=8, n_kv_heads=2, ffn=704,
                 vocab=1000, max_positions=512, mlp="swiglu", activation="silu")


def spec(name: str) -> ModelSpec:
    return presets()[name].spec


def test_fp32_adam_states_are_16_bytes_per_param():
    w = Workload(task="train", precision="fp32", optimizer="adamw", batch=1, seq=16)
    m = estimate_memory(TINY, w, device="cpu")
    P = param_count(TINY)
    assert (m.weights_bytes, m.gradients_bytes, m.optimizer_bytes) == (4 * P, 4 * P, 8 * P)


def test_mixed_precision_keeps_fp32_master_and_half_copies():
    w = Workload(task="train", precision="bf16", optimizer="adamw", batch=1, seq=16)
    m = estimate_memory(TINY, w, device="cpu")
    P = param_count(TINY)
    assert m.weights_bytes == 4 * P + half_weight_copies_bytes(TINY, w)
    assert 0 < half_weight_copies_bytes(TINY, w) < 2 * P  # embedding lookups are not cast
    assert m.gradients_bytes == 4 * P and m.optimizer_bytes == 8 * P


def test_sgd_and_8bit_optimizers():
    P = param_count(TINY)
    sgd = estimate_memory(TINY, Workload(task="train", precision="fp32", optimizer="sgd", seq=16), device="cpu")
    a8 = estimate_memory(TINY, Workload(task="train", precision="fp32", optimizer="adamw8bit", seq=16), device="cpu")
    assert sgd.optimizer_bytes == 4 * P
    assert 2 * P <= a8.optimizer_bytes < 2.1 * P


def test_total_is_parts_minus_overlap_and_overlap_is_the_smaller_group():
    for w in (Workload(task="train", precision="fp32", batch=1, seq=8),
              Workload(task="train", precision="fp32", batch=64, seq=512)):
        m = estimate_memory(TINY, w, device="cpu")
        parts = sum(getattr(m, f"{p}_bytes") for p in m.PARTS)
        assert m.total_bytes == parts - m.overlap_bytes
        forward = m.activations_bytes + m.attention_scores_bytes + m.logits_bytes
        step = m.gradients_bytes + m.optimizer_step_bytes
        head_grad = TINY.vocab * TINY.hidden * 4  # made while the logits' gradients are alive
        # the peak is the larger phase; the rest is not held at the same time
        assert m.total_bytes - (m.weights_bytes + m.optimizer_bytes + m.allocator_bytes + m.overhead_bytes) == \
            max(forward + head_grad, step)


def test_llama3_8b_kv_cache_is_128_kib_per_token():
    # 32 layers x 8 KV heads x 128 dims x (K and V) x 2 bytes = 131072 bytes per token (bf16)
    s = spec("llama-3-8b")
    w = Workload(task="infer", precision="bf16", batch=3, seq=1000)
    assert kv_cache_bytes(s, w) == 131072 * 3000
    assert kv_cache_bytes(s, dataclasses.replace(w, task="train")) == 0


def test_activations_linear_in_batch_and_checkpointing_saves():
    w = Workload(task="train", precision="bf16", batch=1, seq=256)
    a1 = estimate_memory(TINY, w, device="cpu").activations_bytes
    a4 = estimate_memory(TINY, dataclasses.replace(w, batch=4), device="cpu").activations_bytes
    assert a4 == pytest.approx(4 * a1, rel=1e-6)
    ck = estimate_memory(TINY, dataclasses.replace(w, activation_checkpointing=True), device="cpu")
    assert ck.activations_bytes < a1


def test_eager_attention_is_quadratic_sdpa_is_not():
    w = Workload(task="train", precision="bf16", batch=1, seq=1024)
    sdpa1, sdpa2 = (layer_activation_bytes(TINY, dataclasses.replace(w, seq=s)) for s in (1024, 2048))
    assert sdpa1 == sdpa2  # per token: no s x s term
    assert attention_scores_bytes(TINY, w) == 0  # fused: no scores held
    eager = dataclasses.replace(w, attention="eager")
    # every layer keeps its fp32 softmax and the bf16 copy the next matmul saves: 6 bytes per score
    assert attention_scores_bytes(TINY, eager) == TINY.n_layers * TINY.n_heads * 1024 * 1024 * (4 + 2)
    assert attention_scores_bytes(TINY, dataclasses.replace(eager, seq=2048)) == 4 * attention_scores_bytes(TINY, eager)
    fp32 = dataclasses.replace(eager, precision="fp32")
    assert attention_scores_bytes(TINY, fp32) == TINY.n_layers * TINY.n_heads * 1024 * 1024 * 4
    # inference: one layer's scores at a time
    inf = Workload(task="infer", precision="fp32", batch=1, seq=1024, attention="eager")
    assert attention_scores_bytes(TINY, inf) == TINY.n_heads * 1024 * 1024 * 8
    m = estimate_memory(TINY, eager, device="cpu")
    assert m.attention_scores_bytes == attention_scores_bytes(TINY, eager, "cpu") > 0


def test_korthikanti_baseline():
    # GPT-3-like layer, fp16, eager with dropout: Korthikanti et al. give sbh(34 + 5as/h) bytes per
    # layer: 34 bytes x hidden per token, and 5 bytes x heads x seq for the scores (fp16 softmax, dropout
    # mask and output). We split our count the same way: the linear part (activations) must be of that
    # size; the quadratic part (attention_scores) is 9 (the softmax is kept in fp32 and cast, as Hugging
    # Face models do)
    s = ModelSpec(name="g", family="gpt2", n_layers=1, hidden=4096, n_heads=32, ffn=16384, vocab=50000,
                  mlp="gelu", activation="gelu", norm="layernorm", attn_dropout=0.1, hidden_dropout=0.1)
    w = Workload(task="train", precision="bf16", batch=1, seq=2048, attention="eager")
    quadratic_per_head_token = attention_scores_bytes(s, w) / (s.n_heads * 2048 * 2048)
    linear_per_hidden = layer_activation_bytes(s, w) / s.hidden
    assert quadratic_per_head_token == 9
    assert 34 * 0.8 < linear_per_hidden < 34 * 1.3


def test_gqa_lowers_activations_and_cache():
    mha = dataclasses.replace(TINY, n_kv_heads=8)
    w = Workload(task="infer", precision="bf16", batch=1, seq=64)
    assert kv_cache_bytes(mha, w) == 4 * kv_cache_bytes(TINY, w)
    wt = dataclasses.replace(w, task="train")
    assert layer_activation_bytes(mha, wt) > layer_activation_bytes(TINY, wt)


def test_logits_training_counts_four_vocab_tensors():
    w = Workload(task="train", precision="fp32", batch=2, seq=10)
    assert logits_bytes(TINY, w) == 2 * 10 * 1000 * 16


def test_moe_activations_scale_with_experts_per_token():
    s = spec("mixtral-8x7b")
    w = Workload(task="train", precision="bf16", batch=1, seq=128)
    top1 = dataclasses.replace(s, experts_per_token=1)
    assert layer_activation_bytes(s, w) > layer_activation_bytes(top1, w)


def test_sharding_and_ddp_buckets():
    s = spec("llama-3-8b")
    base = Workload(task="train", precision="bf16", batch=1, seq=1024)
    one = estimate_memory(s, base)
    z3 = estimate_memory(s, dataclasses.replace(base, devices=8, strategy="zero3"))
    z2 = estimate_memory(s, dataclasses.replace(base, devices=8, strategy="zero2"))
    ddp = estimate_memory(s, dataclasses.replace(base, devices=8, strategy="ddp"))
    assert z3.optimizer_bytes == one.optimizer_bytes // 8
    assert z2.weights_bytes == one.weights_bytes and z2.optimizer_bytes == one.optimizer_bytes // 8
    assert z3.total_bytes < z2.total_bytes < one.total_bytes < ddp.total_bytes


def test_offload_moves_state_to_host():
    s = spec("llama-3-8b")
    w = Workload(task="train", precision="bf16", seq=512, offload="optimizer")
    m = estimate_memory(s, w)
    assert m.optimizer_bytes == 0 and m.cpu_offload_bytes >= 8 * param_count(s)


def test_lora_and_qlora():
    s = spec("llama-3-8b")
    full = estimate_memory(s, Workload(task="train", precision="bf16", seq=512))
    lora = estimate_memory(s, Workload(task="lora", precision="bf16", seq=512, lora_rank=16))
    qlora = estimate_memory(s, Workload(task="qlora", precision="bf16", seq=512, lora_rank=16))
    # LoRA rank 16 on all linear layers of Llama-3-8B: 41,943,040 adapter parameters (PEFT's count)
    assert lora_params(s, 16) == 41_943_040
    assert qlora.total_bytes < lora.total_bytes < full.total_bytes
    assert lora.gradients_bytes == 4 * lora_params(s, 16)


def test_gpu_overhead_includes_context_and_reserve_and_learned_values():
    w = Workload(task="infer", precision="bf16", seq=128)
    m = estimate_memory(TINY, w, device="gpu")
    assert m.overhead_bytes >= 500 * 2**20
    learned = estimate_memory(TINY, w, device="gpu", overhead={"context_bytes": 0, "reserve_fraction": 0.0})
    assert learned.overhead_bytes == 32 * 2**20
    cpu = estimate_memory(TINY, w, device="cpu", overhead={"cpu_bytes": 123})
    assert cpu.overhead_bytes == 123


@pytest.mark.parametrize("change, word", [
    ({"batch": 0}, "--batch"), ({"seq": 0}, "--seq"), ({"task": "pretrain"}, "task"),
    ({"precision": "int4"}, "int4"), ({"devices": 0}, "--devices"),
])
def test_bad_workloads(change, word):
    w = dataclasses.replace(Workload(task="train"), **change)
    with pytest.raises(LmdevError) as err:
        estimate_memory(TINY, w)
    assert word in err.value.message


@pytest.mark.parametrize("name", sorted(presets()))
@pytest.mark.parametrize("task", ["infer", "train", "lora", "qlora"])
def test_every_preset_and_task_plans(name, task):
    s = spec(name)
    m = estimate_memory(s, Workload(task=task, precision="bf16", seq=min(512, s.max_positions or 512)))
    assert m.total_bytes > m.weights_bytes > 0
