"""The verdicts are read off the measurements: slower says so, the choice respects --max-drop."""

from __future__ import annotations

import json
import math

import torch

from lmdev.compress import measure as ms
from lmdev.compress.report import NO_SPEEDUP, Report, VariantReport, choose, judge, mark_pareto, render_json, \
    render_html, summary_notes


def _m(p50_b1: float, p50_bn: float, acc: float, size: int = 1000) -> ms.Measurement:
    lat = [ms.Latency(1, p50_b1, p50_b1 * 1.2, 10, 1 / p50_b1), ms.Latency(64, p50_bn, p50_bn, 10, 64 / p50_bn)]
    return ms.Measurement(size, size, lat, ms.Quality("accuracy", acc, accuracy=acc, top1_agreement=0.99))


def _variants(base: ms.Measurement) -> list[VariantReport]:
    vs = [VariantReport("slow", "quantize", "slow", measurement=_m(2.0, 20.0, 0.95, 500)),
          VariantReport("fast-bad", "quantize", "fast-bad", measurement=_m(0.2, 2.0, 0.80, 300)),
          VariantReport("fast-ok", "quantize", "fast-ok", measurement=_m(0.5, 5.0, 0.948, 400))]
    for v in vs:
        judge(v, base, max_drop=1.0)
    return vs


def test_a_slower_variant_says_no_speedup_and_a_faster_one_is_chosen_within_the_drop():
    base = _m(1.0, 10.0, 0.95)
    slow, fast_bad, fast_ok = _variants(base)
    assert NO_SPEEDUP in slow.verdict and not slow.faster
    assert fast_bad.faster and fast_bad.within_drop is False and "quality drop" in fast_bad.verdict
    assert fast_ok.faster and fast_ok.speedup == [2.0, 2.0]
    assert choose([slow, fast_bad, fast_ok], "latency", None) is fast_ok
    assert choose([slow, fast_bad, fast_ok], "size", None) is fast_ok  # smallest within the drop
    assert choose([slow], "latency", None) is None
    assert choose([slow, fast_ok], "latency", "slow") is slow  # --backend forces it


def test_pareto_front_and_the_small_model_note():
    base = _m(1.0, 10.0, 0.95)
    vs = _variants(base)
    b = VariantReport("fp32", "baseline", "torch-fp32", measurement=base, quality_drop=0.0)
    mark_pareto([b, *vs], "latency")
    assert [v.pareto for v in vs] == [False, True, True] and b.pareto
    report = Report({"ref": "x"}, {}, "auto", "latency", 1.0, b, [vs[0]])
    summary_notes(report, 17_000)
    assert any("below the size where compression pays" in n for n in report.notes)


def test_paired_baseline_is_what_the_ratio_uses():
    base = _m(1.0, 10.0, 0.95)
    m = _m(1.0, 10.0, 0.95)
    m.paired_baseline = [ms.Latency(1, 3.0, 3.0, 5, 1.0), ms.Latency(64, 30.0, 30.0, 5, 1.0)]
    assert ms.speedup(m, base) == [3.0, 3.0]


def test_json_has_no_nan_and_html_escapes():
    base = _m(1.0, 10.0, float("nan"))
    b = VariantReport("<fp32>", "baseline", "torch-fp32", measurement=base)
    report = Report({"ref": "<run>"}, {"cpu": "x"}, "auto", "latency", 1.0, b, [])
    doc = json.loads(render_json(report))
    assert doc["schema"] == "lmdev.compress/1" and doc["baseline"]["measurement"]["quality"]["value"] is None
    page = render_html(report)
    assert "<run>" not in page.split("<script")[0] and "&lt;run&gt;" in page


def test_quality_metrics_and_agreement():
    y = torch.tensor([0, 1, 2, 1])
    out = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 2]), 3).float() * 5
    ev = ms.EvalSet([(torch.zeros(4, 1), y)], "classification", [])
    q, outs = ms.evaluate(lambda x: out, ev, [out.clone()])
    assert q.accuracy == 0.75 and q.top1_agreement == 1.0 and q.rel_logit_error == 0.0 and q.examples == 4
    q2, _ = ms.evaluate(lambda x: out * 1.1, ev, outs)
    assert math.isclose(q2.rel_logit_error, 0.1, rel_tol=1e-5)
    lm = ms.EvalSet([(torch.zeros(1, 2), torch.tensor([[0, 1]]))], "language_modeling", [])
    q3, _ = ms.evaluate(lambda x: torch.zeros(1, 2, 4), lm)
    assert math.isclose(q3.perplexity, 4.0, rel_tol=1e-5)  # uniform over 4 tokens


def test_eval_set_keeps_outputs_bounded_by_the_model_vocabulary(gpt_source):
    from lmdev.compress.source import ModelSpec, Source

    s = gpt_source  # byte data (256 symbols) read by a model with a 50,257-token head
    hf = Source("hf:x", "hf", s.model, ModelSpec("hf", {"vocab_size": 50257, "n_positions": 64}), s.data, None)
    ev = ms.make_eval_set(hf, batch=4)
    vocab = torch.full((50257,), -1e4)
    vocab[:256] = 0.0  # the outputs of a model that knows only the bytes, all alike
    q, outs = ms.evaluate(lambda x: vocab.expand(*x.shape, -1).clone(), ev)
    assert sum(o.numel() for o in outs) <= ms.MAX_LOGITS  # only this many outputs are held
    assert q.examples == len(s.data.val) > sum(len(o) for o in outs)  # the metric is over every example
    assert math.isclose(q.perplexity, 256.0, rel_tol=1e-4)  # uniform over the 256 bytes


def test_slower_and_larger_are_said_plainly_and_memory_target_uses_the_peak():
    base = _m(1.0, 10.0, 0.95, 1000)
    base.peak_memory_bytes = 10_000
    big = _m(3.0, 30.0, 0.95, 1800)
    big.peak_memory_bytes = 25_000
    lean = _m(1.0, 10.0, 0.95, 1000)
    lean.memory_bytes = 2000  # more weights held, but a lower measured peak
    lean.peak_memory_bytes = 5_000
    vb, vl = VariantReport("big", "quantize", "big", measurement=big), VariantReport("lean", "q", "lean",
                                                                                       measurement=lean)
    judge(vb, base, 1.0)
    judge(vl, base, 1.0)
    assert "3.00x slower" in vb.verdict and "1.80x larger" in vb.verdict and "2.50x the peak memory" in vb.verdict
    assert vl.peak_memory_ratio == 0.5 and "slower" not in vl.verdict
    assert choose([vb, vl], "memory", None) is vl


def test_latency_choice_uses_the_paired_ratio_not_p50s_taken_under_different_loads():
    base = _m(1.0, 10.0, 0.95)
    calm = _m(0.8, 8.0, 0.95)  # measured while the machine was quiet: 0.8 ms, but only 1.25x its paired fp32
    calm.paired_baseline = [ms.Latency(1, 1.0, 1.0, 5, 1.0), ms.Latency(64, 10.0, 10.0, 5, 1.0)]
    busy = _m(2.0, 20.0, 0.95)  # measured under load: 2 ms, yet 2.5x faster than fp32 timed beside it
    busy.paired_baseline = [ms.Latency(1, 5.0, 5.0, 5, 1.0), ms.Latency(64, 50.0, 50.0, 5, 1.0)]
    vc, vb = VariantReport("calm", "q", "calm", measurement=calm), VariantReport("busy", "q", "busy", measurement=busy)
    for v in (vc, vb):
        judge(v, base, 1.0)
    assert choose([vc, vb], "latency", None) is vb
