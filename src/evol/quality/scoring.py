"""`evol score`: rate a run's kept records with an LLM, and measure the run on the CPU.

Three scorers, each switchable:

- difficulty: each instruction 1 to 10, for what it demands, not for the length of its text;
- complexity: each lineage's kept chain (the seed, then its kept evolutions) in one call,
  every version scored 1 to N against the others, as Deita (arXiv 2312.15685) ranks an
  evolution chain; the versions are shown in an order drawn from the lineage's id, so that
  the model cannot simply score them by position;
- quality (`--answers`): each answer 1 to 10 for helpfulness, relevance, accuracy and depth.

Requests ask for temperature 0, a few tokens and the top 20 log-probabilities of each token.
Where a reply carries them, the score is the expected value over the valid numbers at the
score's position, normalised over those numbers (Deita's way); otherwise it is the number the
reply gives, prose included ("I'd rate it a 7 out of 10"). A reply that gives none is asked
again once, then recorded as missing: a score is never guessed. A server that refuses
log-probabilities (400) gets that scorer's requests without them.

Scores are appended to scores.jsonl in the run directory, one line a record (a lineage for
complexity), flushed as each reply arrives, naming the scorer, the model and a digest of the
text scored. A rerun asks only for what that scorer and model have not scored yet (text
unchanged), so a kill -9 loses at most the calls in flight; a torn last line is cut.

The same command writes the CPU figures (`evol.quality.metrics`, metrics.json) and, with `--against`,
the contamination check (`evol.quality.contamination`, contamination.json); neither needs a model.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import BaseModel, Field

from evol.config import Connection
from evol.errors import (
    BackendError,
    ContextLengthExceeded,
    RunDirError,
    TransientBackendError,
    UsageError,
    most_telling,
)
from evol.interrupts import until_signalled
from evol.jsonl import (
    lock_directory,
)
from evol.llm import (
    ChatBackend,
    Completion,
    GenerationParams,
    LLMRequest,
    Message,
    open_backend,
)
from evol.llm.dispatch import CallFailed, CallPolicy, CallRefused, CallWaiting, Dispatcher
from evol.llm.pricing import BATCH_RATE, cost_usd, unit_prices
from evol.method.prompts import (
    SCORE_COMPLEXITY,
    SCORE_DIFFICULTY,
    SCORE_QUALITY,
    SCORE_RANKING_AGAIN,
    SCORE_SINGLE_AGAIN,
    PromptSet,
)
from evol.method.textstats import estimate_tokens
from evol.progress import Progress, ProgressCallback
from evol.quality.contamination import (
    DEFAULT_NGRAM,
    ContaminationReport,
    check_contamination,
    write_contamination,
)
from evol.quality.metrics import compute_metrics, write_metrics
from evol.quality.readings import Reading, ranking_readings, single_reading
from evol.quality.scores import (
    REPLY_KEPT,
    SCORERS,
    ScoreLine,
    ScorerName,
    Sidecar,
    chain_digest,
    lineages,
    read_score_lines,
    read_scores,
    record_digest,
)
from evol.rundir.manifest import load_manifest
from evol.rundir.records import compose
from evol.rundir.store import SCORE_BATCH_DIR, generation_files, iter_records, refuse_links
from evol.seeds import iter_seeds

SCALE = 10  # difficulty and quality: 1 to 10
SINGLE_MAX_TOKENS = 16  # room for "I'd rate it a 7 out of 10" before the reply is cut
TOP_LOGPROBS = 20  # OpenAI's maximum

# -- configuration, plan and summary ---------------------------------------------------------


class ScoreConfig(Connection):
    """Everything `evol score` needs."""

    run_dir: Path
    difficulty: bool = True
    complexity: bool = True
    quality: bool = Field(False, description="--answers: rate each answer too")
    retry_missing: bool = Field(False, description="ask again for scores recorded as missing")
    metrics: bool = Field(True, description="write metrics.json (CPU only)")
    against: list[Path] = Field(default_factory=list, description="evaluation sets to check")
    ngram: int = Field(DEFAULT_NGRAM, ge=1, le=1000)
    prompts_dir: Path | None = Field(None, description="--prompts: templates that override ours")

    model: str | None = None

    def prompts(self) -> PromptSet:
        """The scoring prompts: ours, or those --prompts overrides."""
        return PromptSet.load(self.prompts_dir)

    @property
    def scorers(self) -> list[ScorerName]:
        wanted = {"difficulty": self.difficulty, "complexity": self.complexity}
        wanted["quality"] = self.quality
        return [name for name in SCORERS if wanted[name]]


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
    usage: dict[str, int]
    metrics: str | None = Field(description="the metrics file written, if any")
    contamination: ContaminationReport | None
    elapsed_s: float


class ScorerPlan(BaseModel):
    calls: int
    already: int
    prompt_tokens: int
    completion_tokens: int


class ScorePlan(BaseModel):
    """What `evol score --dry-run` prints: an upper bound, as if no reply had to be asked
    again, with tokens estimated from word counts."""

    run: str
    model: str | None
    scorers: dict[str, ScorerPlan]
    calls: int
    cost_usd: float | None
    against: list[str]


# -- jobs ------------------------------------------------------------------------------------


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


def _done_checker(lines: list[ScoreLine], model: str | None, retry_missing: bool):
    """A job is done when its scorer and model (any model if None) scored its text before."""
    done: set[tuple[str, str | None, str, str]] = set()
    for line in lines:
        if retry_missing and line.missing:
            continue
        done.add((line.scorer, line.model, line.id, line.digest))
        done.add((line.scorer, None, line.id, line.digest))
    return lambda job: (job.scorer, model, job.key, job.digest) in done


# -- calling the model -----------------------------------------------------------------------


def _params(max_tokens: int, logprobs: bool) -> GenerationParams:
    if logprobs:
        return GenerationParams(
            temperature=0, max_tokens=max_tokens, logprobs=True, top_logprobs=TOP_LOGPROBS
        )
    return GenerationParams(temperature=0, max_tokens=max_tokens)


@dataclass
class _Tally:
    requests: int = 0
    retries: int = 0
    usage: Counter[str] = field(default_factory=Counter)
    per_scorer: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    logprobs_refused: set[str] = field(default_factory=set)


class _Scorer:
    """Makes the scoring calls of one `evol score`: one concurrency limit, one retry policy."""

    def __init__(
        self,
        backend: ChatBackend,
        model: str,
        config: ScoreConfig,
        info: Callable[[str], None],
        prompts: PromptSet,
    ):
        self.model, self.config, self.info, self.prompts = model, config, info, prompts
        policy = CallPolicy(
            in_flight=config.in_flight,
            max_retries=config.max_retries,
            retry_max_wait=config.retry_max_wait,
        )
        self.calls = Dispatcher(backend, policy)
        self.tally = _Tally()

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
                for _ in range(min(self.config.in_flight, len(jobs))):
                    group.create_task(worker())
        except BaseExceptionGroup as errors:
            raise most_telling(errors) from None
        finally:
            self.tally.requests = sum(self.calls.stats.requests.values())
            self.tally.retries = sum(self.calls.stats.retries.values())

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
            "batch": self.config.batch,
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
        # The step names the job and which ask this is: a batch keys its rows by it.
        ask = f"ask{len(messages) // 2 + 1}"
        step = f"{job.scorer}/{job.key}"
        return await self.calls.complete(
            LLMRequest(messages, self.model, params, "score", step, ask)
        )


# -- the command -----------------------------------------------------------------------------


def score_run(
    config: ScoreConfig,
    *,
    on_progress: ProgressCallback | None = None,
    on_info: Callable[[str], None] | None = None,
) -> ScoreSummary:
    """Score the run in `config.run_dir` (or resume scoring it) and return the summary."""
    return asyncio.run(ascore_run(config, on_progress=on_progress, on_info=on_info))


async def ascore_run(
    config: ScoreConfig,
    *,
    on_progress: ProgressCallback | None = None,
    on_info: Callable[[str], None] | None = None,
) -> ScoreSummary:
    """The async body of `score_run`, for callers that already have an event loop."""
    started = time.monotonic()
    info = on_info or (lambda _message: None)
    prompts = config.prompts()  # a bad --prompts file stops the command before any work
    records = kept_records(config.run_dir)
    lock = _lock(config.run_dir)
    try:
        contamination = None
        if config.against:
            contamination = check_contamination(config.run_dir, config.against, ngram=config.ngram)
            write_contamination(config.run_dir, contamination)
        metrics_path = None
        if config.metrics:
            metrics_path = str(write_metrics(config.run_dir, compute_metrics(config.run_dir)))
        tally, model, already = _Tally(), None, Counter()
        if config.scorers:
            model, tally, already = await _score_with_model(
                config, records, on_progress, info, prompts
            )
            counts = tally.per_scorer.values()
            if config.batch and not any(c["failed"] or c["waiting"] for c in counts):
                _forget_score_batches(config.run_dir)
    finally:
        lock.release()
    summaries = _scorer_summaries(config, records, model, tally, already)
    failed = sum(summary.failed for summary in summaries.values())
    waiting = sum(summary.waiting for summary in summaries.values())
    return ScoreSummary(
        run=str(config.run_dir),
        status="failed" if failed else "pending" if waiting else "complete",
        scorers=summaries,
        requests=tally.requests,
        retries=tally.retries,
        usage=dict(tally.usage),
        metrics=metrics_path,
        contamination=contamination,
        elapsed_s=round(time.monotonic() - started, 3),
    )


async def _score_with_model(
    config: ScoreConfig,
    records: list[dict[str, Any]],
    on_progress: ProgressCallback | None,
    info: Callable[[str], None],
    prompts: PromptSet,
) -> tuple[str, _Tally, Counter[str]]:
    lines = read_score_lines(config.run_dir)
    if config.model:
        jobs, already = build_jobs(
            records,
            config.scorers,
            _done_checker(lines, config.model, config.retry_missing),
            prompts,
        )
        if not jobs:
            info("every record is scored already: nothing to ask")
            return config.model, _Tally(), already
    batch = config.batch_settings_in(config.run_dir / SCORE_BATCH_DIR)
    _check_score_batches(config)
    backend_name, backend = open_backend(config.backend, config.backend_settings(), batch=batch)
    try:
        model = config.model or await _default_model(backend)
        jobs, already = build_jobs(
            records, config.scorers, _done_checker(lines, model, config.retry_missing), prompts
        )
        info(f"backend {backend_name}, model {model}: {len(jobs)} calls to make")
        scorer = _Scorer(backend, model, config, info, prompts)
        sidecar = Sidecar(config.run_dir)
        try:
            await until_signalled(
                scorer.run(jobs, sidecar, on_progress or (lambda _progress: None))
            )
        finally:
            sidecar.close()
        return model, scorer.tally, already
    finally:
        await backend.aclose()


def _check_score_batches(config: ScoreConfig) -> None:
    """Refuse live scoring while batches of an earlier `evol score --batch` are recorded: their
    rows are paid for (running, or ended with replies not yet written to scores.jsonl), and
    asking live would pay for them again. A scoring that completes with --batch forgets them."""
    from evol.llm.batch import RecordedBatches

    batches = RecordedBatches.of(config.run_dir / SCORE_BATCH_DIR)
    if config.batch or not batches:
        return
    held = (
        f"are still running ({batches.some_running()})"
        if batches.running
        else "hold replies that may not be in scores.jsonl yet"
    )
    raise UsageError(
        f"{config.run_dir}: batches of an earlier `evol score --batch` {held} and are paid "
        f"for: collect them with --batch (or delete {SCORE_BATCH_DIR}/ to ask live, paying again)"
    )


def _forget_score_batches(run_dir: Path) -> None:
    """After a scoring with --batch that left nothing failed or waiting, its batches are spent:
    every reply is in scores.jsonl. Their state goes, unless one is still running."""
    from evol.llm.batch import RecordedBatches

    state = run_dir / SCORE_BATCH_DIR
    if not state.is_symlink() and state.is_dir() and not RecordedBatches.of(state).running:
        shutil.rmtree(state)


async def _default_model(backend: ChatBackend) -> str:
    try:
        return await backend.default_model()
    except TransientBackendError as error:
        raise BackendError(f"{error} (asking it which model it serves)") from None


def kept_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every kept record of the run in `run_dir`, gen_0 first; an error if there is none."""
    load_manifest(run_dir)  # a run is there, and its run.json is one evol reads
    if not generation_files(run_dir):
        raise RunDirError(f"{run_dir}: the run has no records yet")
    return list(iter_records(run_dir))


