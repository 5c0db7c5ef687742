"""The scoring calls of one `evol score`: each job asked, its reply read, asked again once when
it gives no score, and log-probabilities dropped for a scorer once a server refuses them."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from evol.errors import BackendError, ContextLengthExceeded, most_telling
from evol.llm import ChatBackend, Completion, GenerationParams, LLMRequest, Message
from evol.llm.dispatch import (
    CallFailed,
    CallPolicy,
    CallRefused,
    CallWaiting,
    Dispatcher,
    ReplyJournal,
)
from evol.method.prompts import SCORE_RANKING_AGAIN, SCORE_SINGLE_AGAIN, PromptSet
from evol.progress import Progress, ProgressCallback
from evol.quality.readings import Reading, ranking_readings, single_reading
from evol.quality.score_jobs import Job, job_step
from evol.quality.scores import REPLY_KEPT, ScoreLine, Sidecar

TOP_LOGPROBS = 20  # OpenAI's maximum


def _params(max_tokens: int, logprobs: bool) -> GenerationParams:
    if logprobs:
        return GenerationParams(
            temperature=0, max_tokens=max_tokens, logprobs=True, top_logprobs=TOP_LOGPROBS
        )
    return GenerationParams(temperature=0, max_tokens=max_tokens)


@dataclass
class ScoreTally:
    """What the calls did: requests, retries, tokens, counts per scorer, logprobs refused."""

    requests: int = 0
    retries: int = 0
    paced: int = 0  # requests the --rpm/--tpm budget let through
    usage: Counter[str] = field(default_factory=Counter)
    per_scorer: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    logprobs_refused: set[str] = field(default_factory=set)


class Scorer:
    """Makes the scoring calls of one `evol score`: one concurrency limit, one retry policy."""

    def __init__(
        self,
        backend: ChatBackend,
        model: str,
        policy: CallPolicy,
        info: Callable[[str], None],
        prompts: PromptSet,
        *,
        batch: bool,
        journal: ReplyJournal | None = None,
    ):
        """`policy`: the concurrency limit, retries and budget; `batch`: the calls go through
        the Batch API (each line says so); `journal`: where each reply is kept until its line
        is written (score_calls.jsonl, keyed by step: `score_jobs.JobJournal`), so that a
        score killed between a job's two asks does not pay for the first again."""
        self.model, self.policy, self.info, self.prompts = model, policy, info, prompts
        self.batch = batch
        self.calls = Dispatcher(backend, policy, journal=journal)
        self.tally = ScoreTally()

    async def run(self, jobs: list[Job], sidecar: Sidecar, on_progress: ProgressCallback) -> None:
        pending, done = iter(jobs), 0
        on_progress(Progress(0, len(jobs), unit="call"))

        async def worker() -> None:
            nonlocal done
            for job in pending:  # next() never awaits: workers never race on it
                line = await self.score(job)
                if line is not None:
                    sidecar.append(line)
                done += 1
                on_progress(Progress(done, len(jobs), unit="call"))

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.policy.in_flight, len(jobs))):
                    group.create_task(worker())
        except BaseExceptionGroup as errors:
            raise most_telling(errors) from None
        finally:
            self.tally.requests = sum(self.calls.stats.requests.values())
            self.tally.retries = sum(self.calls.stats.retries.values())
            self.tally.paced = self.calls.stats.paced

    async def score(self, job: Job) -> ScoreLine | None:
        """Ask, read, ask again once if need be; None when the call failed after retries."""
        counts = self.tally.per_scorer[job.scorer]
        messages: list[Message] = [{"role": "user", "content": job.prompt}]
        usage: Counter[str] = Counter()
        try:
            first = await self.complete(job, messages, usage)
            readings = self.read(job, first)
            replies, asked = [first.text], 1
            if len(readings) < max(1, len(job.versions)):
                name = SCORE_RANKING_AGAIN if job.versions else SCORE_SINGLE_AGAIN
                again = self.prompts[name].render(count=str(job.maximum), maximum=str(job.maximum))
                messages += [
                    {"role": "assistant", "content": first.text},
                    {"role": "user", "content": again},
                ]
                asked = 2
                counts["asked_again"] += 1
                try:
                    second = await self.complete(job, messages, usage)
                except (CallFailed, CallRefused) as error:
                    # The first reply is paid for: record it, missing, for --retry-missing.
                    return self.counted(
                        self.line(job, readings, usage, asked=2, replies=replies, error=str(error))
                    )
                readings = {**readings, **self.read(job, second)}
                replies.append(second.text)
        except (CallFailed, CallRefused) as error:
            if isinstance(error, CallRefused) and isinstance(error.error, ContextLengthExceeded):
                return self.counted(
                    self.line(job, {}, usage, asked=1, replies=[], error=str(error))
                )
            counts["failed"] += 1
            self.info(f"{job.scorer} of {job.key} failed after retries: {error}")
            return None
        except CallWaiting:  # --batch-no-wait: the next `evol score` collects it
            counts["waiting"] += 1
            return None
        return self.counted(self.line(job, readings, usage, asked=asked, replies=replies))

    def counted(self, line: ScoreLine) -> ScoreLine:
        """Count the line's records as scored or missing (a lineage counts each version)."""
        counts = self.tally.per_scorer[line.scorer]
        given = sum(value is not None for value in line.record_scores)
        counts["scored"] += given
        counts["missing"] += len(line.record_scores) - given
        counts["from_logprobs"] += given if line.source == "logprobs" else 0
        return line

    def read(self, job: Job, completion: Completion) -> dict[int, Reading]:
        if job.versions:
            return ranking_readings(completion, job.maximum)
        reading = single_reading(completion, job.maximum)
        return {1: reading} if reading else {}

    def line(
        self,
        job: Job,
        readings: dict[int, Reading],
        usage: Counter[str],
        *,
        asked: int,
        replies: list[str],
        error: str | None = None,
    ) -> ScoreLine:
        sources = {reading.source for reading in readings.values()}
        source = next(iter(sources)) if len(sources) == 1 else ("mixed" if sources else None)
        values = {version: reading.value for version, reading in readings.items()}
        common = {
            "scorer": job.scorer,
            "model": self.model,
            "id": job.key,
            "digest": job.digest,
            "asked": asked,
            "reply": "\n---\n".join(replies)[:REPLY_KEPT],
            "error": error,
            "usage": dict(usage),
            "batch": self.batch,
        }
        if job.versions:
            scores = {rid: values.get(place) for place, rid in enumerate(job.versions, start=1)}
            return ScoreLine(**common, scores=scores, source=source)
        return ScoreLine(**common, score=values.get(1), source=source)

    async def complete(self, job: Job, messages: list[Message], usage: Counter[str]) -> Completion:
        """One request with the retry policy; without log-probabilities once refused them."""
        logprobs = job.scorer not in self.tally.logprobs_refused
        try:
            completion = await self.request(job, messages, _params(job.max_tokens, logprobs))
        except CallRefused as refused:
            # A plain BackendError is a 4xx refusal; its subclasses (context, credentials,
            # model) are something else, which no fallback fixes.
            error = refused.error
            if (
                not logprobs
                or type(error) is not BackendError
                or "logprob" not in str(error).lower()
            ):
                raise  # a refusal of this request (a content filter, say), not of logprobs
            if job.scorer not in self.tally.logprobs_refused:
                self.tally.logprobs_refused.add(job.scorer)
                self.info(
                    f"the server refused log-probabilities ({error}); {job.scorer} goes on without them"
                )
            completion = await self.request(job, messages, _params(job.max_tokens, False))
        spent = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        }
        usage.update(spent)
        self.tally.usage.update(spent)
        return completion

    async def request(
        self, job: Job, messages: list[Message], params: GenerationParams
    ) -> Completion:
        # The step names the job and which ask this is: a batch keys its rows by it, the
        # journal (score_jobs.JobJournal) by the job's `call_item`.
        ask = f"ask{len(messages) // 2 + 1}"
        return await self.calls.complete(
            LLMRequest(messages, self.model, params, "score", job_step(job), ask)
        )
