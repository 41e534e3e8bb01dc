"""Advice that agrees with itself: one hardware ranking, dtypes only where the chip has them, every
exclusion with its reason; inference modes and serving capacity; bad input named."""

from __future__ import annotations

import dataclasses
import math

import pytest

from lmdev.catalog.gpus import gpus
from lmdev.catalog.models import ModelSpec, presets
from lmdev.errors import LmdevError
from lmdev.plan.advisor import Option, compare, default_precision, fewest_devices, make_plan
from lmdev.plan.hardware import from_catalog
from lmdev.plan.memory import Workload, estimate_memory, kv_bytes_per_sequence, logits_bytes

GiB = 1024**3


def hw(name):
    return from_catalog(gpus()[name])


def spec(name):
    return presets()[name].spec


# --- dtypes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["t4", "v100"])
def test_no_bf16_on_turing_and_volta(name):
    w = Workload(task="infer", precision="bf16", seq=512)
    with pytest.raises(LmdevError, match=f"bf16 is not supported on {name}") as e:
        make_plan(spec("llama-3.2-1b"), w, [hw(name)])
    assert "fp16" in e.value.hint
    assert default_precision(hw(name)) == "fp16"
    assert default_precision(hw("a100-80gb")) == "bf16"


@pytest.mark.parametrize("name, ok", [("h100-sxm", True), ("l40s", True), ("rtx-4090", True), ("mi300x", True),
                                      ("a100-80gb", False), ("rtx-3090", False), ("t4", False), ("mi250x", False)])
def test_fp8_only_on_ada_hopper_and_later(name, ok):
    w = Workload(task="infer", precision="fp8", seq=512)
    if ok:
        plan = make_plan(spec("llama-3-8b"), w, [hw(name)])
        assert plan.memory.weights_bytes < 1.01 * 8.03e9
    else:
        with pytest.raises(LmdevError, match="fp8 is not supported"):
            make_plan(spec("llama-3-8b"), w, [hw(name)])


def test_fp8_weights_offered_only_where_supported_and_exclusions_say_why():
    w = Workload(task="infer", precision="bf16", batch=64, seq=4096)
    on_h100 = make_plan(spec("llama-3-70b"), w, [hw("h100-sxm")])
    on_a100 = make_plan(spec("llama-3-70b"), w, [hw("a100-80gb")])
    assert "fp8_weights" in {r.action for r in on_h100.recommendations}
    assert "fp8_weights" not in {r.action for r in on_a100.recommendations}
    why = [e for e in on_a100.excluded if e.option == "fp8 weights"]
    assert why and "Ampere" in why[0].reason and "source" in why[0].reason
    for plan in (on_h100, on_a100):
        assert all(e.reason for e in plan.excluded)


def test_fp32_training_on_t4_offers_fp16_not_bf16():
    w = Workload(task="train", precision="fp32", seq=1024)
    plan = make_plan(spec("qwen2.5-0.5b"), w, [hw("t4")])
    actions = {r.action for r in plan.recommendations} | {a for r in plan.recommendations for a in r.action.split("+")}
    assert "bf16" not in actions
    assert any(e.option == "bf16 mixed precision" and "Turing" in e.reason for e in plan.excluded)


def test_what_to_buy_plans_t4_in_fp16_and_says_so():
    w = Workload(task="infer", precision="bf16", seq=2048)
    opts = {o.hardware: o for o in compare(spec("llama-3.2-1b"), w, [hw("t4"), hw("l4")], None, None)}
    assert opts["t4"].precision == "fp16" and "bf16 not offered" in opts["t4"].note
    assert opts["l4"].precision == "bf16" and opts["l4"].note == ""


# --- one candidate set, one ranking ------------------------------------------------------------------

WORKLOADS = [
    ("llama-3-70b", Workload(task="train", precision="bf16", seq=4096)),
    ("llama-3-8b", Workload(task="train", precision="bf16", batch=4, seq=2048)),
    ("llama-3-70b", Workload(task="infer", precision="bf16", batch=8, seq=4096, new_tokens=256)),
    ("qwen2.5-7b", Workload(task="qlora", precision="bf16", seq=2048)),
    ("mixtral-8x7b", Workload(task="serve", precision="bf16", seq=1024, context=4096, concurrency=32)),
]
CANDIDATES = ["rtx-4090", "a100-80gb", "h100-sxm", "t4", "l40s", "mi300x"]


@pytest.mark.parametrize("model, w", WORKLOADS)
def test_recommended_hardware_is_the_top_of_the_same_ranking(model, w):
    hws = [hw(n) for n in CANDIDATES]
    plan = make_plan(spec(model), w, hws)
    ranked = sorted(plan.comparison, key=Option.rank_key)
    assert plan.comparison == ranked
    if any(o.fits for o in plan.comparison):
        assert plan.recommended_hardware == plan.comparison[0] and plan.recommended_hardware.fits
        # nothing cheaper fits
        cheaper = [o for o in plan.comparison if o.fits and (o.price_usd or 0) < (plan.recommended_hardware.price_usd or 0)]
        assert not cheaper
    else:
        assert plan.recommended_hardware is None


