"""The calls `evol score` makes: one job a record (difficulty, quality) or a lineage (complexity,
its versions shown in an order drawn from the lineage's id), and which are done already."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from evol.method.prompts import (
    SCORE_COMPLEXITY,
    SCORE_DIFFICULTY,
    SCORE_QUALITY,
    PromptSet,
)
from evol.quality.scores import (
    ScoreLine,
    ScorerName,
    chain_digest,
    lineages,
    record_digest,
)
from evol.rundir.records import compose

SCALE = 10  # difficulty and quality: 1 to 10
SINGLE_MAX_TOKENS = 16  # room for "I'd rate it a 7 out of 10" before the reply is cut


@dataclass
class Job:
    """One scoring call to make: its prompt, and what to read from the reply."""

    scorer: ScorerName
    key: str
    digest: str
    prompt: str
    maximum: int
    versions: list[str] = field(default_factory=list)  # complexity: record ids as shown

    @property
    def max_tokens(self) -> int:
        # "#12: 3" is about 5 tokens a line, whatever the tokenizer.
        return 8 * len(self.versions) + 16 if self.versions else SINGLE_MAX_TOKENS


def call_item(scorer: str, key: str, digest: str, model: str) -> str:
    """The name of a job's calls in the journal and in a batch: its scorer, its record (or
    lineage), the digest of the text scored and the model. A journalled reply is replayed only
    to the same question: not to a lineage that has grown since, nor to another --model."""
    return f"{scorer}/{key}/{digest}/{model}"


def build_jobs(
    records: list[dict[str, Any]],
    scorers: list[ScorerName],
    done: Callable[[Job], bool],
    prompts: PromptSet,
) -> tuple[list[Job], Counter[str]]:
    """The calls still to make, and per scorer how many records they skip as `done`."""
    jobs, already = [], Counter()
    for job in _all_jobs(records, scorers, prompts):
        if done(job):
            already[job.scorer] += len(job.versions) or 1
        else:
            jobs.append(job)
    return jobs, already


def _all_jobs(
    records: list[dict[str, Any]], scorers: list[ScorerName], prompts: PromptSet
) -> Iterator[Job]:
    if "difficulty" in scorers:
        for record in records:
            task = compose(record["instruction"], record.get("input") or "")
            yield Job(
                "difficulty",
                record["id"],
                record_digest("difficulty", record),
                prompts[SCORE_DIFFICULTY].render(task=task),
                SCALE,
            )
    if "complexity" in scorers:
        for root, chain in lineages(records).items():
            if len(chain) > 1:  # a seed alone has nothing to be ranked against
                yield _ranking_job(root, chain, prompts)
    if "quality" in scorers:
        for record in records:
            if record.get("output") is None:
                continue  # nothing to rate (--no-answer-seeds)
            task = compose(record["instruction"], record.get("input") or "")
            yield Job(
                "quality",
                record["id"],
                record_digest("quality", record),
                prompts[SCORE_QUALITY].render(task=task, answer=record["output"]),
                SCALE,
            )


def _ranking_job(root: str, chain: list[dict[str, Any]], prompts: PromptSet) -> Job:
    shown = list(chain)
    # Models favour later positions: show the versions in an order drawn from the lineage id
    # (the same on every rerun), not from oldest to newest.
    random.Random(f"complexity:{root}").shuffle(shown)
    versions = "\n\n".join(
        f'<version id="{place}">\n{compose(r["instruction"], r.get("input") or "")}\n</version>'
        for place, r in enumerate(shown, start=1)
    )
    return Job(
        "complexity",
        root,
        chain_digest(chain),
        prompts[SCORE_COMPLEXITY].render(count=str(len(chain)), versions=versions),
        len(chain),
        [r["id"] for r in shown],
    )


def done_checker(lines: list[ScoreLine], model: str | None, retry_missing: bool):
    """A job is done when its scorer and model (any model if None) scored its text before."""
    done: set[tuple[str, str | None, str, str]] = set()
    for line in lines:
        if retry_missing and line.missing:
            continue
        done.add((line.scorer, line.model, line.id, line.digest))
        done.add((line.scorer, None, line.id, line.digest))
    return lambda job: (job.scorer, model, job.key, job.digest) in done
