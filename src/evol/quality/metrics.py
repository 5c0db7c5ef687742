"""Diversity and drift per generation, measured on the CPU with no model.

- distinct-1, distinct-2: distinct words (word pairs) over all the words (word pairs) of a
  generation's instructions (Li et al., 2016). Higher is more varied; a larger generation
  scores a little lower for the same variety, so compare generations of similar size.
- drift: the mean ROUGE-L F1 of each instruction to its own seed's. 1 is the seed itself;
  the lower, the further the lineage has moved.
- nearest: the mean ROUGE-L F1 of each instruction to the most similar other instruction of
  its generation, found through the MinHash index of `evol.method.dedup`. MinHash proposes only
  instructions sharing about half their words or more, so one with no such neighbour counts
  0. near_duplicates: the share whose nearest neighbour is at `NEAR_DUPLICATE` or above.

Words are `evol.method.textstats.tokens` (case-folded letters and digits). `evol score` writes the
figures to metrics.json in the run directory; `evol stats` and `evol report` read them back.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import groupby
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from evol.jsonl import read_model, write_model
from evol.method.textstats import rouge_l_bitparallel as rouge_l
from evol.method.textstats import tokens
from evol.rundir.layout import METRICS, generation_files
from evol.rundir.record_files import iter_records

NEAR_DUPLICATE = 0.7  # the duplicate rule's default threshold (Self-Instruct's)


class GenerationMetrics(BaseModel):
    """The diversity and drift of one generation's kept instructions."""

    generation: int
    records: int
    distinct_1: float | None
    distinct_2: float | None
    drift_rouge_l: float | None = Field(description="mean ROUGE-L to the seed; None for seeds")
    nearest_rouge_l: float | None
    near_duplicates: float | None = Field(description="share with a neighbour at >= 0.7")


class RunMetrics(BaseModel):
    """What metrics.json holds."""

    generations: list[GenerationMetrics]
    files: dict[str, int] = Field(description="bytes of each gen_<k>.jsonl measured")


def record_file_sizes(run_dir: Path) -> dict[str, int]:
    """Bytes of each gen_<k>.jsonl: a figure computed from other sizes is out of date."""
    return {path.name: path.stat().st_size for path in generation_files(run_dir)}


def compute_metrics(run_dir: Path) -> RunMetrics:
    """Measure every generation of the run in `run_dir`, one generation in memory at a time."""
    files = record_file_sizes(run_dir)
    seeds: dict[str, list[str]] = {}
    rows: dict[int, GenerationMetrics] = {}
    drift: dict[int, list[float]] = defaultdict(list)
    orphans: list[tuple[int, str, list[str]]] = []  # records whose seed is not kept
    for generation, group in groupby(iter_records(run_dir), key=lambda r: r["generation"]):
        records = list(group)
        words = [tokens(record["instruction"]) for record in records]
        for record, record_words in zip(records, words, strict=True):
            if generation == 0:
                seeds[record["id"]] = record_words
            elif (seed := seeds.get(record["root_id"])) is not None:
                drift[generation].append(rouge_l(record_words, seed))
            else:
                orphans.append((generation, record["root_id"], record_words))
        rows[generation] = _measure(generation, records, words)
    if orphans:
        _drift_from_failed_seeds(run_dir, orphans, drift)
    for generation, row in rows.items():
        if generation and drift[generation]:
            row.drift_rouge_l = _mean(drift[generation])
    return RunMetrics(generations=[rows[g] for g in sorted(rows)], files=files)


def _measure(
    generation: int, records: list[dict[str, Any]], words: list[list[str]]
) -> GenerationMetrics:
    # evol.method.dedup brings numpy: loaded here, not whenever `evol stats` reads metrics.json.
    from evol.method.dedup import DuplicateIndex

    pool = DuplicateIndex(method="minhash")
    for record in records:
        pool.add(record["id"], record["id"], record["instruction"])
    nearest = [found[1] if found else 0.0 for found in pool.neighbours().values()]
    return GenerationMetrics(
        generation=generation,
        records=len(records),
        distinct_1=_distinct(words, 1),
        distinct_2=_distinct(words, 2),
        drift_rouge_l=None,
        nearest_rouge_l=_mean(nearest),
        near_duplicates=_mean([float(score >= NEAR_DUPLICATE) for score in nearest]),
    )


def _distinct(texts: list[list[str]], n: int) -> float | None:
    """Distinct n-grams over all n-grams of the texts (none inside a text shorter than n)."""
    grams = [tuple(words[i : i + n]) for words in texts for i in range(len(words) - n + 1)]
    return round(len(set(grams)) / len(grams), 4) if grams else None


def _drift_from_failed_seeds(
    run_dir: Path, orphans: list[tuple[int, str, list[str]]], drift: dict[int, list[float]]
) -> None:
    """A seed whose answer failed is not kept, yet its lineage evolves: measure against its
    instruction as eliminated.jsonl holds it."""
    wanted = {root for _generation, root, _words in orphans}
    seeds = {
        record["id"]: tokens(record["instruction"])
        for record in iter_records(run_dir, eliminated=True)
        if record["generation"] == 0 and record["id"] in wanted
    }
    for generation, root, words in orphans:
        if root in seeds:
            drift[generation].append(rouge_l(words, seeds[root]))


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def write_metrics(run_dir: Path, metrics: RunMetrics) -> Path:
    """Replace metrics.json atomically."""
    return write_model(run_dir / METRICS, metrics)


def read_metrics(run_dir: Path) -> RunMetrics | None:
    """metrics.json, or None when the run has never been measured."""
    return read_model(run_dir / METRICS, RunMetrics, "run evol score again")