@pytest.mark.parametrize("model, w", WORKLOADS[:3])
def test_shard_recommendation_uses_the_what_to_buy_device_count(model, w):
    hws = [hw("h100-sxm"), hw("a100-80gb")]
    plan = make_plan(spec(model), w, hws)
    n, _wn, _mem = fewest_devices(spec(model), w, hws[0])
    row = next(o for o in plan.comparison if o.hardware == "h100-sxm")
    assert row.count == n
    for rec in plan.recommendations:
        if rec.action in ("shard", "tensor_parallel"):
            assert rec.change["devices"] == max(2, n)


def test_options_on_one_device_kinds_are_excluded_with_reason():
    plan = make_plan(spec("llama-3-70b"), Workload(task="train", seq=2048), [hw("apple-m2-ultra")])
    assert any(e.option == "more devices" and "one device" in e.reason for e in plan.excluded)


# --- inference modes ---------------------------------------------------------------------------------

def test_prefill_holds_every_positions_logits_unless_told_otherwise():
    s = spec("llama-3-8b")
    w = Workload(task="infer", precision="bf16", batch=2, seq=1000)
    assert logits_bytes(s, w) == 2 * 1000 * s.vocab * 2  # bf16, no upcast without a loss
    last = dataclasses.replace(w, logits="last")
    assert logits_bytes(s, last) == 2 * s.vocab * (2 + 4)  # the last position and sampling's fp32 copy
    assert estimate_memory(s, last).total_bytes < estimate_memory(s, w).total_bytes
    plan = make_plan(s, w, [hw("h100-sxm")])
    assert "last_logits" in {r.action for r in plan.recommendations}


def test_generation_caches_prompt_and_new_tokens_and_keeps_last_logits():
    s = spec("llama-3-8b")
    w = Workload(task="infer", precision="bf16", batch=3, seq=1000, new_tokens=200)
    m = estimate_memory(s, w)
    assert m.kv_cache_bytes == 3 * 1200 * 131072
    assert m.logits_bytes == 3 * s.vocab * (2 + 4)
    plan = make_plan(s, w, [hw("h100-sxm")])
    st = plan.step_time
    # per token: every weight and the cache read once at the memory bandwidth (at least)
    assert st["decode_seconds_per_token"] >= (m.weights_bytes + m.kv_cache_bytes * 0.9) / 3.35e12
    assert st["decode_seconds_per_token"] < 0.05


def test_serve_capacity_in_sequences():
    s = spec("llama-3-8b")
    w = Workload(task="serve", precision="bf16", seq=512, context=4096, concurrency=16)
    plan = make_plan(s, w, [hw("a100-80gb")])
    sv = plan.serving
    per = kv_bytes_per_sequence(s, w, 4096)
    assert sv["kv_bytes_per_sequence"] == per == 4096 * 131072
    room = plan.hardware.available_bytes - sv["bytes_without_cache"]
    assert sv["max_sequences"] == room // per and sv["max_sequences"] >= 16 and sv["fits"]
    # more concurrency than the cache holds: does not fit
    big = make_plan(s, dataclasses.replace(w, concurrency=sv["max_sequences"] + 1), [hw("a100-80gb")])
    assert big.serving["fits"] is False and big.fits is False
    assert sv["tokens_per_s"] == pytest.approx(16 / sv["decode_seconds_per_token"])


# --- bad input -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, field", [
    ({"batch": float("nan")}, "--batch"), ({"seq": math.inf}, "--seq"), ({"seq": 0}, "--seq"),
    ({"batch": -3}, "--batch"), ({"concurrency": 0}, "--concurrency"), ({"new_tokens": -1}, "--new-tokens"),
    ({"task": "serve", "seq": 512, "context": 100}, "--context"), ({"logits": "some"}, "logits"),
    ({"task": "train", "precision": "fp8"}, "fp8"),
])
def test_bad_workload_names_the_field(change, field):
    with pytest.raises(LmdevError, match=field):
        Workload(**change).validate()


@pytest.mark.parametrize("fields, named", [
    ({"hidden": 1000, "n_heads": 3}, "hidden 1000 is not divisible by n_heads 3"),
    ({"n_heads": 8, "n_kv_heads": 3}, "n_heads 8 is not a multiple of n_kv_heads 3"),
    ({"vocab": float("nan")}, "vocab"), ({"n_layers": -2}, "n_layers"), ({"ffn": 0}, "ffn"),
    ({"attn_dropout": float("nan")}, "attn_dropout"), ({"hidden": float("inf")}, "hidden"),
])
def test_impossible_model_shapes_name_the_field(fields, named):
    base = {"name": "m", "n_layers": 2, "hidden": 64, "n_heads": 4, "ffn": 128, "vocab": 100}
    with pytest.raises(LmdevError, match=named):
        ModelSpec(**{**base, **fields})
