"""`evol optimize`: Auto Evol-Instruct (arXiv 2406.00770), the evolving method tuned to the
user's model and seeds.

No pipeline of its own: each method is evaluated by an ordinary `evol run` (`evol.pipeline`)
of the development seeds, with that method's prompts directory, under OUT/steps/<k>/<name>/.
Those runs bring their journal, resume, --batch and pricing. The optimizer's own calls (an
analysis of the failures per batch of trajectories, then one proposal per candidate) go
through the same `Dispatcher`, with a journal of their own keyed by step, batch and candidate,
so a kill -9 and a rerun replay them instead of paying again.

Layout of --out:

    dev_seeds.jsonl            the development sample (--dev-size seeds drawn from --seed)
    steps/0/current/           the starting method: prompts/ and its evaluation run/
    steps/<k>/candidate_<j>/   step k's proposals: prompts/ and run/ (a refused one: none, its
                               reason is in history.json)
    optimizer_calls.jsonl      the optimizer's journal
    history.json               every finished step (see evol.optimize.config)
    prompts/                   the best method so far: `evol run --prompts` takes it
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evol.errors import UsageError
from evol.jsonl import LOCK_FILE, OWN_LINK_REMEDY, lock_directory, refuse_symlinks
from evol.llm import open_backend
from evol.method.prompts import OPTIMIZE_PROMPT_NAMES, PromptSet
from evol.optimize.candidates import (
    method_text,
    parse_method,
    refusal,
    reply_problem,
    write_prompts,
)
from evol.optimize.config import (
    HISTORY,
    CandidateResult,
    History,
    OptimizeConfig,
    OptimizeSummary,
    StepResult,
    load_history,
    save_history,
)
from evol.optimize.dev_seeds import dev_sample, write_if_changed
from evol.optimize.optimizer import Optimizer, Refused
from evol.optimize.paired import Interval, paired_interval
from evol.optimize.trajectories import Outcomes, Trajectory, outcomes, read_trajectories
from evol.pipeline import arun
from evol.progress import ProgressCallback
from evol.rundir.journal import CallJournal
from evol.seeds import file_digest

DEV_SEEDS = "dev_seeds.jsonl"
OPTIMIZER_JOURNAL = "optimizer_calls.jsonl"
BEST = "prompts"
STEPS = "steps"
START = "current"
OWN_NAMES = {HISTORY, DEV_SEEDS, OPTIMIZER_JOURNAL, BEST, STEPS, LOCK_FILE}


def optimize(
    config: OptimizeConfig,
    *,
    on_progress: ProgressCallback | None = None,
    on_info: Callable[[str], None] | None = None,
) -> OptimizeSummary:
    """Run (or resume) the optimization loop of `config` and return its summary."""
    return asyncio.run(aoptimize(config, on_progress=on_progress, on_info=on_info))


async def aoptimize(
    config: OptimizeConfig,
    *,
    on_progress: ProgressCallback | None = None,
    on_info: Callable[[str], None] | None = None,
) -> OptimizeSummary:
    """The async body of `optimize`."""
    info = on_info or (lambda _message: None)
    start = PromptSet.load(config.prompts_dir)  # refuses a bad --prompts before anything else
    _refuse_foreign(config.out)
    lock = lock_directory(config.out, "another evol optimize is writing here: wait for it")
    try:
        sample = dev_sample(config)
        settings = config.settings(
            file_digest(config.seeds),
            start.digest(config.operations),
            optimizer_digest(start),
        )
        history = load_history(config.out, settings)
        # Only now, once the settings are known to be this directory's: a refused rerun leaves
        # the sample its runs were made from as it was.
        dev = write_if_changed(config.out / DEV_SEEDS, sample)
        save_history(config.out, history)  # a rerun checks its settings, even if none ended
        loop = _Loop(config, dev, history, info, on_progress)
        return await loop.execute(start)
    finally:
        lock.release()


def optimizer_digest(prompts: PromptSet) -> str:
    """A hash of the optimizer's own templates (optimize_analysis, optimize_propose): its
    journalled replies answer these, so a rerun with other ones must not replay them."""
    return prompts.digest_of(OPTIMIZE_PROMPT_NAMES)


@dataclass
class Method:
    """A method and what its evaluation run did."""

    name: str
    folder: Path  # holds prompts/ and run/
    prompts: PromptSet
    trajectories: list[Trajectory]

    @property
    def outcomes(self) -> Outcomes:
        return outcomes(self.trajectories)


class _Pending(Exception):
    """An evaluation run waits on its batches (--batch-no-wait)."""


class _RunFailed(Exception):
    """An evaluation run ended without all its steps (calls failed after retries)."""


class _Loop:
    """The steps of one `evol optimize`, from the method it starts or resumes with."""

    def __init__(
        self,
        config: OptimizeConfig,
        dev: Path,
        history: History,
        info: Callable[[str], None],
        on_progress: ProgressCallback | None,
    ):
        self.config, self.dev, self.history = config, dev, history
        self.info, self.on_progress = info, on_progress
        self.best_rate: float | None = None  # the current method's failure rate

    async def execute(self, start: PromptSet) -> OptimizeSummary:
        config, history = self.config, self.history
        try:
            current = await self.evaluate(START, config.out / STEPS / "0" / START, start, {})
            history.start_failure_rate = current.outcomes.failure_rate
            for step in history.steps:  # finished before: go on from the method each chose
                if step.chosen:
                    current = await self.reload(step.step, step.chosen)
            self.save_best(current)
            if not history.stopped and len(history.steps) < config.steps:
                current = await self.steps(current)
        except _Pending:
            return self.summary("pending")
        except _RunFailed as failed:
            return self.summary("failed", str(failed))
        self.save_best(current)
        return self.summary("complete")

    async def steps(self, current: Method) -> Method:
        _name, backend = open_backend(self.config.backend, self.config.backend_settings())
        recorded = {f"step{step.step}" for step in self.history.steps}
        journal = CallJournal.open(self.config.out / OPTIMIZER_JOURNAL, recorded)
        try:
            optimizer = Optimizer(self.config, backend, journal)
            while not self.history.stopped and len(self.history.steps) < self.config.steps:
                number = len(self.history.steps) + 1
                result, chosen = await self.step(number, current, optimizer)
                self.history.steps.append(result)
                if chosen is None:
                    self.history.stopped = f"step {number}: no candidate improved"
                else:
                    current = chosen
                    self.save_best(current)
                save_history(self.config.out, self.history)
            journal.clear()  # every step it served is in history.json
        finally:
            journal.close()
            await backend.aclose()
        return current

    async def step(
        self, number: int, current: Method, optimizer: Optimizer
    ) -> tuple[StepResult, Method | None]:
        config, operations = self.config, list(self.config.operations)
        failures = [t for t in current.trajectories if t.failed]
        shown = method_text(current.prompts, operations)
        result = StepResult(
            step=number,
            current=str((current.folder / BEST).relative_to(config.out)),
            current_failure_rate=current.outcomes.failure_rate,
            analysis=[],
            candidates=[],
            chosen=None,
        )
        if not failures:
            result.analysis = ["no evolution failed on the development set: nothing to improve"]
            return result, None
        batches = -(-len(failures) // config.analysis_batch)
        self.info(
            f"step {number}/{config.steps}: analysing {len(failures)} failures in {batches} calls"
        )
        result.analysis = await optimizer.analyse(number, shown, failures)
        replies = await optimizer.propose(number, shown, "\n\n".join(result.analysis))
        evaluated: list[tuple[CandidateResult, Method]] = []
        pending = False
        for index, reply in enumerate(replies, start=1):
            name = f"candidate_{index}"
            folder = config.out / STEPS / str(number) / name
            rewritten = parse_method(reply) if isinstance(reply, str) else {}
            candidate = CandidateResult(name=name, templates=sorted(rewritten))
            result.candidates.append(candidate)
            if isinstance(reply, Refused):
                why: str | None = reply.refused
            else:
                why = reply_problem(reply) or refusal(rewritten, current.prompts, operations)
            if why:
                candidate.refused = why
                self.info(f"step {number}: {name} refused before evaluation: {why}")
                continue
            try:
                method = await self.evaluate(name, folder, current.prompts, rewritten)
            except _Pending:  # the other candidates' batches are submitted too
                pending = True
                continue
            evaluated.append((candidate, method))
            rates = [m.outcomes.failure_rate for _c, m in evaluated] + [self.best_rate]
            best = min((rate for rate in rates if rate is not None), default=None)
            self.info(
                f"step {number}/{config.steps}: {len(evaluated)} of {len(replies)} candidates "
                f"evaluated, best failure rate so far {_rate(best)}"
            )
        if pending:
            raise _Pending
        return result, self.judge(current, evaluated, result)

    def judge(
        self,
        current: Method,
        evaluated: list[tuple[CandidateResult, Method]],
        result: StepResult,
    ) -> Method | None:
        """Fill in each candidate's rate and interval; the accepted one with the lowest rate."""
        baseline = current.outcomes.per_seed()
        best: tuple[float, Method] | None = None
        for candidate, method in evaluated:
            counts = method.outcomes
            candidate.failure_rate = counts.failure_rate
            candidate.evolutions = sum(counts.attempted.values())
            candidate.eliminated = sum(counts.eliminated.values())
            candidate.difference = paired_interval(
                baseline,
                counts.per_seed(),
                confidence=self.config.confidence,
                tests=self.config.candidates,  # refused ones too: m comparisons were proposed
            )
            candidate.accepted = bool(candidate.difference and candidate.difference.lower_for_sure)
            rate = counts.failure_rate
            if candidate.accepted and rate is not None and (best is None or rate < best[0]):
                best = (rate, method)
        if best is None:
            return None
        result.chosen = best[1].name
        return best[1]

    async def evaluate(
        self, name: str, folder: Path, base: PromptSet, rewritten: dict[str, str]
    ) -> Method:
        """Write the method's prompts and run (or resume) its evaluation on the dev seeds."""
        write_prompts(base, rewritten, folder / BEST)
        run_config = self.config.run_config(self.dev, folder / "run", folder / BEST)
        label = str(folder.relative_to(self.config.out))
        summary = await arun(
            run_config,
            on_progress=self.on_progress,
            on_info=lambda message: self.info(f"{label}: {message}"),
        )
        if summary.status == "pending":
            raise _Pending
        if summary.status != "complete":
            raise _RunFailed(
                f"the evaluation run {folder / 'run'} ended {summary.status}: run the same "
                "command again to retry what failed"
            )
        prompts = PromptSet.load(folder / BEST)
        return Method(name, folder, prompts, read_trajectories(folder / "run"))

    async def reload(self, step: int, name: str) -> Method:
        folder = self.config.out / STEPS / str(step) / name
        return await self.evaluate(name, folder, PromptSet.load(folder / BEST), {})

    def save_best(self, method: Method) -> None:
        self.best_rate = method.outcomes.failure_rate
        write_prompts(method.prompts, {}, self.config.out / BEST)
        save_history(self.config.out, self.history)

    def summary(self, status: str, error: str | None = None) -> OptimizeSummary:
        history, out = self.history, self.config.out
        return OptimizeSummary(
            out=str(out),
            status=status,
            error=error,
            prompts=str(out / BEST) if (out / BEST).is_dir() else None,
            history=str(out / HISTORY),
            steps_done=len(history.steps),
            start_failure_rate=history.start_failure_rate,
            best_failure_rate=self.best_rate,
            chosen=[step.chosen for step in history.steps],
            differences=[_chosen_difference(step) for step in history.steps],
            stopped=history.stopped,
        )


def _chosen_difference(step: StepResult) -> Interval | None:
    return next((c.difference for c in step.candidates if c.name == step.chosen), None)


def _rate(rate: float | None) -> str:
    return "unknown" if rate is None else f"{rate:.3f}"


def _refuse_foreign(out: Path) -> None:
    """Refuse an --out that holds files of something else, or a link in place of one of its
    own (a rewrite would carry the change elsewhere): evol writes only its own files there.
    Under steps/, that is each evaluation's folder and its prompts/ and run/ (steps/<k>/<name>/
    run/), whose own files the run directory checks."""
    if not out.is_dir():
        return
    own = [out / name for name in sorted(OWN_NAMES)]
    if (out / STEPS).is_dir() and not (out / STEPS).is_symlink():
        own += [
            path for depth in ("*", "*/*", "*/*/*") for path in sorted((out / STEPS).glob(depth))
        ]
    refuse_symlinks(own, OWN_LINK_REMEDY)
    foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_NAMES)
    if foreign and not (out / HISTORY).exists():
        raise UsageError(
            f"{out}: holds files that are not evol optimize's ({', '.join(foreign[:3])}): "
            "choose a new or empty --out"
        )
