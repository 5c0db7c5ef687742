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
unchanged), so a kill -9 loses at most the calls in flight; a torn last line is cut. Each reply
is journalled (score_calls.jsonl, `evol.rundir.journal`) until its line is written: a record
asked again once is not asked the first time again after a kill between its two asks.

The same command writes the CPU figures (`evol.quality.metrics`, metrics.json) and, with `--against`,
the contamination check (`evol.quality.contamination`, contamination.json); neither needs a model.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import Field

from evol.config import Connection
from evol.errors import BackendError, RunDirError, TransientBackendError, UsageError
from evol.interrupts import until_signalled
from evol.jsonl import lock_directory
from evol.llm import ChatBackend, open_backend
from evol.method.prompts import SCORE_PROMPT_NAMES, PromptSet
from evol.progress import ProgressCallback
from evol.quality.contamination import DEFAULT_NGRAM, check_contamination, write_contamination
from evol.quality.metrics import compute_metrics, write_metrics
from evol.quality.score_jobs import JobJournal, build_jobs, done_checker, journal_items
from evol.quality.score_summary import ScorerSummary, ScoreSummary
from evol.quality.scorer import Scorer, ScoreTally
from evol.quality.scores import SCORERS, ScorerName, Sidecar, read_score_lines, read_scores
from evol.rundir.journal import CallJournal
from evol.rundir.layout import SCORE_BATCH_DIR, SCORE_JOURNAL, generation_files, refuse_links
from evol.rundir.manifest import load_manifest
from evol.rundir.record_files import iter_records

# -- configuration ---------------------------------------------------------------------------------


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
        tally, model, already = ScoreTally(), None, Counter()
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
        paced=tally.paced,
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
) -> tuple[str, ScoreTally, Counter[str]]:
    lines = read_score_lines(config.run_dir)
    if config.model:
        jobs, already = build_jobs(
            records,
            config.scorers,
            done_checker(lines, config.model, config.retry_missing),
            prompts,
        )
        if not jobs:
            info("every record is scored already: nothing to ask")
            return config.model, ScoreTally(), already
    batch = config.batch_settings_in(config.run_dir / SCORE_BATCH_DIR)
    _check_score_batches(config)
    backend_name, backend = open_backend(config.backend, config.backend_settings(), batch=batch)
    try:
        model = config.model or await _default_model(backend)
        jobs, already = build_jobs(
            records, config.scorers, done_checker(lines, model, config.retry_missing), prompts
        )
        info(f"backend {backend_name}, model {model}: {len(jobs)} calls to make")
        # Replies whose line is written are spent: what the journal keeps is the rest.
        asked = prompts.digest_of(SCORE_PROMPT_NAMES)
        items, written = journal_items(jobs, lines, model, asked)
        journal = CallJournal.open(config.run_dir / SCORE_JOURNAL, written)
        scorer = Scorer(
            backend,
            model,
            config.call_policy(),
            info,
            prompts,
            batch=config.batch,
            journal=JobJournal(journal, items),
        )
        sidecar = Sidecar(config.run_dir)
        try:
            await until_signalled(
                scorer.run(jobs, sidecar, on_progress or (lambda _progress: None))
            )
            if not any(counts["waiting"] for counts in scorer.tally.per_scorer.values()):
                journal.clear()  # each reply it kept is in a line of scores.jsonl
        finally:
            sidecar.close()
            journal.close()
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
    tally: ScoreTally,
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
