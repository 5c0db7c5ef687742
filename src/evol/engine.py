"""Scheduling the LLM calls of a run.

Each seed's lineage is one task that runs its rounds in order: evolve the tip, clean the reply
and check it for free, then ask the judge, then (only for a rewrite the judge let through)
the answer, then apply the answer's rules (`parallel_judge`: answer and judge at once). A
record that carries verifiable constraints (#26) is also checked for free to still state them
(`evol.method.wording`), and its answer by code (`evol.method.constraints.check`): on a failure, up to
--answer-attempts more answers are drawn, each its own journalled call (with --answer-n, all
in one request with `n`, where the backend sends it). Lineages
run side by side with no barrier between rounds; one adaptive limit bounds the requests in
flight (halved on 429, see `evol.llm.limits`), the --rpm/--tpm budget paces them, and one retry
policy wraps every request. Results go to the store as soon as they exist.

The answer model's calls are in `evol.answer_calls`, the judge model's in `evol.judge_calls`,
and what every step shares (how it ends, its reply read) in `evol.steps`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evol.answer_calls import AnswerCalls
from evol.config import RunConfig
from evol.errors import ContextLengthExceeded, most_telling
from evol.judge_calls import JudgeCalls, with_format
from evol.llm import ChatBackend, Completion, GenerationParams, LLMRequest, Message
from evol.llm.dispatch import (
    CallFailed,
    CallRefused,
    CallStats,
    CallWaiting,
    Dispatcher,
)
from evol.llm.protocol import capabilities_of
from evol.method.cleaning import Cleaned, clean_rewrite
from evol.method.constraints import Constraint, from_record
from evol.method.drawing import describe, pick
from evol.method.elimination import Failure, Reason, check_rewrite
from evol.method.judging import ANSWER_CHECK, ANSWER_CHECK_FORMAT, VERDICT_FORMAT
from evol.method.operations import BREADTH, VERIFIABLE, choice_rng, choose_operation
from evol.method.prompts import PromptSet
from evol.method.wording import unstated
from evol.rundir.journal import CallJournal
from evol.rundir.lineage import LineageIndex, LineageProgress, Tip
from evol.rundir.records import EliminatedRecord, Record, TokenUsage
from evol.rundir.store import RunStore
from evol.seeds import Seed
from evol.steps import (
    Eliminated,
    ItemFailed,
    all_at_once,
    note_cleaning,
    raise_if_truncated,
    read_reply,
    user_message,
)

if TYPE_CHECKING:  # numpy, which the duplicate rule needs, loads only when the rule is on
    from evol.method.dedup import DuplicateIndex


@dataclass(frozen=True)
class RoleModels:
    """The model each role calls."""

    evolve: str
    answer: str
    judge: str


@dataclass
class FailedItem:
    """A step whose call failed after all retries; the next resume does it again."""

    id: str
    round: int
    role: str
    error: str


@dataclass
class EngineStats(CallStats):
    """What this process did: requests per role, retries, failures."""

    failed: list[FailedItem] = field(default_factory=list)
    # How the judge model's replies were read: (role, form), e.g. ("judge", "schema").
    judged: Counter[tuple[str, str]] = field(default_factory=Counter)


class Engine:
    """Runs every lineage of a run to its last round against one backend."""

    def __init__(
        self,
        *,
        backend: ChatBackend,
        prompts: PromptSet,
        store: RunStore,
        journal: CallJournal,
        lineages: LineageIndex,
        models: RoleModels,
        config: RunConfig,
        pool: DuplicateIndex | None = None,
        on_step: Callable[[], None] | None = None,
    ):
        self.backend, self.prompts, self.store = backend, prompts, store
        self.journal, self.lineages = journal, lineages
        self.models, self.config = models, config
        self.leaks = prompts.leak_detector(config.operations)
        self.pool = pool  # the kept instructions, when the duplicate rule is on
        self.on_step = on_step or (lambda: None)
        self.stats = EngineStats()
        policy = config.call_policy()
        self.calls = Dispatcher(backend, policy, journal=journal, stats=self.stats)
        self.slots = self.calls.slots
        judge = config.params.judge
        # Each role's model and options; the judge model's two calls ask for a schema each.
        self._roles: dict[str, tuple[str, GenerationParams]] = {
            "evolve": (models.evolve, config.params.evolve),
            "answer": (models.answer, config.params.answer),
            "judge": (models.judge, with_format(judge, VERDICT_FORMAT)),
            ANSWER_CHECK: (models.judge, with_format(judge, ANSWER_CHECK_FORMAT)),
        }
        # --answer-n: the further answers in one request, where the backend sends `n` (else,
        # and for one further answer, a call each).
        further = config.answer_attempts
        answer_n = (
            GenerationParams(**config.params.answer.model_dump(), n=further)
            if config.answer_n and further > 1 and capabilities_of(backend).several_choices
            else None
        )
        self.answers = AnswerCalls(call=self._call, config=config, answer_n=answer_n)
        self.judge = JudgeCalls(
            call=self._call, prompts=prompts, config=config, judged=self.stats.judged
        )

    async def run(self, seeds: Iterable[Seed]) -> EngineStats:
        """Evolve every seed; returns when all lineages are done or have failed."""
        pending = iter(seeds)

        async def worker() -> None:
            # Workers share one iterator; next() never awaits, so they never race on it.
            for seed in pending:
                await self._lineage(seed)

        workers = self.config.in_flight
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
        except BaseExceptionGroup as errors:
            raise most_telling(errors) from None
        return self.stats

    async def _lineage(self, seed: Seed) -> None:
        progress = self.lineages.progress(seed.id)
        steps: list[Coroutine[Any, Any, None]] = []
        if not progress.seed_done:
            steps.append(self._settle_seed(seed))
        if progress.rounds_done < self.config.generations:
            steps.append(self._evolve_rounds(seed, progress))
        await all_at_once(*steps)

    async def _settle_seed(self, seed: Seed) -> None:
        """Answer the seed (unless it has an output): a failed answer is not kept, but the seed
        still evolves, since its instruction is the user's."""
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
        if record.output is None and self.config.answer_seeds:
            try:
                await self.answers.answer(record)
                if self.config.checks_answers:  # the model's answer; never a given output
                    await self.judge.check_answer(record)
            except ItemFailed:
                return
            except Eliminated as failed:
                self._record_elimination(record, failed)
                self.on_step()
                return
        self.store.add(record)
        self.on_step()

    async def _evolve_rounds(self, seed: Seed, progress: LineageProgress) -> None:
        tip = progress.tip or Tip(seed.id, seed.instruction, seed.input, 0)
        for round_ in range(progress.rounds_done + 1, self.config.generations + 1):
            try:
                tip = await self._evolve_once(seed, tip, round_)
            except ItemFailed:
                return
            self.on_step()

    async def _evolve_once(self, seed: Seed, tip: Tip, round_: int) -> Tip:
        """One round for one lineage; returns the lineage's tip afterwards."""
        operation = choose_operation(self.config.operations, self.config.seed, tip.id, round_)
        # An in-depth rewrite keeps its parent's input and constraints; a breadth one is a new
        # instruction.
        breadth = operation == BREADTH
        draft = Record(
            id=f"{tip.id}.{round_}",
            parent_id=tip.id,
            root_id=seed.id,
            generation=tip.generation + 1,
            round=round_,
            operation=operation,
            instruction="",
            input="" if breadth else tip.input,
            output=None,
            constraints=None if breadth else tip.constraints,
        )
        try:
            if operation == VERIFIABLE:
                self._add_constraint(draft)
            await self._evolve(draft, tip)
            await self._answer_and_judge(draft, tip)
        except Eliminated as failed:
            self._record_elimination(draft, failed)
            return tip
        self.store.add(draft)
        if self.pool is not None:
            self.pool.add(draft.id, seed.id, draft.instruction)
        return Tip(draft.id, draft.instruction, draft.input, draft.generation, draft.constraints)

    def _add_constraint(self, draft: Record) -> None:
        """Draw the constraint `draft` adds, from (--seed, its id, its generation), among those
        that contradict none its lineage carries; none left eliminates it, for free."""
        carried = from_record(draft.constraints or [])
        rng = choice_rng(self.config.seed, draft.id, draft.generation, "constraint")
        added = pick(rng, carried, self.config.constraint_ids)
        if added is None:
            pool = ", ".join(self.config.constraint_ids or ["every id"])
            held = ", ".join(c.id for c in carried)
            raise Eliminated(
                Failure(
                    Reason.NO_CONSTRAINT_LEFT,
                    f"each constraint of {pool} contradicts one the lineage carries ({held})",
                )
            )
        draft.constraints = [*(draft.constraints or []), added.model_dump(mode="json")]

    async def _evolve(self, draft: Record, tip: Tip) -> None:
        """Ask for the rewrite, clean it, and run the checks that cost nothing."""
        added = (
            describe(from_record(draft.constraints)[-1]) if draft.operation == VERIFIABLE else ""
        )
        prompt = self.prompts.evolve_prompt(
            draft.operation or "", tip.instruction, draft.input, added
        )
        evolved = await self._call("evolve", user_message(prompt), draft)
        cleaned, failure = await read_reply(
            evolved.text, lambda text: self._read_rewrite(text, draft, tip)
        )
        draft.instruction = cleaned.text
        note_cleaning(draft, cleaned, "rewrite")
        raise_if_truncated(evolved, "rewrite")
        if failure:
            raise Eliminated(failure)
        if self.pool is not None and (original := self.pool.find(draft.instruction, draft.root_id)):
            repeat = Failure(Reason.DUPLICATE, f"the rewrite repeats {original}")
            raise Eliminated(repeat, duplicate_of=original)

    def _read_rewrite(self, reply: str, draft: Record, tip: Tip) -> tuple[Cleaned, Failure | None]:
        """The rewrite in `reply` cleaned, and the first free check it fails."""
        cleaned = clean_rewrite(reply, draft.input)
        rules, operation = self.config.rules, draft.operation
        failure = check_rewrite(tip.instruction, cleaned.text, rules, self.leaks, operation)
        if failure is None and draft.constraints:
            failure = _unstated(cleaned.text, from_record(draft.constraints))
        return cleaned, failure

    async def _answer_and_judge(self, draft: Record, tip: Tip) -> None:
        """The verdict, then the answer (no answer is paid for a rewrite the judge rejects);
        with `parallel_judge`, both asked for at the same time. Then their rules, then the
        answer check (when on) of an answer they let through."""
        if not self.config.rules.judge:
            await self.answers.answer(draft)
        elif not self.config.parallel_judge:
            self.judge.take_verdict(draft, *await self.judge.verdict(draft, tip))
            await self.answers.answer(draft)
        else:
            answer_failure, (judgement, replies) = await all_at_once(
                self.answers.answer(draft, check=False), self.judge.verdict(draft, tip)
            )
            self.judge.take_verdict(draft, judgement, replies)
            if answer_failure:
                raise Eliminated(answer_failure)
        if draft.constraints:
            await self.answers.meet_constraints(draft)
        if self.config.checks_answers:
            await self.judge.check_answer(draft)

    def _record_elimination(self, record: Record, failed: Eliminated) -> None:
        detail = "; ".join(part for part in (failed.failure.detail, record.detail) if part)
        self.store.add_eliminated(
            EliminatedRecord(
                **(record.model_dump() | {"detail": detail}),
                reason=failed.failure.reason,
                duplicate_of=failed.duplicate_of,
            )
        )

    async def _call(
        self,
        role: str,
        messages: list[Message],
        record: Record,
        *,
        journal_as: str | None = None,
        params: GenerationParams | None = None,
    ) -> Completion:
        """One request through the dispatcher, its tokens added to `record`'s usage; `params`
        replace the role's own (the judge's schema for constraints).

        A call that still fails ends the lineage for this run (`ItemFailed`), a refusal
        eliminates the step; fatal errors stop the run.
        """
        model, role_params = self._roles[role]
        params = params or role_params
        request = LLMRequest(messages, model, params, role, record.id, journal_as)
        try:
            completion = await self.calls.complete(request)
        except CallWaiting:
            raise ItemFailed from None
        except CallFailed as failed:
            raise ItemFailed from self._fail(record.id, record.round, role, failed.error)
        except CallRefused as refused:
            reason = (
                Reason.TOO_LONG
                if isinstance(refused.error, ContextLengthExceeded)
                else Reason.REJECTED
            )
            raise Eliminated(Failure(reason, f"{role}: {refused.error}")) from None
        used = record.usage.setdefault(role, TokenUsage())
        used.prompt_tokens += completion.prompt_tokens
        used.completion_tokens += completion.completion_tokens
        return completion

    def _fail(self, item_id: str, round_: int, role: str, error: Exception) -> Exception:
        self.stats.failed.append(FailedItem(item_id, round_, role, str(error)))
        return error


def _unstated(instruction: str, constraints: list[Constraint]) -> Failure | None:
    """The first constraint `instruction` no longer states (lost or garbled), as a failure."""
    for constraint in constraints:
        if why := unstated(instruction, constraint):
            return Failure(Reason.CONSTRAINT_LOST, f"{constraint.id}: {why}")
    return None
