"""Fuzzy near-duplicates (MinHash of word 3-grams): planted rewordings are found within a split
and across train/validation; unrelated samples and exact repeats are not reported as fuzzy."""

from __future__ import annotations

import random

import numpy as np

from lmdev.data import CheckOptions, check
from lmdev.data.minhash import MinHasher, near_duplicates

WORDS = [f"w{i}" for i in range(5000)]


def sentence(rng: random.Random, n: int = 40) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def reword(rng: random.Random, text: str) -> str:
    """One word changed near the end and one appended: Jaccard of 3-grams about 0.85-0.9."""
    words = text.split()
    words[-2] = rng.choice(WORDS)
    return " ".join(words + [rng.choice(WORDS)])


def test_signatures_estimate_jaccard():
    h = MinHasher()
    rng = random.Random(1)
    a = sentence(rng)
    same = h.signature(a.upper() + " !")  # case and punctuation do not change the words
    assert (h.signature(a) == same).all()
    other = h.signature(sentence(rng))
    assert (h.signature(a) == other).mean() < 0.2
    assert h.signature("   ...  ") is None


def test_planted_rewordings_found_within_a_split(tmp_path):
    rng = random.Random(0)
    base = [sentence(rng) for _ in range(400)]
    lines = list(base)
    planted = {}
    for i in rng.sample(range(400), 25):
        planted[len(lines)] = i
        lines.append(reword(rng, base[i]))
    lines.append(base[3])  # an exact repeat: reported as a duplicate, not as fuzzy
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n")
    f = {x.id: x for x in check(tmp_path / "c.txt").findings}
    assert f["rows.duplicate"].rows == [len(lines) - 1]
    fuzzy = f["rows.fuzzy_duplicate"]
    assert sorted(fuzzy.rows) == sorted(planted)  # recall 1 and precision 1 on this set
    assert fuzzy.data["samples_compared"] == len(lines) and not fuzzy.data["sampled"]


def test_near_duplicates_names_the_earlier_sample():
    h = MinHasher()
    rng = random.Random(2)
    a, b = sentence(rng), sentence(rng)
    sigs = np.stack([h.signature(t) for t in (a, b, reword(rng, b), reword(rng, a))])
    dup, first = near_duplicates(sigs)
    assert dup.tolist() == [2, 3] and first.tolist() == [1, 0]


def test_reworded_validation_samples_overlap_train(tmp_path):
    rng = random.Random(3)
    train = [sentence(rng) for _ in range(300)]
    val = [sentence(rng) for _ in range(50)]
    leaked = [5, 17, 42]
    for j in leaked:
        val[j] = reword(rng, train[j * 3])
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "val.txt").write_text("\n".join(val) + "\n")
    report = check(tmp_path / "train.txt", CheckOptions(val=str(tmp_path / "val.txt")))
    f = {x.id: x for x in report.findings if x.split == "val"}
    assert f["split.fuzzy_overlap"].rows == leaked and f["split.fuzzy_overlap"].severity == "warn"
    assert "split.overlap" not in f
