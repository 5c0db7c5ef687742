"""What `evol score` reports: each scorer's counts and mean, and the summary as plain text."""

from __future__ import annotations

import json

from pydantic import BaseModel, Field

from evol.quality.contamination import ContaminationReport


class ScorerSummary(BaseModel):
    """What one scorer did in this run of `evol score`, and where the run stands."""

    model: str
    # Counted in records, as `evol stats` counts them: a complexity call covers a lineage.
    scored: int = Field(0, description="records given a score now")
    missing: int = Field(0, description="records recorded now without a score (no number, twice)")
    already: int = Field(0, description="records scored before by this model: no call made")
    failed: int = Field(0, description="calls that failed after all retries: asked next time")
    waiting: int = Field(0, description="calls whose reply waits in a batch: collected next time")
    from_logprobs: int = Field(0, description="records scored now from log-probabilities")
    asked_again: int = 0
    logprobs_refused: bool = False
    records_scored: int = Field(0, description="records of the run with a score by this model")
    mean: float | None = None


class ScoreSummary(BaseModel):
    """What `evol score` prints (`--json`)."""

    run: str
    status: str = Field(
        description="complete; failed when some calls failed after retries; pending when some "
        "replies wait in batches (--batch-no-wait: run the same command again)"
    )
    scorers: dict[str, ScorerSummary]
    requests: int
    retries: int
    paced: int = Field(0, description="requests sent under the --rpm/--tpm budget")
    usage: dict[str, int]
    metrics: str | None = Field(description="the metrics file written, if any")
    contamination: ContaminationReport | None
    elapsed_s: float


def format_summary(summary: ScoreSummary) -> str:
    """The summary as plain text: a table of scorers, then what the CPU checks found."""
    lines = [f"{summary.run}: {summary.status}"]
    if summary.scorers:
        header = [
            "scorer",
            "model",
            "now",
            "missing",
            "already",
            "failed",
            "logprobs",
            "records",
            "mean",
        ]
        rows = [
            [
                name,
                s.model,
                str(s.scored),
                str(s.missing),
                str(s.already),
                str(s.failed),
                "refused" if s.logprobs_refused else str(s.from_logprobs),
                str(s.records_scored),
                "-" if s.mean is None else f"{s.mean:.2f}",
            ]
            for name, s in summary.scorers.items()
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            lines.append(
                "  ".join(
                    cell.ljust(width) for cell, width in zip(row, widths, strict=True)
                ).rstrip()
            )
        lines.append(
            "(counted in records, each version of a lineage for complexity; failed: calls)"
        )
        if waiting := sum(s.waiting for s in summary.scorers.values()):
            lines.append(
                f"{waiting} calls wait in batches (--batch-no-wait): run the same command again "
                "to collect them"
            )
    if summary.metrics:
        lines.append(f"diversity and drift per generation: {summary.metrics}")
    if report := summary.contamination:
        lines.append(
            f"contamination: {len(report.flagged)} of {report.checked} records share "
            f"{report.ngram} words in a row with an evaluation item"
        )
        for eval_set in report.against:
            short = (
                f", {eval_set.too_short} shorter than {report.ngram} words"
                if eval_set.too_short
                else ""
            )
            lines.append(f"  {eval_set.path}: {eval_set.items} items{short}")
        for flagged in report.flagged:
            for match in flagged.matches:
                lines.append(
                    f"  {flagged.id} ({match.field}) ~ {match.path}:{match.line}: {json.dumps(match.words)}"
                )
            if flagged.more_matches:
                lines.append(f"  {flagged.id}: {flagged.more_matches} more items")
    return "\n".join(lines)
