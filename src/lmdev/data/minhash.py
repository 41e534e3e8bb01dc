"""Fuzzy near-duplicates of text samples: MinHash signatures of word 3-grams and locality-
sensitive hashing (Broder 1997; Leskovec, Rajaraman and Ullman, "Mining of Massive Datasets",
ch. 3). Two samples whose sets of word 3-grams have a Jaccard similarity of at least
``THRESHOLD`` (estimated) are near-duplicates: a rewording, an added line, a changed number.

Each sample's signature is ``PERMUTATIONS`` minima of a universal hash of its shingles (one numpy
expression per sample); signatures are cut into ``BANDS`` bands, and samples sharing a band are
candidates, confirmed by the share of equal signature values (an unbiased estimate of the
Jaccard similarity). The candidates are found by sorting the band keys, not with a Python dict:
memory is a few numpy arrays (``PERMUTATIONS`` x 4 bytes per sample), and the slow part, the
signatures, runs on at most ``sample`` samples per split (stated in the finding)."""

from __future__ import annotations

import re

from hashlib import blake2b

import numpy as np

PERMUTATIONS = 64
BANDS = 16  # of 4 values each: a pair at Jaccard 0.75 shares a band with probability 0.999
THRESHOLD = 0.75  # estimated Jaccard; with 64 values its standard error is ~0.04 at 0.85
SHINGLE = 3  # words per shingle
SAMPLE = 200_000  # samples per split that get a signature
_WORD = re.compile(r"\w+")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class MinHasher:
    """Signatures of texts; every instance with the same seed computes the same ones."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 2**63, PERMUTATIONS, dtype=np.uint64) | np.uint64(1)  # odd multipliers
        self.b = rng.integers(0, 2**63, PERMUTATIONS, dtype=np.uint64)

    def signature(self, text: str) -> np.ndarray | None:
        """uint32 [PERMUTATIONS], or None for a text without a word."""
        words = _WORD.findall(text.casefold())
        if not words:
            return None
        grams = [" ".join(words[i:i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))]
        # a stable hash (Python's hash() of a str changes with every process: PYTHONHASHSEED)
        h = np.fromiter((int.from_bytes(blake2b(g.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
                         for g in set(grams)), dtype=np.uint64)
        with np.errstate(over="ignore"):
            mixed = (h[None, :] * self.a[:, None] + self.b[:, None]) >> np.uint64(32)  # multiply-shift hashing
        return mixed.min(axis=1).astype(np.uint32)


class Signatures:
    """The signatures of one split's first ``limit`` samples with words, and their row numbers."""

    def __init__(self, hasher: MinHasher, limit: int = SAMPLE) -> None:
        self.hasher, self.limit = hasher, limit
        self._sigs: list[np.ndarray] = []
        self._rows: list[int] = []
        self.seen = 0  # samples offered (the ones past the limit get no signature)

    def add(self, row: int, text: str) -> None:
        self.seen += 1
        if len(self._rows) >= self.limit:
            return
        sig = self.hasher.signature(text)
        if sig is not None:
            self._sigs.append(sig)
            self._rows.append(row)

    @property
    def sampled(self) -> bool:
        return self.seen > len(self._rows) and len(self._rows) >= self.limit

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        sigs = np.stack(self._sigs) if self._sigs else np.empty((0, PERMUTATIONS), np.uint32)
        return sigs, np.asarray(self._rows, dtype=np.int64)


def band_keys(sigs: np.ndarray) -> np.ndarray:
    """uint64 [n, BANDS]: one key per band of each signature (the band's index mixed in)."""
    per = PERMUTATIONS // BANDS
    v = sigs.astype(np.uint64).reshape(len(sigs), BANDS, per)
    with np.errstate(over="ignore"):
        key = np.zeros((len(sigs), BANDS), np.uint64) + np.arange(1, BANDS + 1, dtype=np.uint64) * _GOLDEN
        for j in range(per):
            key = (key ^ v[:, :, j]) * _GOLDEN
            key ^= key >> np.uint64(29)
    return key


def _similar(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b).mean(axis=1) >= THRESHOLD


def near_duplicates(sigs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of samples near-duplicating an earlier one, the earlier one), by position."""
    if len(sigs) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    keys = band_keys(sigs).ravel()
    pos = np.repeat(np.arange(len(sigs)), BANDS)
    order = np.lexsort((pos, keys))  # by key, then by position: each run starts with its earliest sample
    k, p = keys[order], pos[order]
    starts = np.r_[True, k[1:] != k[:-1]]
    first = p[np.maximum.accumulate(np.where(starts, np.arange(len(k)), 0))]
    later = ~starts & (p != first)
    a, b = p[later], first[later]
    keep = _similar(sigs[a], sigs[b])
    a, b = a[keep], b[keep]
    if not len(a):
        return a.astype(np.int64), b.astype(np.int64)
    uniq, idx = np.unique(a, return_index=True)
    return uniq.astype(np.int64), b[idx].astype(np.int64)


def near_matches(sigs: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Positions of ``sigs`` with a near-duplicate in ``reference`` (another split)."""
    if not len(sigs) or not len(reference):
        return np.empty(0, np.int64)
    ref_keys = band_keys(reference)
    flat = ref_keys.ravel()
    order = np.argsort(flat, kind="stable")
    sorted_keys, owner = flat[order], np.repeat(np.arange(len(reference)), BANDS)[order]
    keys = band_keys(sigs)
    found = np.zeros(len(sigs), bool)
    for band in range(BANDS):
        at = np.searchsorted(sorted_keys, keys[:, band])
        at = np.minimum(at, len(sorted_keys) - 1)
        hit = (sorted_keys[at] == keys[:, band]) & ~found
        idx = np.flatnonzero(hit)
        if len(idx):
            found[idx[_similar(sigs[idx], reference[owner[at[idx]]])]] = True
    return np.flatnonzero(found).astype(np.int64)
