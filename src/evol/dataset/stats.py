"""`evol stats`: what a run directory holds, per generation and per operation, and what it cost.

Reads the record files once, streaming; knows nothing of LLMs beyond the token counts and model
names that run.json and the records carry. What `evol score` left in the run directory is
shown too, when it is there: scores per generation and per operation (scores.jsonl, read a
second time with the records), diversity and drift (metrics.json), contamination
(contamination.json), and the tokens of its calls as a row of the cost table. A run without
them looks as it always did (in JSON, those keys are null). A run whose records carry
verifiable constraints (#26) gets their figures too (`constraints`, a key its JSON has only
then): constraints per generation, the pass rate per constraint id, attempts per kept record.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from evol.dataset.stats_constraints import ConstraintStats, ConstraintTally
from evol.dataset.stats_costs import RoleCost, role_cost, runs_on_this_machine, scoring_cost
from evol.llm.pricing import BATCH_RATE
from evol.method.judging import model_role
from evol.method.textstats import Lengths, summarize, word_count
from evol.quality.contamination import Flagged, read_contamination
from evol.quality.metrics import read_metrics, record_file_sizes
from evol.quality.scores import read_scores
from evol.rundir.counts import RunCounts
from evol.rundir.layout import SCORES
from evol.rundir.manifest import load_manifest
from evol.rundir.record_files import iter_records
from evol.rundir.records import MAX_GENERATIONS

# The row of `roles` for the calls of `evol score` (read from scores.jsonl).
SCORE_ROLE = "score"


class GenerationStats(BaseModel):
    generation: int
    kept: int
    eliminated: dict[str, int]
    instruction_words: Lengths | None
    answer_words: Lengths | None
    # From `evol score`; None where the run was not scored, measured or checked.
    difficulty_mean: float | None = None
    difficulty_sd: float | None = Field(None, description="sample standard deviation")
    difficulty_scored: int | None = None
    complexity_mean: float | None = Field(None, description="ranking score, 1..N in a lineage")
    quality_mean: float | None = None
    distinct_1: float | None = None
    distinct_2: float | None = None
    drift_rouge_l: float | None = Field(None, description="mean ROUGE-L to the seed")
    nearest_rouge_l: float | None = Field(None, description="mean ROUGE-L to the nearest other")
    near_duplicates: float | None = None
    contaminated: int | None = None


class OperationStats(BaseModel):
    kept: int
    eliminated: int
    success_rate: float
    # From `evol score`: does the operation make instructions harder than their parent?
    difficulty_mean: float | None = None
    difficulty_gain: float | None = Field(None, description="mean of child - parent difficulty")
    complexity_gain: float | None = Field(None, description="mean of child - parent ranking")


class ScoreSource(BaseModel):
    model: str
    scored: int = Field(description="records with a score")
    missing: int = Field(description="records recorded without a score")


class ContaminationStats(BaseModel):
    ngram: int
    against: list[str]
    checked: int
    flagged: int
    share: float
    stale: bool = Field(description="the run grew after the check")
    records: list[Flagged]


class RunStats(BaseModel):
    """Everything `evol stats` prints."""

    run: str
    status: str = Field(description="complete, failed, interrupted or running")
    generations: list[GenerationStats]
    operations: dict[str, OperationStats]
    roles: dict[str, RoleCost]
    total_cost_usd: float | None
    batch_rate: bool = Field(False, description="priced at the Batch API's rate (run with --batch)")
    scores: dict[str, ScoreSource] | None = None
    metrics_stale: bool | None = Field(None, description="the run grew after it was measured")
    contamination: ContaminationStats | None = None
    constraints: ConstraintStats | None = Field(
        None, description="only for a run whose records carry verifiable constraints"
    )

    @model_serializer(mode="wrap")
    def _without_constraints(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("constraints") is None:
            data.pop("constraints", None)  # a run without them prints as it always did
        return data


def run_stats(
    run_dir: Path, *, price_in: float | None = None, price_out: float | None = None
) -> RunStats:
    """Summarise the run in `run_dir`; explicit prices (USD per 1M tokens) beat the built-in table."""
    manifest = load_manifest(run_dir)
    backend = manifest.backend
    models = backend.models if backend else {}
    in_process = backend is not None and runs_on_this_machine(backend.name)
    scoring = scoring_cost(run_dir, models, in_process, price_in, price_out)
    if in_process and price_in is None and price_out is None:
        price_in = price_out = 0.0  # the model ran on your own machine
    # A run priced by how it was last run: one that switched between live and --batch
    # calls is priced as if all its calls were made the last way.
    batched = manifest.config.batch

    # The counts are run.json's own (evol.rundir.counts); the lengths are what stats adds.
    counts = RunCounts()
    constrained = ConstraintTally()
    instruction_words: dict[int, list[int]] = defaultdict(list)
    answer_words: dict[int, list[int]] = defaultdict(list)
    for record in iter_records(run_dir):
        counts.add(record, None)
        constrained.add(record, None)
        instruction_words[record["generation"]].append(word_count(record["instruction"]))
        if record.get("output") is not None:
            answer_words[record["generation"]].append(word_count(record["output"]))
    for record in iter_records(run_dir, eliminated=True):
        counts.add(record, record["reason"])
        constrained.add(record, record["reason"])

    eliminated, operations = counts.eliminated_by_generation, counts.operations
    generations = _generations({*instruction_words, *eliminated})
    per_generation = [
        GenerationStats(
            generation=g,
            kept=counts.kept[g],
            eliminated=dict(sorted(eliminated.get(g, {}).items())),
            instruction_words=summarize(instruction_words.get(g, [])),
            answer_words=summarize(answer_words.get(g, [])),
        )
        for g in generations
    ]
    per_operation = {
        name: OperationStats(
            kept=counts["kept"],
            eliminated=counts["eliminated"],
            success_rate=round(counts["kept"] / max(1, counts["kept"] + counts["eliminated"]), 4),
        )
        for name, counts in sorted(operations.items())
    }
    roles = {
        role: role_cost(
            models.get(model_role(role)),
            used,
            price_in,
            price_out,
            BATCH_RATE if batched else 1.0,
        )
        for role, used in sorted(counts.usage.items())
    }
    if scoring is not None:
        roles[SCORE_ROLE] = scoring
    costs = [role.cost_usd for role in roles.values()]
    total = round(sum(costs), 6) if costs and None not in costs else None
    stats = RunStats(
        run=str(run_dir),
        status=manifest.status,
        generations=per_generation,
        operations=per_operation,
        roles=roles,
        total_cost_usd=total,
        batch_rate=batched,
        constraints=constrained.stats(),
    )
    _add_scores(run_dir, stats)
    _add_metrics(run_dir, stats)
    _add_contamination(run_dir, stats)
    return stats


def _generations(found: set[int]) -> list[int]:
    """The rows of the table: every generation a run can make, from 0 to the last with records
    (gen_0 may be empty), and any other number a record claims (100,000,000, -3) on its own,
    never a range up to it."""
    last = max((g for g in found if 0 <= g <= MAX_GENERATIONS), default=0)
    return sorted(found.union(range(last + 1)))


def _add_scores(run_dir: Path, stats: RunStats) -> None:
    """Scores per generation and per operation, with each record's gain over its parent."""
    if not (run_dir / SCORES).exists():
        return
    records = list(iter_records(run_dir))
    book = read_scores(run_dir, records)
    if not book.scores:
        return
    stats.scores = {
        name: ScoreSource(
            model=book.models[name],
            scored=sum(v is not None for v in values.values()),
            missing=sum(v is None for v in values.values()),
        )
        for name, values in book.scores.items()
    }
    by_generation: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    by_operation: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        for name in ("difficulty", "complexity", "quality"):
            score = book.of(name).get(record["id"])
            if score is None:
                continue
            by_generation[name][record["generation"]].append(score)
            if operation := record.get("operation"):
                by_operation[f"{name}_mean"][operation].append(score)
                parent = book.of(name).get(record.get("parent_id") or "")
                if parent is not None:
                    by_operation[f"{name}_gain"][operation].append(score - parent)
    for row in stats.generations:
        difficulty = by_generation["difficulty"].get(row.generation, [])
        row.difficulty_mean = _mean(difficulty)
        row.difficulty_sd = round(statistics.stdev(difficulty), 4) if len(difficulty) > 1 else None
        row.difficulty_scored = len(difficulty) if book.of("difficulty") else None
        row.complexity_mean = _mean(by_generation["complexity"].get(row.generation, []))
        row.quality_mean = _mean(by_generation["quality"].get(row.generation, []))
    for name, row in stats.operations.items():
        row.difficulty_mean = _mean(by_operation["difficulty_mean"].get(name, []))
        row.difficulty_gain = _mean(by_operation["difficulty_gain"].get(name, []))
        row.complexity_gain = _mean(by_operation["complexity_gain"].get(name, []))


def _add_metrics(run_dir: Path, stats: RunStats) -> None:
    metrics = read_metrics(run_dir)
    if metrics is None:
        return
    stats.metrics_stale = metrics.files != record_file_sizes(run_dir)
    measured = {row.generation: row for row in metrics.generations}
    for row in stats.generations:
        if found := measured.get(row.generation):
            row.distinct_1, row.distinct_2 = found.distinct_1, found.distinct_2
            row.drift_rouge_l, row.nearest_rouge_l = found.drift_rouge_l, found.nearest_rouge_l
            row.near_duplicates = found.near_duplicates


def _add_contamination(run_dir: Path, stats: RunStats) -> None:
    report = read_contamination(run_dir)
    if report is None:
        return
    flagged = Counter(record.generation for record in report.flagged)
    for row in stats.generations:
        row.contaminated = flagged[row.generation]
    stats.contamination = ContaminationStats(
        ngram=report.ngram,
        against=[eval_set.path for eval_set in report.against],
        checked=report.checked,
        flagged=len(report.flagged),
        share=report.share,
        stale=report.files != record_file_sizes(run_dir),
        records=report.flagged,
    )


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
