"""Scheduling the LLM calls of a run.

Each seed's lineage is one task that runs its rounds in order: evolve the tip, check the
rewrite for free, then answer and judge at the same time, then apply the rules. Lineages run
side by side with no barrier between rounds; one adaptive limit bounds the requests in flight
(halved on 429, see `evol.limits`), the --rpm/--tpm budget paces them, and one retry policy
wraps every request. Results go to the store as soon as they exist.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evol.elimination import (
    EliminationRules,
    Reason,
    Verdict,
    check_answer,
    check_rewrite,
    parse_verdict,
)
from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    EndpointUnreachable,
    EvolError,
    ModelNotFound,
    RateLimited,
    Redirected,
    TransientBackendError,
    Unreachable,
)
from evol.limits import AdaptiveConcurrency, RequestBudget
from evol.llm import ChatBackend, Completion, GenerationParams
from evol.llm.retry import with_retries
from evol.operations import BREADTH, choose_operation
from evol.prompts import PromptSet
from evol.records import EliminatedRecord, Record, TokenUsage
from evol.seeds import Seed
from evol.store import LineageProgress, RunStore, Tip

if TYPE_CHECKING:  # numpy, which the duplicate rule needs, loads only when the rule is on
    from evol.dedup import DuplicateIndex

# Errors that no other request would escape: the run stops at once.
_FATAL = (AuthenticationFailed, ModelNotFound, Redirected, EndpointUnreachable)


@dataclass(frozen=True)
class RoleModels:
    """The model each role calls."""

    evolve: str
    answer: str
    judge: str


@dataclass(frozen=True)
class EngineSettings:
    """The knobs of the evolution itself, taken from the run's config."""

    generations: int
    run_seed: int
    weights: dict[str, float]
    rules: EliminationRules
    answer_seeds: bool
    params: GenerationParams
    concurrency: int
    max_retries: int
    retry_max_wait: float
    rpm: float | None = None
    tpm: float | None = None


@dataclass
class FailedItem:
    """A step whose call failed after all retries; the next resume does it again."""

    id: str
    round: int
    role: str
    error: str


@dataclass
class EngineStats:
    """What this process did: requests per role, retries, failures."""

    requests: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    failed: list[FailedItem] = field(default_factory=list)


class _ItemFailed(Exception):
    """Ends one lineage for this run; already recorded in `EngineStats.failed`."""