def _lock(run_dir: Path) -> FileLock:
    """The run directory's lock: no `evol run` or other `evol score` writes while we do.

    A link among the names evol writes is refused first: the lock file, the scores and the
    metrics are all opened or replaced in the run directory itself.
    """
    refuse_links(run_dir)
    return lock_directory(
        run_dir,
        "another evol process is writing to this directory; score it when it has stopped",
    )


def _scorer_summaries(
    config: ScoreConfig,
    records: list[dict[str, Any]],
    model: str | None,
    tally: _Tally,
    already: Counter[str],
) -> dict[str, ScorerSummary]:
    if model is None:
        return {}
    book = read_scores(config.run_dir, records, model=model)
    summaries = {}
    for scorer in config.scorers:
        counts = tally.per_scorer[scorer]
        values = [v for v in book.of(scorer).values() if v is not None]
        summaries[scorer] = ScorerSummary(
            model=model,
            scored=counts["scored"],
            missing=counts["missing"],
            already=already[scorer],
            failed=counts["failed"],
            waiting=counts["waiting"],
            from_logprobs=counts["from_logprobs"],
            asked_again=counts["asked_again"],
            logprobs_refused=scorer in tally.logprobs_refused,
            records_scored=len(values),
            mean=round(sum(values) / len(values), 4) if values else None,
        )
    return summaries


