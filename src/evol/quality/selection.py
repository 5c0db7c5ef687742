"""`evol select`: a smaller, better dataset picked from a scored run.

Records are ranked by complexity x quality, Deita's score (arXiv 2312.15685), from whichever
scores `evol score` left: complexity is the difficulty score (1 to 10) when there is one, else
the complexity ranking score (1 to N within the lineage); quality is the answer's score. A
record that lacks a score in use comes after every record that has them all (a score is never
guessed), in run order. Then, greedily in that order, a record is picked unless it has no
answer, is flagged by the contamination check (with `drop_contaminated`), or its instruction
is too similar to one already picked (ROUGE-L F1 >= `similarity`, whatever the lineage); it
stops at `budget` records. The picks are written in any of `evol export`'s shapes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from evol.dataset.export import write_rows
from evol.dataset.export_files import EXPORT_ONLY_SHAPES, ExportFormat
from evol.errors import UsageError
from evol.quality.contamination import read_contamination
from evol.quality.metrics import record_file_sizes
from evol.quality.scores import ScoreBook, read_scores
from evol.quality.scoring import kept_records

if TYPE_CHECKING:
    from evol.method.dedup import DuplicateIndex

# The similarity search compares with every pick up to this many, then MinHash candidates
# (as --dedup-method auto does).
EXACT_UP_TO = 1_000


class SelectConfig(BaseModel):
    """Everything `evol select` needs."""

    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    out: Path
    budget: int = Field(ge=1)
    similarity: float = Field(0.7, gt=0, le=1)
    shape: ExportFormat = "alpaca"
    drop_contaminated: bool = False


class SelectSummary(BaseModel):
    """What `evol select` did (`--json`)."""

    out: str
    picked: int
    records: int
    scores_used: list[str] = Field(description="e.g. difficulty, quality")
    models: dict[str, str]
    dropped: dict[str, int] = Field(description="records passed over, by reason")
    not_reached: int = Field(description="records left once the budget was full")
    picked_without_all_scores: int
    picked_contaminated: int = Field(
        description="flagged records picked (without --drop-contaminated)"
    )
    contamination_stale: bool = Field(description="the run grew after the contamination check")


def select_records(config: SelectConfig) -> SelectSummary:
    """Pick up to `config.budget` records of the run and write them to `config.out`."""
    if config.shape in EXPORT_ONLY_SHAPES:
        raise UsageError(
            f"--format {config.shape}: evol select writes alpaca, sharegpt, openai-chat or "
            f"jsonl; evol export writes {config.shape}"
        )
    records = kept_records(config.run_dir)
    book = read_scores(config.run_dir, records)
    used = _scores_used(book)
    if not used:
        raise UsageError(f"{config.run_dir} has no scores: run evol score {config.run_dir} first")
    flagged, stale = _contaminated(config)
    ranked = sorted(records, key=lambda record: _rank_key(record, book, used))
    from evol.method.dedup import DuplicateIndex  # numpy: loaded only when selecting

    pool = DuplicateIndex(
        method="rouge-l" if config.budget <= EXACT_UP_TO else "minhash",
        threshold=config.similarity,
    )
    picked: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for record in ranked:
        if len(picked) == config.budget:
            break
        reason = _reason_to_skip(record, pool, flagged if config.drop_contaminated else set())
        if reason:
            dropped[reason] += 1
            continue
        picked.append(record)
        # Its own id as its lineage: a near copy in the same lineage is redundant too.
        pool.add(record["id"], record["id"], record["instruction"])
    write_rows(config.out, picked, config.shape)
    return SelectSummary(
        out=str(config.out),
        picked=len(picked),
        records=len(records),
        scores_used=used,
        models={name: book.models[name] for name in used},
        dropped=dict(sorted(dropped.items())),
        not_reached=len(records) - len(picked) - sum(dropped.values()),
        picked_without_all_scores=sum(_rank_key(r, book, used)[0] for r in picked),
        picked_contaminated=sum(r["id"] in flagged for r in picked),
        contamination_stale=stale,
    )


def _scores_used(book: ScoreBook) -> list[str]:
    complexity = next((name for name in ("difficulty", "complexity") if book.of(name)), None)
    quality = ["quality"] if book.of("quality") else []
    return ([complexity] if complexity else []) + quality


def _rank_key(record: dict[str, Any], book: ScoreBook, used: list[str]) -> tuple[int, float]:
    """(1 if a score in use is missing, else 0; minus the product): sorts best first."""
    product = 1.0
    for name in used:
        score = book.of(name).get(record["id"])
        if score is None:
            return 1, 0.0
        product *= score
    return 0, -product


def _contaminated(config: SelectConfig) -> tuple[set[str], bool]:
    report = read_contamination(config.run_dir)
    if report is None:
        if config.drop_contaminated:
            raise UsageError(
                f"{config.run_dir} was never checked for contamination: run evol score "
                f"{config.run_dir} --against EVAL.jsonl first"
            )
        return set(), False
    stale = report.files != record_file_sizes(config.run_dir)
    return {flagged.id for flagged in report.flagged}, stale


def _reason_to_skip(record: dict[str, Any], pool: DuplicateIndex, flagged: set[str]) -> str | None:
    if record.get("output") is None:
        return "no_output"
    if record["id"] in flagged:
        return "contaminated"
    if pool.find(record["instruction"], record["id"]) is not None:
        return "too_similar"
    return None


def format_summary(summary: SelectSummary) -> str:
    """What select did, in a few plain lines."""
    by = " x ".join(f"{name} ({summary.models[name]})" for name in summary.scores_used)
    lines = [f"{summary.out}: {summary.picked} of {summary.records} records, ranked by {by}"]
    reasons = ", ".join(f"{reason} {count}" for reason, count in summary.dropped.items())
    lines.append(f"passed over: {reasons or 'none'}; not reached: {summary.not_reached}")
    if summary.picked_without_all_scores:
        lines.append(
            f"{summary.picked_without_all_scores} picked records lack a score (ranked last); "
            "evol score --retry-missing asks again"
        )
    if summary.picked_contaminated:
        lines.append(
            f"{summary.picked_contaminated} picked records are flagged as contaminated; "
            "--drop-contaminated leaves them out"
        )
    if summary.contamination_stale:
        lines.append("the run grew after its contamination check: run evol score --against again")
    return "\n".join(lines)
