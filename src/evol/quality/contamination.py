"""Contamination: records that share a long run of words with an evaluation set's item.

A record is flagged when its instruction, input or output holds the same N consecutive words
(N = `--ngram`, 13 by default, as GPT-3's contamination study) as an item of one of the given
evaluation sets. Words are `evol.method.textstats.tokens`: case, punctuation and spacing do not matter.
An item shorter than N words cannot match; the report counts such items, so that a set of
short prompts is seen to need a smaller N.

Evaluation sets are read like seed files (`evol.seeds.iter_seeds`: JSON Lines, JSON, CSV, and
whichever formats it learns), so each item has its file and line. The check's result goes to
contamination.json in the run directory, replacing the previous check's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from evol.jsonl import read_model, write_model
from evol.method.buckets import add_to_buckets
from evol.method.textstats import tokens
from evol.quality.metrics import record_file_sizes
from evol.rundir.layout import CONTAMINATION
from evol.rundir.record_files import iter_records
from evol.seeds import iter_seeds

DEFAULT_NGRAM = 13
FIELDS = ("instruction", "input", "output")
MATCHES_KEPT = 5  # per record: enough to find the items, not a copy of the benchmark
_POSITION_BITS = 24  # an item's word position is packed below its number in one int


class EvalSet(BaseModel):
    """One evaluation file as read for the check."""

    path: str
    items: int
    too_short: int = Field(description="items shorter than the n-gram, which cannot match")


class Match(BaseModel):
    """One evaluation item a record overlaps."""

    path: str
    line: int
    field: str = Field(description="the record's field holding the shared words")
    words: str = Field(description="the first shared n-gram, normalised")


class Flagged(BaseModel):
    """A record sharing an n-gram with at least one evaluation item."""

    id: str
    generation: int
    matches: list[Match]
    more_matches: int = 0


class ContaminationReport(BaseModel):
    """What contamination.json holds."""

    ngram: int
    against: list[EvalSet]
    checked: int
    flagged: list[Flagged]
    files: dict[str, int] = Field(description="bytes of each gen_<k>.jsonl checked")

    @property
    def share(self) -> float:
        return round(len(self.flagged) / self.checked, 4) if self.checked else 0.0


class EvalIndex:
    """Every n-gram of the evaluation items, for lookups by hash, verified word for word."""

    def __init__(self, ngram: int):
        self.ngram = ngram
        self.sets: list[EvalSet] = []
        self._items: list[tuple[int, int, list[str]]] = []  # (set, line, words)
        # hash of an n-gram -> packed (item, position); a list when several items share it.
        self._grams: dict[int, int | list[int]] = {}

    def add_file(self, path: Path) -> None:
        """Read an evaluation file; a row that is not a valid prompt stops with file:line."""
        set_number = len(self.sets)
        items = too_short = 0
        for item in iter_seeds(path):
            items += 1
            fits = False
            for text in (item.instruction, item.input):
                words = tokens(text)
                if len(words) >= self.ngram:
                    fits = True
                    self._add_item(set_number, item.line, words)
            too_short += not fits
        self.sets.append(EvalSet(path=str(path), items=items, too_short=too_short))

    def matches(self, words: list[str]) -> Iterator[tuple[int, int, list[str]]]:
        """(set, line, shared words) of each distinct item sharing an n-gram with `words`."""
        seen: set[int] = set()
        n = self.ngram
        for start in range(len(words) - n + 1):
            gram = words[start : start + n]
            held = self._grams.get(hash(tuple(gram)))
            if held is None:
                continue
            for packed in [held] if isinstance(held, int) else held:
                number, position = packed >> _POSITION_BITS, packed & ((1 << _POSITION_BITS) - 1)
                set_number, line, item_words = self._items[number]
                if number not in seen and item_words[position : position + n] == gram:
                    seen.add(number)
                    yield set_number, line, gram

    def _add_item(self, set_number: int, line: int, words: list[str]) -> None:
        number = len(self._items)
        self._items.append((set_number, line, words))
        first: dict[int, int] = {}  # each n-gram of the item once, at its first position
        for position in range(min(len(words) - self.ngram + 1, 1 << _POSITION_BITS)):
            key = hash(tuple(words[position : position + self.ngram]))
            first.setdefault(key, (number << _POSITION_BITS) | position)
        add_to_buckets(self._grams, first.items())


def check_contamination(
    run_dir: Path, against: list[Path], *, ngram: int = DEFAULT_NGRAM
) -> ContaminationReport:
    """Flag the kept records of `run_dir` that share `ngram` consecutive words with an item
    of any file in `against`."""
    index = EvalIndex(ngram)
    for path in against:
        index.add_file(path)
    files = record_file_sizes(run_dir)
    checked, flagged = 0, []
    for record in iter_records(run_dir):
        checked += 1
        if found := _record_matches(index, record):
            flagged.append(
                Flagged(
                    id=record["id"],
                    generation=record["generation"],
                    matches=found[:MATCHES_KEPT],
                    more_matches=max(0, len(found) - MATCHES_KEPT),
                )
            )
    return ContaminationReport(
        ngram=ngram, against=index.sets, checked=checked, flagged=flagged, files=files
    )


def _record_matches(index: EvalIndex, record: dict[str, Any]) -> list[Match]:
    """Each evaluation item the record overlaps, once, with the first field that shows it."""
    found: dict[tuple[int, int], Match] = {}
    for field in FIELDS:
        text = record.get(field)
        if not isinstance(text, str):
            continue
        for set_number, line, gram in index.matches(tokens(text)):
            if (set_number, line) not in found:
                path = index.sets[set_number].path
                found[set_number, line] = Match(
                    path=path, line=line, field=field, words=" ".join(gram)
                )
    return list(found.values())


def write_contamination(run_dir: Path, report: ContaminationReport) -> Path:
    """Replace contamination.json atomically."""
    return write_model(run_dir / CONTAMINATION, report)


def read_contamination(run_dir: Path) -> ContaminationReport | None:
    """The last check's result, or None when the run was never checked."""
    return read_model(
        run_dir / CONTAMINATION, ContaminationReport, "check again with evol score --against"
    )
