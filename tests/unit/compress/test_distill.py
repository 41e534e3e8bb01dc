"""Distillation reports its search and its plainly trained twin, and never claims a gain it lacks."""

from __future__ import annotations

import pytest

from lmdev.compress import distill
from lmdev.compress.source import Source
from lmdev.errors import LmdevError


def test_distilling_without_data_is_refused(digits_source):
    s = digits_source
    bare = Source("hf:x", "hf", s.model, s.spec, None, None)
    with pytest.raises(LmdevError, match="needs training data"):
        distill.check(bare)


def test_student_is_half_the_teacher():
    from lmdev.compress.source import ModelSpec

    mlp = distill.student_spec(ModelSpec("lmdev", {"type": "mlp", "hidden": [128, 64]}, {}))
    assert mlp.config["hidden"] == [64, 32]
    gpt = distill.student_spec(ModelSpec("lmdev", {"type": "gpt", "n_layer": 4, "n_head": 4, "n_embd": 128}, {}))
    assert gpt.config["n_layer"] == 2 and gpt.config["n_embd"] == 64 and gpt.config["n_embd"] // 4 % 2 == 0


def test_gain_is_claimed_only_when_the_student_beats_its_twin(digits_source):
    v = distill.distill_variant(digits_source, 40)
    rep = v.settings["search_report"]
    assert len(rep["search"]) == 1 + len(distill.GRID)
    assert rep["search"][0]["alpha"] == 0.0  # the twin is part of the search
    beats = rep["student_eval"] > rep["twin_eval"] and rep["chosen"]["alpha"] > 0
    assert rep["gain"] == beats and v.settings["gain"] == beats
    assert ("helped" in rep["verdict"]) == beats
