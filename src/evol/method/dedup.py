"""The `duplicate` rule: an evolution too close to an instruction already in the pool.

Exact duplicates are found after normalisation (case, Unicode form, punctuation, spacing).
Near-duplicates are judged by ROUGE-L F1 >= threshold (0.7 by default), as Self-Instruct does.
Two ways to find the candidates to score:

- `rouge-l` compares with every instruction in the pool (exact; for pools up to some thousands);
- `minhash` asks a MinHash LSH index over word sets for likely candidates first, then scores
  only those (for large pools; a near-duplicate that shares too few words can be missed).

Matches inside the same lineage do not count: an in-depth rewrite is meant to resemble its
parent. Which instruction came first decides which one is kept, so with several lineages in
flight the choice can differ between runs.
"""

from __future__ import annotations

import sys
import zlib
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import Literal

import numpy as np

from evol.method.buckets import add_to_buckets
from evol.method.elimination import EliminationRules
from evol.method.textstats import rouge_l, rouge_l_bitparallel, tokens

__all__ = ["DuplicateIndex", "rouge_l", "rouge_l_bitparallel", "tokens"]

DedupMethod = Literal["rouge-l", "minhash"]
# --dedup-method auto compares with every instruction (exact) while the pool can hold at most
# this many, and uses MinHash candidates above it.
EXACT_UP_TO = 1_000
_PRIME = (1 << 61) - 1


@dataclass
class _Entry:
    id: str
    root_id: str
    words: list[str]