class _Refused(Exception):
    """The server refused a call for good: the step is eliminated with this reason."""

    def __init__(self, reason: Reason, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def compose(instruction: str, input_text: str) -> str:
    """The user message for an instruction with an optional Alpaca-style input."""
    return f"{instruction}\n\n{input_text}" if input_text.strip() else instruction


class Engine:
    """Runs every lineage of a run to its last round against one backend."""

    def __init__(
        self,
        *,
        backend: ChatBackend,
        prompts: PromptSet,
        store: RunStore,
        models: RoleModels,
        settings: EngineSettings,
        pool: DuplicateIndex | None = None,
        on_step: Callable[[], None] | None = None,
    ):
        self.backend, self.prompts, self.store = backend, prompts, store
        self.models, self.settings = models, settings
        self.pool = pool  # the kept instructions, when the duplicate rule is on
        self.on_step = on_step or (lambda: None)
        self.stats = EngineStats()
        self.slots = AdaptiveConcurrency(settings.concurrency)
        self._budget = (
            RequestBudget(settings.rpm, settings.tpm, settings.params.max_tokens)
            if settings.rpm or settings.tpm
            else None
        )
        self._fatal: EvolError | None = None

    async def run(self, seeds: Iterable[Seed]) -> EngineStats:
        """Evolve every seed; returns when all lineages are done or have failed."""
        pending = iter(seeds)

        async def worker() -> None:
            # Workers share one iterator; next() never awaits, so they never race on it.
            for seed in pending:
                await self._lineage(seed)

        workers = self.settings.concurrency
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        except BaseExceptionGroup as errors:
            raise _most_telling(errors) from None
        return self.stats

    async def _lineage(self, seed: Seed) -> None:
        progress = self.store.progress(seed.id)
        steps: list[Coroutine[Any, Any, None]] = []
        if not progress.seed_done:
            steps.append(self._settle_seed(seed))
        if progress.rounds_done < self.settings.generations:
            steps.append(self._evolve_rounds(seed, progress))
        await _all(*steps)

    async def _settle_seed(self, seed: Seed) -> None:
        record = Record(
            id=seed.id,
            parent_id=None,
            root_id=seed.id,
            generation=0,
            round=0,
            operation=None,
            instruction=seed.instruction,
            input=seed.input,
            output=seed.output,
            metadata=seed.metadata,
        )
        if record.output is None and self.settings.answer_seeds:
            try:
                completion = await self._call(
                    "answer", compose(seed.instruction, seed.input), seed.id, 0
                )
            except _ItemFailed:
                return
            except _Refused as refused:
                # The seed still evolves (its instruction is the user's); its answer is not kept.
                self.store.add_eliminated(
                    EliminatedRecord(
                        **record.model_dump(), reason=refused.reason, detail=refused.detail
                    )
                )
                self.on_step()
                return
            record.output, record.usage = completion.text, {"answer": _usage(completion)}
        self.store.add(record)
        self.on_step()

    async def _evolve_rounds(self, seed: Seed, progress: LineageProgress) -> None:
        tip = progress.tip or Tip(seed.id, seed.instruction, seed.input, 0)
        for round_ in range(progress.rounds_done + 1, self.settings.generations + 1):
            try:
                tip = await self._evolve_once(seed, tip, round_)
            except _ItemFailed:
                return
            self.on_step()

    async def _evolve_once(self, seed: Seed, tip: Tip, round_: int) -> Tip:
        """One round for one lineage; returns the lineage's tip afterwards."""
        rules = self.settings.rules
        operation = choose_operation(self.settings.weights, self.settings.run_seed, tip.id, round_)
        child_input = "" if operation == BREADTH else tip.input
        draft = Record(
            id=f"{tip.id}.{round_}",
            parent_id=tip.id,
            root_id=seed.id,
            generation=tip.generation + 1,
            round=round_,
            operation=operation,
            instruction="",
            input=child_input,
            output=None,
            metadata=seed.metadata,
        )
        try:
            prompt = self.prompts.evolve_prompt(operation, tip.instruction, tip.input)
            evolved = await self._call("evolve", prompt, draft.id, round_)
            draft.usage["evolve"] = _usage(evolved)
            draft.instruction = evolved.text.strip()
            if reason := check_rewrite(tip.instruction, draft.instruction, rules):
                return self._eliminate(draft, reason, tip)
            if self.pool is not None and (original := self.pool.find(draft.instruction, seed.id)):
                return self._eliminate(draft, Reason.DUPLICATE, tip, duplicate_of=original)
            answer, verdict = await self._answer_and_judge(tip, draft)
        except _Refused as refused:
            return self._eliminate(draft, refused.reason, tip, detail=refused.detail)
        draft.output, draft.judge = answer, verdict
        if verdict == Verdict.EQUAL:
            return self._eliminate(draft, Reason.NO_INFORMATION_GAIN, tip)
        if reason := check_answer(answer, rules):
            return self._eliminate(draft, reason, tip)
        self.store.add(draft)
        if self.pool is not None:
            self.pool.add(draft.id, seed.id, draft.instruction)
        return Tip(draft.id, draft.instruction, draft.input, draft.generation)

    async def _answer_and_judge(self, parent: Tip, draft: Record) -> tuple[str, Verdict | None]:
        child = compose(draft.instruction, draft.input)
        calls = [self._call("answer", child, draft.id, draft.round)]
        if self.settings.rules.judge:
            prompt = self.prompts.judge_prompt(compose(parent.instruction, parent.input), child)
            calls.append(self._call("judge", prompt, draft.id, draft.round))
        completions = await _all(*calls)
        for role, completion in zip(("answer", "judge"), completions, strict=False):
            draft.usage[role] = _usage(completion)
        verdict = parse_verdict(completions[1].text) if len(completions) > 1 else None
        return completions[0].text, verdict

    def _eliminate(self, draft: Record, reason: Reason, tip: Tip, **why: str) -> Tip:
        self.store.add_eliminated(EliminatedRecord(**draft.model_dump(), reason=reason, **why))
        return tip

    async def _call(self, role: str, content: str, item_id: str, round_: int) -> Completion:
        """One request with the run's retry policy; item-level failures become `_ItemFailed`."""
        messages = [{"role": "user", "content": content}]
        model = getattr(self.models, role)

        async def attempt() -> Completion:
            async with self.slots:
                if self._fatal:  # the run is stopping: send nothing more
                    raise self._fatal
                if budget := self._budget:
                    estimate = budget.estimate(content)
                    await budget.take(estimate)
                sent_at = time.monotonic()
                self.stats.requests[role] += 1
                try:
                    completion = await self.backend.complete(
                        messages, model=model, params=self.settings.params
                    )
                except RateLimited:
                    self.slots.rate_limited(sent_at)
                    raise
                self.slots.succeeded()
                if budget:
                    budget.settle(estimate, completion.prompt_tokens, completion.completion_tokens)
                return completion

        if (replayed := self.store.recall_call(item_id, role)) is not None:
            return Completion.model_validate(replayed)
        try:
            completion = await with_retries(
                attempt,
                max_retries=self.settings.max_retries,
                max_wait=self.settings.retry_max_wait,
                on_retry=lambda _error: self.stats.retries.update([role]),
            )
        except Unreachable as error:  # it answered before, and no retry reached it since
            tries = self.settings.max_retries + 1
            raise self._stop(EndpointUnreachable(f"{error} ({tries} tries)")) from None
        except TransientBackendError as error:
            raise _ItemFailed from self._fail(item_id, round_, role, error)
        except _FATAL as error:
            raise self._stop(error) from None
        except ContextLengthExceeded as error:
            raise _Refused(Reason.TOO_LONG, f"{role}: {error}") from None
        except BackendError as error:
            raise _Refused(Reason.REJECTED, f"{role}: {error}") from None
        self.store.remember_call(item_id, role, dict(completion))  # its fields, no dump
        return completion

    def _stop(self, error: EvolError) -> EvolError:
        """Stop sending: every request after this one raises the first fatal error."""
        self._fatal = self._fatal or error
        return self._fatal

    def _fail(self, item_id: str, round_: int, role: str, error: Exception) -> Exception:
        self.stats.failed.append(FailedItem(item_id, round_, role, str(error)))
        return error


def _usage(completion: Completion) -> TokenUsage:
    return TokenUsage(
        prompt_tokens=completion.prompt_tokens, completion_tokens=completion.completion_tokens
    )


async def _all(*coroutines: Coroutine[Any, Any, Any]) -> list[Any]:
    """Await all at once; the first failure cancels the others and is raised as itself."""
    if len(coroutines) == 1:
        return [await coroutines[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except BaseExceptionGroup as errors:
        raise _most_telling(errors) from None
    return [task.result() for task in tasks]


def _most_telling(errors: BaseExceptionGroup) -> BaseException:
    """The error to surface from a group: a user-facing one first, else the first one."""
    flat: list[BaseException] = []
    stack: list[BaseException] = [errors]
    while stack:
        error = stack.pop(0)
        if isinstance(error, BaseExceptionGroup):
            stack[:0] = list(error.exceptions)
        else:
            flat.append(error)
    return next((error for error in flat if isinstance(error, EvolError)), flat[0])
