"""Compute, hardware resolution, the advisor's limits, recommendations and hardware comparison."""

from __future__ import annotations

import dataclasses
import json

import pytest

from lmdev.bench.cpu import cpu_peak_flops, flops_per_cycle
from lmdev.catalog.gpus import gpus
from lmdev.catalog.models import param_count, presets
from lmdev.errors import LmdevError
from lmdev.plan.advisor import compare, make_plan, max_batch, max_seq
from lmdev.plan.compute import flops_per_token, matmul_params
from lmdev.plan.hardware import from_catalog, resolve_hardware, this_machine
from lmdev.plan.memory import Workload, estimate_memory
from lmdev.probe.types import CpuFacts, Facts, GpuFacts, HostFacts, MemoryFacts

GiB = 1024**3


def spec(name):
    return presets()[name].spec


def test_training_flops_are_about_6n():
    s = spec("llama-3-8b")
    w = Workload(task="train", seq=128)
    # 6 x (matmul parameters) plus a small attention term at a short context
    assert flops_per_token(s, w) == pytest.approx(6 * matmul_params(s), rel=0.01)
    assert flops_per_token(s, dataclasses.replace(w, task="infer")) == pytest.approx(flops_per_token(s, w) / 3)
    ck = flops_per_token(s, dataclasses.replace(w, activation_checkpointing=True))
    assert ck == pytest.approx(flops_per_token(s, w) * 4 / 3)
    # MoE: only the active experts count
    mix = spec("mixtral-8x7b")
    assert matmul_params(mix) < 0.35 * param_count(mix)


def test_time_for_budget_uses_mfu_and_devices():
    s = spec("llama-3-8b")
    hw = from_catalog(gpus()["h100-sxm"])
    w = Workload(task="train", precision="bf16", seq=2048, devices=8, strategy="fsdp")
    plan = make_plan(s, w, [hw], mfu=0.5, token_budget=1e9)
    expected_tps = 989.4e12 * 0.5 * 8 / flops_per_token(s, w)
    assert plan.compute.tokens_per_s == pytest.approx(expected_tps)
    assert plan.compute.seconds == pytest.approx(1e9 / expected_tps)
    assert plan.compute.throughput_source == "catalog"


def test_max_batch_and_seq_are_exact_limits():
    s = spec("qwen2.5-0.5b")
    hw = from_catalog(gpus()["rtx-4090"])
    w = Workload(task="train", precision="bf16", batch=1, seq=1024)
    b = max_batch(s, w, hw)
    assert b >= 1
    assert estimate_memory(s, dataclasses.replace(w, batch=b)).total_bytes <= hw.available_bytes
    assert estimate_memory(s, dataclasses.replace(w, batch=b + 1)).total_bytes > hw.available_bytes
    t = max_seq(s, w, hw)
    assert estimate_memory(s, dataclasses.replace(w, seq=t)).total_bytes <= hw.available_bytes
    assert t == s.max_positions or estimate_memory(s, dataclasses.replace(w, seq=t + 1)).total_bytes > hw.available_bytes


def test_recommendations_lower_memory_and_fitting_ones_come_first():
    s = spec("llama-3-8b")
    hw = from_catalog(gpus()["a100-80gb"])
    w = Workload(task="train", precision="bf16", batch=4, seq=4096)
    plan = make_plan(s, w, [hw])
    assert not plan.fits
    recs = plan.recommendations
    assert recs and all(r.total_bytes < plan.memory.total_bytes for r in recs)
    fits = [r.fits for r in recs]
    assert fits == sorted(fits, reverse=True)  # every fitting one before every other
    actions = {r.action for r in recs}
    assert {"activation_checkpointing", "shard", "lora", "qlora", "offload_optimizer"} <= actions
    for r in recs:  # each total is what the planner gives for the changed workload
        assert r.total_bytes == estimate_memory(s, dataclasses.replace(w, **r.change)).total_bytes


def test_what_to_buy():
    s = spec("llama-3.1-70b")
    w = Workload(task="infer", precision="bf16", batch=1, seq=4096)
    hws = resolve_hardware("h100-sxm,rtx-4090,h200,mi300x")
    options = {o.hardware: o for o in compare(s, w, hws, None, None)}
    # 141.1 GB of bf16 weights: two H100s, two H200s (141 GB each), one MI300X (192 GB)
    assert options["h100-sxm"].count == 2 and options["h100-sxm"].fits
    assert options["h200"].count == 2 and options["mi300x"].count == 1
    assert options["rtx-4090"].count == 8 and options["rtx-4090"].fits  # 17.6 GB of weights each
    ordered = compare(s, w, hws, None, None)
    assert [o.price_usd for o in ordered] == sorted(o.price_usd for o in ordered)
    # a model no count of a GPU holds comes last, marked as not fitting
    big = {o.hardware: o for o in compare(spec("llama-3.1-405b"), w, hws, None, None)}
    assert not big["rtx-4090"].fits and big["rtx-4090"].count == 8
    assert compare(spec("llama-3.1-405b"), w, hws, None, None)[-1].fits is False


