"""The calls `evol score` makes: one job a record (difficulty, quality) or a lineage (complexity,
its versions shown in an order drawn from the lineage's id), and which are done already."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from evol.llm.dispatch import ReplyJournal
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


def job_step(job: Job) -> str:
    """A job's name in its requests: its scorer and its record (or lineage). A batch keys its
    rows by it (the text scored and the model are in each row's body)."""
    return f"{job.scorer}/{job.key}"


def call_item(question: tuple[str, str, str, str], prompts: str, attempt: int) -> str:
    """The name of a job's calls in the journal: the question (scorer, record or lineage,
    digest of the text scored, model), the digest of the scoring prompts, and how many lines
    scores.jsonl held for that question before (a --retry-missing asks it again). A journalled
    reply is replayed only to the same question, asked the same way, the same time: not to a
    lineage that has grown since, another --model or other --prompts, nor to a retry of a
    score that came out missing."""
    return "/".join(question) + f"/{prompts}" + (f"/again{attempt}" if attempt else "")


def journal_items(
    jobs: list[Job], lines: list[ScoreLine], model: str, prompts: str
) -> tuple[dict[str, str], set[str]]:
    """Each job's `call_item` by its `job_step`, and the items of the lines already written
    (their replies are spent: the journal drops them)."""
    written: set[str] = set()
    tries: Counter[tuple[str, str, str, str]] = Counter()
    for line in lines:
        question = (line.scorer, line.id, line.digest, line.model)
        written.add(call_item(question, prompts, tries[question]))
        tries[question] += 1
    items = {}
    for job in jobs:
        question = (job.scorer, job.key, job.digest, model)
        items[job_step(job)] = call_item(question, prompts, tries[question])
    return items, written


class JobJournal:
    """The score's journal, keyed by each job's `call_item` where requests name only the
    job's step: a journalled reply goes back to the same question only, while a batch's rows
    keep the custom_ids they were submitted with."""

    def __init__(self, journal: ReplyJournal, items: dict[str, str]):
        self.journal, self.items = journal, items

    def recall(self, item_id: str, role: str) -> dict[str, Any] | None:
        return self.journal.recall(self.items[item_id], role)

    def remember(self, item_id: str, role: str, reply: dict[str, Any]) -> None:
        self.journal.remember(self.items[item_id], role, reply)


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