def plan_scoring(
    config: ScoreConfig, *, price_in: float | None = None, price_out: float | None = None
) -> ScorePlan:
    """The calls `evol score` would still make and their estimated cost, calling nothing.

    Without --model, a record scored by any model counts as done.
    """
    records = kept_records(config.run_dir)
    for path in config.against:  # a bad evaluation file stops the dry run as it would the run
        for _ in iter_seeds(path):
            pass
    lines = read_score_lines(config.run_dir)
    jobs, already = build_jobs(
        records,
        config.scorers,
        _done_checker(lines, config.model, config.retry_missing),
        config.prompts(),
    )
    plans: dict[str, ScorerPlan] = {
        scorer: ScorerPlan(calls=0, already=already[scorer], prompt_tokens=0, completion_tokens=0)
        for scorer in config.scorers
    }
    for job in jobs:
        plan = plans[job.scorer]
        plan.calls += 1
        plan.prompt_tokens += estimate_tokens(job.prompt)
        plan.completion_tokens += job.max_tokens
    prices = unit_prices(config.model, price_in, price_out)
    rate = BATCH_RATE if config.batch else 1.0
    cost = cost_usd(
        prices,
        sum(p.prompt_tokens for p in plans.values()),
        sum(p.completion_tokens for p in plans.values()),
        rate,
    )
    return ScorePlan(
        run=str(config.run_dir),
        model=config.model,
        scorers=plans,
        calls=len(jobs),
        cost_usd=cost,
        against=[str(path) for path in config.against],
    )


# -- output ----------------------------------------------------------------------------------


def format_plan(plan: ScorePlan) -> str:
    """The dry run as a few plain lines."""
    lines = [
        f"{plan.run}: {plan.calls} calls to make with {plan.model or 'the server default model'}"
    ]
    for scorer, row in plan.scorers.items():
        lines.append(
            f"  {scorer:<10} {row.calls} calls ({row.already} records scored already), about "
            f"{row.prompt_tokens} prompt + {row.completion_tokens} completion tokens at most"
        )
    if plan.against:
        lines.append(f"  contamination check against {', '.join(plan.against)} (no calls)")
    cost = (
        f"${plan.cost_usd:.4f}"
        if plan.cost_usd is not None
        else "unknown (pass --model with a known name, or --price-in and --price-out)"
    )
    lines.append(f"estimated cost: {cost}")
    return "\n".join(lines)


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