@dataclass
class DuplicateIndex:
    """The pool of kept instructions, and the search for the one a new instruction repeats."""

    method: DedupMethod = "rouge-l"
    threshold: float = 0.7
    # 16 bands of 4 rows: word sets with Jaccard 0.5 become candidates 65% of the time, 0.7
    # ones 99%; a near-duplicate at ROUGE-L 0.7 shares far more words than that.
    permutations: int = 64
    bands: int = 16
    _entries: list[_Entry] = field(default_factory=list)
    _exact: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    # A bucket holds one position as a plain int (most do) and several as a list.
    _buckets: dict[int, int | list[int]] = field(default_factory=dict)
    _looked_up: dict[str, tuple[list[str], list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(20240415)
        self._a = rng.integers(1, 1 << 31, self.permutations, dtype=np.uint64)
        self._b = rng.integers(0, _PRIME, self.permutations, dtype=np.uint64)
        self._rows = self.permutations // self.bands
        self._mix = rng.integers(1, 1 << 63, self._rows, dtype=np.uint64) | np.uint64(1)
        self._band_salt = rng.integers(0, 1 << 63, self.bands, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, record_id: str, root_id: str, text: str) -> None:
        """Put a kept instruction into the pool."""
        words, keys = self._looked_up.pop(text, None) or self._analyse(text)
        position = len(self._entries)
        self._entries.append(_Entry(record_id, root_id, words))
        self._exact[" ".join(words)].append(position)
        add_to_buckets(self._buckets, zip(keys, repeat(position)))

    def find(self, text: str, root_id: str) -> str | None:
        """The id of a pool instruction from another lineage that `text` duplicates, if any."""
        words, keys = self._analyse(text)
        if len(self._looked_up) > 10_000:  # texts looked up but never added (eliminated)
            self._looked_up.clear()
        self._looked_up[text] = (words, keys)
        for position in self._exact.get(" ".join(words), ()):
            if self._entries[position].root_id != root_id:
                return self._entries[position].id
        for position in self._candidates(words, keys):
            entry = self._entries[position]
            if entry.root_id == root_id or not _may_reach(words, entry.words, self.threshold):
                continue
            if rouge_l_bitparallel(words, entry.words) >= self.threshold:
                return entry.id
        return None

    def neighbours(self) -> dict[str, tuple[str, float] | None]:
        """Each entry's most similar other entry by ROUGE-L F1, and that score.

        Among the candidates the method proposes (every other entry for rouge-l; for minhash,
        those sharing a band, so about half their words or more), any lineage; None for an
        entry with no candidate. Each pair is scored once, and only if it could beat the best
        either side has so far.
        """
        best: list[tuple[int, float] | None] = [None] * len(self._entries)
        for first, second in self._candidate_pairs():
            a, b = self._entries[first].words, self._entries[second].words
            floor = min(-1.0 if s is None else s[1] for s in (best[first], best[second]))
            if floor >= 0 and not _may_reach(a, b, floor):
                continue
            score = rouge_l_bitparallel(a, b)
            for me, other in ((first, second), (second, first)):
                if best[me] is None or score > best[me][1]:
                    best[me] = (other, score)
        return {
            entry.id: None if found is None else (self._entries[found[0]].id, found[1])
            for entry, found in zip(self._entries, best, strict=True)
        }

    def _candidate_pairs(self) -> Iterator[tuple[int, int]]:
        """Positions (i < j) of the entries the method would compare, each pair once."""
        count = len(self._entries)
        if self.method == "rouge-l":
            for first in range(count):
                for second in range(first + 1, count):
                    yield first, second
            return
        # Equal word lists share every band, so exact repeats are among these too.
        groups = [held for held in self._buckets.values() if isinstance(held, list)]
        seen: set[tuple[int, int]] = set()
        for group in groups:
            for place, first in enumerate(group):
                for second in group[place + 1 :]:
                    pair = (first, second) if first < second else (second, first)
                    if pair not in seen:
                        seen.add(pair)
                        yield pair

    def _analyse(self, text: str) -> tuple[list[str], list[int]]:
        words = [sys.intern(word) for word in tokens(text)]
        return words, self._band_keys(words) if self.method == "minhash" and words else []

    def _candidates(self, words: list[str], keys: list[int]):
        if self.method == "rouge-l":
            return range(len(self._entries))
        found: set[int] = set()
        for key in keys:
            held = self._buckets.get(key)
            if isinstance(held, int):
                found.add(held)
            elif held:
                found.update(held)
        return sorted(found)

    def _band_keys(self, words: list[str]) -> list[int]:
        hashes = np.fromiter((zlib.crc32(w.encode()) for w in set(words)), dtype=np.uint64)
        # (a * x + b) mod p, one row per permutation: a < 2**31, x < 2**32 and b < 2**61, so
        # the sum stays below 2**64 and uint64 never wraps.
        signature = (self._a[:, None] * hashes[None, :] + self._b[:, None]) % np.uint64(_PRIME)
        rows = signature.min(axis=1).reshape(self.bands, self._rows)
        # One 64-bit key a band (wrapping arithmetic is fine for a hash), salted by band.
        return ((rows * self._mix).sum(axis=1) ^ self._band_salt).tolist()


def _may_reach(first: list[str], second: list[str], threshold: float) -> bool:
    """Cheap upper bounds on ROUGE-L F1 = 2 * LCS / (len + len), checked before the real thing.

    LCS is at most the shorter length, and at most the words the two share: the distinct
    common words plus the repeats of either text.
    """
    total = len(first) + len(second)
    if total == 0 or 2 * min(len(first), len(second)) < threshold * total:
        return False
    vocabulary, other = set(first), set(second)
    repeats = min(len(first) - len(vocabulary), len(second) - len(other))
    return 2 * (len(vocabulary & other) + repeats) >= threshold * total


def largest_pool(seeds: int, generations: int) -> int:
    """How large a run's pool may grow: every seed and one rewrite of each per generation."""
    return seeds * (generations + 1)


def resolved_method(method: str, largest_pool: int) -> DedupMethod:
    """The search `method` means for a pool that may grow to `largest_pool` instructions."""
    if method == "auto":
        return "rouge-l" if largest_pool <= EXACT_UP_TO else "minhash"
    return "minhash" if method == "minhash" else "rouge-l"


def load_pool(
    rules: EliminationRules,
    largest_pool: int,
    kept: Iterable[tuple[str, str, str]],
    seeds: Iterable[tuple[str, str]],
) -> DuplicateIndex:
    """The pool a run starts from: its kept records (id, root id, instruction), then every
    seed (id, instruction) whose record is not among them (a seed answer that failed)."""
    pool = DuplicateIndex(
        method=resolved_method(rules.dedup_method, largest_pool), threshold=rules.dedup_threshold
    )
    pooled = set()
    for record_id, root_id, instruction in kept:
        pool.add(record_id, root_id, instruction)
        pooled.add(record_id)
    for seed_id, instruction in seeds:
        if seed_id not in pooled:
            pool.add(seed_id, seed_id, instruction)
    return pool
