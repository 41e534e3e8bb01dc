"""The text checks, one streaming pass over a corpus's lines (a sample is a line): empty and
overlong samples, bytes that are not UTF-8, the token-length histogram, exact duplicates (a
hash of the bytes), near duplicates (a hash of the text normalised: case folded, only letters
and digits, single spaces) and fuzzy near duplicates (MinHash of word 3-grams, Jaccard >= 0.8,
on the first ``minhash.SAMPLE`` samples of each split: :mod:`lmdev.data.minhash`)."""

from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Callable

import numpy as np

from lmdev.data import hashing, minhash
from lmdev.data.read import TextSource
from lmdev.data.types import Finding

DUP_WARN = 0.01  # exact duplicates above this share of a split are a warning (below: info)
MAX_ROWS = 1_000_000  # row indices remembered per kind (empty, overlong, non-UTF-8)
_WORDS = re.compile(r"[^\w]+")


def _h64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def normalise(text: str) -> str:
    return _WORDS.sub(" ", text.casefold()).strip()


def byte_tokens(line: bytes) -> int:
    return len(line) + 1  # the newline is a token too


def tiktoken_counter() -> Callable[[bytes], int] | None:
    try:
        import tiktoken
    except ImportError:
        return None
    enc = tiktoken.get_encoding("gpt2")
    return lambda line: len(enc.encode_ordinary(line.decode("utf-8", "replace"))) + 1


class TextScan:
    def __init__(self, src: TextSource, max_tokens: int, count: Callable[[bytes], int] = byte_tokens,
                 minhash_sample: int = minhash.SAMPLE) -> None:
        self.src, self.max_tokens, self.count = src, max_tokens, count
        self.n = 0
        self.exact, self.near = array("Q"), array("Q")
        self.rows = array("q")  # the row of each hash (empty lines are not hashed)
        self.empty, self.overlong, self.non_utf8 = array("q"), array("q"), array("q")
        self.counts = {"empty": 0, "overlong": 0, "non_utf8": 0}
        self.histogram: dict[int, int] = {}  # bucket b: token lengths in [2^(b-1), 2^b)
        self.longest = 0
        self.fuzzy = minhash.Signatures(minhash.MinHasher(), minhash_sample)

    def run(self) -> TextScan:
        for i, line in enumerate(self.src.lines()):
            self.add(i, line)
        return self

    def add(self, i: int, line: bytes) -> None:
        self.n += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("utf-8", "replace")
            self._mark("non_utf8", self.non_utf8, i)
        if not text.strip():
            self._mark("empty", self.empty, i)
            return
        tokens = self.count(line)
        self.longest = max(self.longest, tokens)
        bucket = tokens.bit_length()
        self.histogram[bucket] = self.histogram.get(bucket, 0) + 1
        if tokens > self.max_tokens:
            self._mark("overlong", self.overlong, i)
        self.exact.append(_h64(line))
        self.near.append(_h64(normalise(text).encode()))
        self.rows.append(i)
        self.fuzzy.add(i, text)

    def _mark(self, kind: str, rows: array, i: int) -> None:
        self.counts[kind] += 1
        if len(rows) < MAX_ROWS:
            rows.append(i)

    def hashes(self, which: str) -> np.ndarray:
        return np.frombuffer(self.exact if which == "exact" else self.near, dtype=np.uint64)

    def row_numbers(self, positions: np.ndarray) -> np.ndarray:
        return np.frombuffer(self.rows, dtype=np.int64)[positions] if len(positions) else positions


def hygiene_findings(scan: TextScan) -> list[Finding]:
    name, n, out = scan.src.name, max(scan.n, 1), []
    c = scan.counts
    if c["non_utf8"]:
        out.append(Finding("text.non_utf8", "warn", f"{c['non_utf8']:,} samples of {name} hold bytes that are not "
                           "UTF-8", "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)", name,
                           c["non_utf8"], list(scan.non_utf8)))
    if c["empty"]:
        share = c["empty"] / n
        out.append(Finding("text.empty", "warn" if share > 0.05 else "info",
                           f"{c['empty']:,} samples of {name} ({share:.1%}) are empty or whitespace only",
                           "drop them, unless blank lines separate documents on purpose", name,
                           c["empty"], list(scan.empty)))
    if c["overlong"]:
        out.append(Finding("text.overlong", "warn",
                           f"{c['overlong']:,} samples of {name} are longer than {scan.max_tokens} tokens "
                           f"(the longest: {scan.longest:,}); training cuts them across windows",
                           f"raise data.seq_len (and model.block_size) to {min(scan.longest, 1 << 16)} or split "
                           "long samples at sentence ends", name, c["overlong"], list(scan.overlong)))
    hist = {f"{(1 << (b - 1)) if b else 0}-{(1 << b) - 1}": k for b, k in sorted(scan.histogram.items())}
    out.append(Finding("text.lengths", "info", f"{name}: {scan.n:,} samples, token lengths "
                       + ", ".join(f"{k}: {v:,}" for k, v in hist.items()), "none needed", name, 0,
                       data={"histogram": hist, "longest": scan.longest, "max_tokens": scan.max_tokens}))
    return out