def test_hardware_all_and_unknown():
    assert len(resolve_hardware("all")) == len(gpus())
    with pytest.raises(LmdevError) as err:
        resolve_hardware("h100,tpu-v9")
    assert "tpu-v9" in err.value.message and "h100-sxm" in err.value.hint


def _facts(gpu_names=(), total=16 * GiB, available=12 * GiB):
    host = HostFacts(cpu=CpuFacts(model="Test CPU", architecture="x86_64", cores=8, threads=16,
                                  features=["avx2", "fma", "avx512f"]),
                     memory=MemoryFacts(total_bytes=total, available_bytes=available))
    f = Facts(host=host)
    for i, n in enumerate(gpu_names):
        f.accelerators.gpus.append(GpuFacts(index=i, vendor="nvidia", name=n, memory_total_bytes=80 * GiB,
                                            memory_used_bytes=(1 + i) * GiB))
    return f


def test_this_machine_cpu_only():
    hw = this_machine(_facts(), bench={})
    assert hw.kind == "cpu" and hw.memory_bytes == 16 * GiB and hw.used_bytes == 4 * GiB
    assert hw.available_bytes == 12 * GiB


def test_this_machine_gpus_use_catalog_peaks_and_bench():
    bench = {"gpus": [{"matmul": {"bf16": [{"size": 4096, "flops": 6e14}, {"size": 8192, "flops": 7e14}]}}]}
    hw = this_machine(_facts(["NVIDIA H100 80GB HBM3"] * 2), bench=bench)
    assert hw.catalog == "h100-sxm" and hw.count == 2 and hw.used_bytes == 2 * GiB
    assert hw.throughput("bf16") == (7e14, "bench")
    assert hw.throughput("fp16") == (989.4e12, "catalog")


def test_cpu_peak_from_isa():
    assert flops_per_cycle(["avx512f", "fma", "avx2"])["fp32"] == 64
    assert flops_per_cycle(["avx2", "fma"])["fp32"] == 32
    assert flops_per_cycle(["avx512f", "amx_bf16", "amx_int8"])["bf16"] == 1024
    assert cpu_peak_flops(4, 2.0, ["avx2", "fma"])["fp32"] == 4 * 2e9 * 32
    assert cpu_peak_flops(None, 2.0, []) is None


def test_sequence_beyond_maximum_warns():
    s = spec("gpt2")
    plan = make_plan(s, Workload(task="train", precision="fp32", seq=4096), [from_catalog(gpus()["h100-sxm"])])
    assert any("1024" in msg for msg in plan.warnings)


def test_plan_json_is_serialisable_and_consistent():
    s = spec("qwen2.5-7b")
    plan = make_plan(s, Workload(task="lora", precision="bf16", seq=1024),
                     [from_catalog(gpus()["l40s"]), from_catalog(gpus()["rtx-4090"])])
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["model"]["params"] == 7615616512
    mem = d["memory"]
    parts = sum(mem[f"{p}_bytes"] for p in ("weights", "gradients", "optimizer", "activations", "attention_scores",
                                            "logits", "optimizer_step", "grad_buckets", "kv_cache", "allocator",
                                            "overhead"))
    assert mem["total_bytes"] == parts - mem["overlap_bytes"]
    assert isinstance(d["fits"], bool) and isinstance(d["recommendations"], list) and d["comparison"]


def test_combined_recommendation_when_no_single_change_fits():
    s = spec("llama-3-8b")
    hw = from_catalog(gpus()["rtx-3090"])
    w = Workload(task="train", precision="bf16", batch=2, seq=4096)
    recs = make_plan(s, w, [hw]).recommendations
    assert not any(r.fits for r in recs if "+" not in r.action)
    first = recs[0]
    assert "+" in first.action and first.fits
    assert first.total_bytes == estimate_memory(s, dataclasses.replace(w, **first.change)).total_bytes
    assert first.total_bytes <= hw.available_bytes


@pytest.mark.parametrize("task", ["infer", "train", "lora", "qlora"])
def test_every_preset_plans_on_catalog_hardware(task):
    hws = resolve_hardware("rtx-4090,h100-sxm")
    for p in presets().values():
        s = p.spec
        plan = make_plan(s, Workload(task=task, precision="bf16", seq=min(2048, s.max_positions or 2048)), hws,
                         token_budget=1e9)
        d = json.loads(json.dumps(plan.to_dict()))
        assert d["memory"]["total_bytes"] > 0 and d["compute"]["tokens_per_s"] > 0
        assert len(d["comparison"]) == 2
