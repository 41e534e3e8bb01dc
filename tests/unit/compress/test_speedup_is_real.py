"""A variant the report calls faster is faster when timed independently (timeit, not lmdev's timer).

Only large reported speed-ups are checked, with a generous margin, so a busy machine does not
make the test flaky."""

from __future__ import annotations

import timeit

import torch

from lmdev.compress.core import Options, compress_source

from .conftest import make_source


def test_reported_speedups_hold_under_an_independent_timer():
    source = make_source({"type": "mlp", "hidden": [1024, 1024]})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = compress_source(source, Options(method="prune", ratio=0.75, steps=3, batch=256, budget_s=0.2,
                                                 record=False, memory=False), lambda _m: None)
        pruned = next(v for v in report.variants if v.backend == "pruned")
        assert pruned.faster and max(pruned.speedup) >= 2  # 75% fewer channels: far fewer FLOPs
        from lmdev.compress.prune import prune_mlp

        small, _ = prune_mlp(source.model, 0.75)
        x = source.data.val.batch(torch.arange(256))[0]
        with torch.inference_mode():
            t_base = min(timeit.repeat(lambda: source.model(x), number=20, repeat=5))
            t_small = min(timeit.repeat(lambda: small(x), number=20, repeat=5))
        assert t_small < 0.8 * t_base
    finally:
        torch.set_num_threads(threads)


def test_a_variant_reported_slower_is_slower_under_an_independent_timer(digits_source):
    import pytest

    pytest.importorskip("torchao")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = compress_source(digits_source, Options(method="quantize", backend="torchao-int8", batch=64,
                                                        budget_s=0.1, record=False, memory=False), lambda _m: None)
        (v,) = report.variants
        assert not v.faster and "slower" in v.verdict and report.chosen == "torchao-int8"  # forced, still said
        from lmdev.compress import quantize

        q = quantize.torchao_int8(digits_source.spec, digits_source.model).runner
        x = digits_source.data.val.batch(torch.arange(1))[0]
        with torch.inference_mode():
            t_base = min(timeit.repeat(lambda: digits_source.model(x), number=20, repeat=5))
            t_q = min(timeit.repeat(lambda: q(x), number=20, repeat=5))
        assert t_q > 1.5 * t_base  # reported tens of times slower: slower by any timer
    finally:
        torch.set_num_threads(threads)