def duplicate_findings(scan: TextScan) -> list[Finding]:
    name, out = scan.src.name, []
    dup, _ = hashing.duplicate_rows(scan.hashes("exact"))
    if len(dup):
        share = len(dup) / max(1, scan.n)
        rows = scan.row_numbers(dup)
        out.append(Finding("rows.duplicate", "warn" if share >= DUP_WARN else "info",
                           f"{len(dup):,} samples of {name} ({share:.2%}) repeat an earlier sample exactly",
                           "deduplicate the corpus: repeats are memorised instead of learned", name,
                           len(dup), rows.tolist()))
    near, _ = hashing.duplicate_rows(scan.hashes("near"))
    near = np.setdiff1d(near, dup)
    if len(near):
        out.append(Finding("rows.near_duplicate", "info",
                           f"{len(near):,} samples of {name} equal an earlier one up to case, spacing and "
                           "punctuation", "deduplicate on normalised text", name, len(near),
                           scan.row_numbers(near).tolist()))
    sigs, rows = scan.fuzzy.arrays()
    pos, _first = minhash.near_duplicates(sigs)
    fuzzy = np.setdiff1d(rows[pos], scan.row_numbers(np.union1d(dup, near)))
    if len(fuzzy):
        out.append(Finding("rows.fuzzy_duplicate", "info",
                           f"{len(fuzzy):,} samples of {name} share at least {minhash.THRESHOLD:.0%} of their "
                           f"word 3-grams with an earlier sample{_sampled(scan)}",
                           "deduplicate with a near-duplicate filter (MinHash), not only exact matches", name,
                           len(fuzzy), fuzzy.tolist(), data=_fuzzy_data(scan)))
    return out


def _sampled(scan: TextScan) -> str:
    return f" (MinHash over the first {scan.fuzzy.limit:,} samples)" if scan.fuzzy.sampled else " (MinHash)"


def _fuzzy_data(scan: TextScan) -> dict[str, object]:
    return {"method": f"MinHash, {minhash.PERMUTATIONS} permutations, {minhash.BANDS} bands, word "
                      f"{minhash.SHINGLE}-grams", "threshold": minhash.THRESHOLD,
            "samples_compared": len(scan.fuzzy.arrays()[1]), "sampled": scan.fuzzy.sampled}


def overlap_findings(train: TextScan, other: TextScan) -> list[Finding]:
    name, out = other.src.name, []
    exact = hashing.present_in(other.hashes("exact"), train.hashes("exact"))
    if len(exact):
        share = len(exact) / max(1, other.n)
        out.append(Finding("split.overlap", "severe" if share >= 0.01 else "warn",
                           f"{len(exact):,} samples of {name} ({share:.2%}) also occur in train: its loss "
                           "is too good", f"remove them from {name}", name, len(exact),
                           other.row_numbers(exact).tolist(), data={"share": share}))
    near = np.setdiff1d(hashing.present_in(other.hashes("near"), train.hashes("near")), exact)
    if len(near):
        out.append(Finding("split.near_overlap", "warn",
                           f"{len(near):,} samples of {name} equal a train sample up to case, spacing and "
                           "punctuation", f"remove them from {name}", name, len(near),
                           other.row_numbers(near).tolist()))
    sigs, rows = other.fuzzy.arrays()
    fuzzy = np.setdiff1d(rows[minhash.near_matches(sigs, train.fuzzy.arrays()[0])],
                         other.row_numbers(np.union1d(exact, near)))
    if len(fuzzy):
        out.append(Finding("split.fuzzy_overlap", "warn",
                           f"{len(fuzzy):,} samples of {name} share at least {minhash.THRESHOLD:.0%} of their word "
                           f"3-grams with a train sample{_sampled(other)}: its loss is optimistic",
                           f"remove them from {name}", name, len(fuzzy), fuzzy.tolist(), data=_fuzzy_data(other)))
    return out
