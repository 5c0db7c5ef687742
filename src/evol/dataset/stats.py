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

from evol.errors import UsageError
from evol.llm.pricing import BATCH_RATE, cost_usd, unit_prices
from evol.llm.registry import runs_in_process
from evol.method.elimination import Reason
from evol.method.judging import model_role
from evol.method.textstats import Lengths, summarize, word_count
from evol.quality.contamination import Flagged, read_contamination
from evol.quality.metrics import read_metrics, record_file_sizes
from evol.quality.scores import read_score_lines, read_scores
from evol.rundir.counts import RunCounts
from evol.rundir.manifest import load_manifest
from evol.rundir.records import MAX_GENERATIONS
from evol.rundir.store import SCORES, iter_records

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


class RoleCost(BaseModel):
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None = Field(description="None when no price is known for the model")


class ConstraintGeneration(BaseModel):
    """The kept records of one generation that carry verifiable constraints."""

    records: int
    constraints_mean: float
    constraints_max: int
    attempts_mean: float = Field(description="answers drawn per record, the kept one included")


class ConstraintRate(BaseModel):
    """How often the answers checked against one constraint id met it."""

    answers: int = Field(description="answers checked against it")
    met: int
    rate: float


class ConstraintStats(BaseModel):
    """Verifiable constraints: what the records carry, and how often answers met them.

    The pass rates count every answer drawn for a record that finished its sampling (kept, or
    eliminated as constraint_unmet): the ones thrown away as well as the one kept."""

    per_generation: dict[str, ConstraintGeneration]
    pass_rate: dict[str, ConstraintRate]
    kept: int = Field(description="kept records with constraints")
    attempts_mean: float | None = Field(description="answers drawn per kept record")
    attempts: dict[str, int] = Field(description="kept records by the answers they took")
    lost: int = Field(description="rewrites eliminated as constraint_lost")
    unmet: int = Field(description="records eliminated as constraint_unmet")


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
    in_process = backend is not None and _runs_in_process(backend.name)
    scoring = _scoring_cost(run_dir, models, in_process, price_in, price_out)
    if in_process and price_in is None and price_out is None:
        price_in = price_out = 0.0  # the model ran on your own machine
    # A run priced by how it was last run: one that switched between live and --batch
    # calls is priced as if all its calls were made the last way.
    batched = manifest.config.batch

    # The counts are run.json's own (evol.rundir.counts); the lengths are what stats adds.
    counts = RunCounts()
    constrained = _ConstraintTally()
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
        role: _role_cost(
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


class _ConstraintTally:
    """The constraint figures of `ConstraintStats`, fed one record at a time."""

    def __init__(self) -> None:
        self.carried: dict[int, list[int]] = defaultdict(list)  # generation -> constraints each
        self.tried: dict[int, list[int]] = defaultdict(list)  # generation -> attempts each
        self.answers: Counter[str] = Counter()  # constraint id -> answers checked against it
        self.failed: Counter[str] = Counter()
        self.lost = self.unmet = 0
        self.seen = False

    def add(self, record: dict[str, Any], reason: str | None) -> None:
        constraints = record.get("constraints")
        if not isinstance(constraints, list) or not constraints:
            return
        self.seen = True
        self.lost += reason == Reason.CONSTRAINT_LOST
        self.unmet += reason == Reason.CONSTRAINT_UNMET
        attempts = record.get("attempts")
        # Every answer checked by code counts, whatever ended the record afterwards (the
        # answer check, say): its file says how many there were and which ids they failed.
        if not isinstance(attempts, int) or isinstance(attempts, bool):
            return
        ids = [c.get("id") for c in constraints if isinstance(c, dict)]
        unmet = record.get("unmet") if isinstance(record.get("unmet"), dict) else {}
        for cid in ids:
            self.answers[str(cid)] += attempts
            failed = unmet.get(cid, 0)
            self.failed[str(cid)] += failed if isinstance(failed, int) else 0
        if reason is None:
            self.carried[record["generation"]].append(len(constraints))
            self.tried[record["generation"]].append(attempts)

    def stats(self) -> ConstraintStats | None:
        if not self.seen:
            return None
        tries = [count for counts in self.tried.values() for count in counts]
        return ConstraintStats(
            per_generation={
                str(g): ConstraintGeneration(
                    records=len(carried),
                    constraints_mean=round(statistics.mean(carried), 4),
                    constraints_max=max(carried),
                    attempts_mean=round(statistics.mean(self.tried[g]), 4),
                )
                for g, carried in sorted(self.carried.items())
            },
            pass_rate={
                cid: ConstraintRate(
                    answers=answers,
                    met=answers - self.failed[cid],
                    rate=round((answers - self.failed[cid]) / answers, 4) if answers else 0.0,
                )
                for cid, answers in sorted(self.answers.items())
            },
            kept=len(tries),
            attempts_mean=round(statistics.mean(tries), 4) if tries else None,
            attempts={str(n): c for n, c in sorted(Counter(tries).items())},
            lost=self.lost,
            unmet=self.unmet,
        )


def _runs_in_process(backend_name: str) -> bool:
    """Whether the run's backend ran its model on this machine (so its calls cost nothing); a
    backend no longer installed is taken as a server's."""
    try:
        return runs_in_process(backend_name)
    except UsageError:
        return False


def _scoring_cost(
    run_dir: Path,
    run_models: dict[str, str],
    run_in_process: bool,
    price_in: float | None,
    price_out: float | None,
) -> RoleCost | None:
    """The tokens of `evol score`'s calls (every line of scores.jsonl: each call was paid,
    stale ones too) and their cost; None when the run was never scored."""
    # Per model, and whether the call went through the Batch API (billed at BATCH_RATE).
    used: dict[tuple[str, bool], Counter[str]] = defaultdict(Counter)
    for line in read_score_lines(run_dir):
        used[line.model, line.batch].update(line.usage)
    if not used:
        return None
    rows = []
    for (model, batch), tokens in used.items():
        embedded = run_in_process and model in run_models.values()
        free = embedded and price_in is None and price_out is None
        rate = BATCH_RATE if batch else 1.0
        rows.append(
            _role_cost(model, tokens, 0.0 if free else price_in, 0.0 if free else price_out, rate)
        )
    costs = [row.cost_usd for row in rows]
    return RoleCost(
        model=", ".join(sorted({model for model, _batch in used})),
        prompt_tokens=sum(row.prompt_tokens for row in rows),
        completion_tokens=sum(row.completion_tokens for row in rows),
        cost_usd=round(sum(costs), 6) if None not in costs else None,
    )


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


def _role_cost(
    model: str | None,
    used: Counter[str],
    price_in: float | None,
    price_out: float | None,
    rate: float,
) -> RoleCost:
    prompt, completion = used["prompt_tokens"], used["completion_tokens"]
    cost = cost_usd(unit_prices(model, price_in, price_out), prompt, completion, rate)
    return RoleCost(model=model, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost)
