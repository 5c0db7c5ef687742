"""Scheduling the LLM calls of a run.

Each seed's lineage is one task that runs its rounds in order: evolve the tip, clean the reply
and check it for free, then ask the judge, then (only for a rewrite the judge let through)
the answer, then apply the answer's rules (`parallel_judge`: answer and judge at once). A
record that carries verifiable constraints (#26) is also checked for free to still state them
(`evol.method.wording`), and its answer by code (`evol.method.constraints.check`): on a failure, up to
--answer-attempts more answers are drawn, each its own journalled call (with --answer-n, all
in one request with `n`, where the backend sends it). Lineages
run side by side with no barrier between rounds; one adaptive limit bounds the requests in
flight (halved on 429, see `evol.limits`), the --rpm/--tpm budget paces them, and one retry
policy wraps every request. Results go to the store as soon as they exist.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from evol.config import RunConfig
from evol.errors import ContextLengthExceeded, most_telling
from evol.llm import ChatBackend, Completion, GenerationParams, LLMRequest, Message
from evol.llm.dispatch import (
    CallFailed,
    CallPolicy,
    CallRefused,
    CallStats,
    CallWaiting,
    Dispatcher,
)
from evol.llm.protocol import capabilities_of
from evol.method.cleaning import Cleaned, clean_reply, clean_rewrite
from evol.method.constraints import Constraint, check, from_record
from evol.method.drawing import describe, pick
from evol.method.elimination import EliminationRules, Failure, Reason, check_answer, check_rewrite
from evol.method.judging import (
    ANSWER_CHECK,
    ANSWER_CHECK_FORMAT,
    VERDICT_CONSTRAINT_FORMAT,
    VERDICT_FORMAT,
    AnswerCheck,
    Judgement,
    read_answer_check,
    read_judgement,
)
from evol.method.operations import BREADTH, VERIFIABLE, choice_rng, choose_operation
from evol.method.prompts import PromptSet
from evol.method.verdicts import Verdict
from evol.method.wording import judged, unstated
from evol.rundir.journal import CallJournal
from evol.rundir.lineage import LineageIndex, LineageProgress, Tip
from evol.rundir.records import EliminatedRecord, Record, TokenUsage, compose
from evol.rundir.store import RunStore
from evol.seeds import Seed

if TYPE_CHECKING:  # numpy, which the duplicate rule needs, loads only when the rule is on
    from evol.method.dedup import DuplicateIndex

# Replies longer than this are cleaned and checked off the event loop (see `_read`).
LARGE_REPLY_CHARS = 64 * 1024
_Parsed = TypeVar("_Parsed")


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


class _ItemFailed(Exception):
    """Ends one lineage for this run; already counted in `EngineStats` (failed or deferred)."""


class _Eliminated(Exception):
    """A step failed a rule or was refused for good: the record goes to eliminated.jsonl."""

    def __init__(self, failure: Failure, duplicate_of: str | None = None):
        super().__init__(failure.detail)
        self.failure, self.duplicate_of = failure, duplicate_of


def _user(content: str) -> list[Message]:
    return [{"role": "user", "content": content}]


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
        policy = CallPolicy(
            in_flight=config.in_flight,
            max_retries=config.max_retries,
            retry_max_wait=config.retry_max_wait,
            rpm=config.rpm,
            tpm=config.tpm,
        )
        self.calls = Dispatcher(backend, policy, journal=journal, stats=self.stats)
        self.slots = self.calls.slots
        judge = config.params.judge
        # Each role's model and options; the judge model's two calls ask for a schema each.
        self._roles: dict[str, tuple[str, GenerationParams]] = {
            "evolve": (models.evolve, config.params.evolve),
            "answer": (models.answer, config.params.answer),
            "judge": (models.judge, _with_format(judge, VERDICT_FORMAT)),
            ANSWER_CHECK: (models.judge, _with_format(judge, ANSWER_CHECK_FORMAT)),
        }
        # The judge of a rewrite with unworded constraints: its schema asks about them too.
        self._constraint_judge = _with_format(judge, VERDICT_CONSTRAINT_FORMAT)
        # --answer-n: the further answers in one request, where the backend sends `n` (else,
        # and for one further answer, a call each).
        further = config.answer_attempts
        self._answer_n = (
            GenerationParams(**config.params.answer.model_dump(), n=further)
            if config.answer_n and further > 1 and capabilities_of(backend).several_choices
            else None
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
        await _all(*steps)

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
                await self._answer(record)
                if self.config.checks_answers:  # the model's answer; never a given output
                    await self._check_answer(record)
            except _ItemFailed:
                return
            except _Eliminated as failed:
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
            except _ItemFailed:
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
        except _Eliminated as failed:
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
            raise _Eliminated(
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
        evolved = await self._call("evolve", _user(prompt), draft)
        cleaned, failure = await _read(
            evolved.text, lambda text: self._read_rewrite(text, draft, tip)
        )
        draft.instruction = cleaned.text
        _note(draft, cleaned, "rewrite")
        _raise_if_truncated(evolved, "rewrite")
        if failure:
            raise _Eliminated(failure)
        if self.pool is not None and (original := self.pool.find(draft.instruction, draft.root_id)):
            repeat = Failure(Reason.DUPLICATE, f"the rewrite repeats {original}")
            raise _Eliminated(repeat, duplicate_of=original)

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
            await self._answer(draft)
        elif not self.config.parallel_judge:
            self._judged(draft, *await self._verdict(draft, tip))
            await self._answer(draft)
        else:
            answer_failure, (judgement, replies) = await _all(
                self._answer(draft, check=False), self._verdict(draft, tip)
            )
            self._judged(draft, judgement, replies)
            if answer_failure:
                raise _Eliminated(answer_failure)
        if draft.constraints:
            await self._meet_constraints(draft)
        if self.config.checks_answers:
            await self._check_answer(draft)

    async def _answer(
        self, record: Record, *, check: bool = True, key: str | None = None
    ) -> Failure | None:
        """Answer `record`'s instruction into it; the answer rules' failure, raised or returned.
        `key` names a further answer to the same instruction in the journal ("answer_2")."""
        answered = await self._call("answer", self._answer_messages(record), record, journal_as=key)
        failure = await self._take_answer(
            record, answered.text, answered.finish_reason, answered.completion_tokens
        )
        if failure and check:
            raise _Eliminated(failure)
        return failure

    def _answer_messages(self, record: Record) -> list[Message]:
        messages = _user(compose(record.instruction, record.input))
        if self.config.system_prompt:
            messages = [{"role": "system", "content": self.config.system_prompt}, *messages]
        return messages

    async def _take_answer(
        self, record: Record, text: str, finish_reason: str | None, tokens: int
    ) -> Failure | None:
        """`text` cleaned into `record` as its answer; the first answer rule it fails."""
        rules = self.config.rules
        cleaned, answer_failure = await _read(
            text, lambda reply: _read_answer(reply, record.instruction, rules)
        )
        record.output = cleaned.text
        _note(record, cleaned, "answer")
        return _truncation(finish_reason, tokens, "answer") or answer_failure

    async def _meet_constraints(self, draft: Record) -> None:
        """Check the answer against `draft`'s constraints by code; while it fails one, take
        another (at most --answer-attempts more, see `_further_answers`) and keep the first
        that meets them all. A further answer that fails an answer rule (a refusal, cut at
        the token limit, empty) is one more failed attempt, not the end of the sampling. The
        attempts, the first failed answer and the failures per id go into the record, kept
        or eliminated."""
        constraints = from_record(draft.constraints)
        attempts, unmet, rejected = 1, Counter[str](), None
        broken: list[str] = []  # "answer 2: sorry", each further answer an answer rule failed
        rule_failure: Failure | None = None
        further = self._further_answers(draft)
        try:
            while True:
                failed = await asyncio.to_thread(_failed_ids, draft.output or "", constraints)
                if not failed and rule_failure is None:
                    return
                unmet.update(failed)
                if failed and rejected is None:
                    rejected = draft.output
                if rule_failure is not None:
                    broken.append(f"answer {attempts}: {rule_failure.reason.value}")
                if attempts > self.config.answer_attempts:
                    raise _Eliminated(_unmet(attempts, unmet, broken))
                attempts += 1
                rule_failure = await anext(further)
        finally:
            await further.aclose()
            draft.attempts = attempts
            if rejected is not None:
                draft.rejected_output, draft.unmet = rejected, dict(sorted(unmet.items()))

    async def _further_answers(self, draft: Record) -> AsyncIterator[Failure | None]:
        """The further answers to `draft`, each taken into it when asked for (the answer rule
        it fails, yielded). Each is a call of its own in the journal (answer_2, answer_3...);
        with --answer-n, the first asked for sends one request for them all (`n`, journalled
        as answer_n), whose choices come in the server's order, and a call each follows for
        those a server did not return (one that ignores `n`)."""
        number = 2
        if self._answer_n is not None:
            messages = self._answer_messages(draft)
            answered = await self._call(
                "answer", messages, draft, journal_as="answer_n", params=self._answer_n
            )
            for text, finish_reason in answered.every_choice()[: self._answer_n.n]:
                yield await self._take_answer(
                    draft, text, finish_reason, answered.completion_tokens
                )
                number += 1
        while True:
            yield await self._answer(draft, check=False, key=f"answer_{number}")
            number += 1

    async def _verdict(self, draft: Record, tip: Tip) -> tuple[Judgement, list[str]]:
        """Ask the judge whether the rewrite equals its parent and is an instruction at all
        (and, when it carries constraints no rule reads, whether it still states them); once
        more if it gave no verdict."""
        first_text, second_text = (
            compose(tip.instruction, tip.input),
            compose(draft.instruction, draft.input),
        )
        asked = judged(from_record(draft.constraints or []))
        params = self._constraint_judge if asked else None
        if asked:
            requirements = [describe(c) for c in asked]
            prompt = self.prompts.judge_constraint_prompt(first_text, second_text, requirements)
        else:
            prompt = self.prompts.judge_prompt(first_text, second_text)
        messages = _user(prompt)
        first = await self._call("judge", messages, draft, params=params)
        reply, judgement = await _read(first.text, _judgement_reader(first, bool(asked)))
        replies = [reply]
        if judgement.verdict == Verdict.UNCLEAR or self._unconfirmed(draft, judgement, reply):
            follow_up: list[Message] = [
                *messages,
                {"role": "assistant", "content": first.text},
                {"role": "user", "content": self.prompts.judge_again()},
            ]
            again = await self._call(
                "judge", follow_up, draft, journal_as="judge_again", params=params
            )
            reply, judgement = await _read(again.text, _judgement_reader(again, bool(asked)))
            replies.append(reply)
        self.stats.judged["judge", judgement.form] += 1
        return judgement, replies

    def _judged(self, draft: Record, judgement: Judgement, replies: list[str]) -> None:
        """Record the judge's verdict; a rewrite it found equal, could not judge, or (with the
        instruction check on) found no instruction, fails."""
        draft.judge = judgement.verdict
        if judgement.verdict == Verdict.UNCLEAR:
            shown = " / ".join(repr(reply[:80]) for reply in replies)
            raise _Eliminated(Failure(Reason.JUDGE_UNCLEAR, f"no verdict in {shown}"))
        instruction_check = self.config.rules.instruction_check is not False
        if failure := judgement.failure(replies[-1], instruction_check=instruction_check):
            raise _Eliminated(failure)
        if self._unconfirmed(draft, judgement, replies[-1]):
            ids = ", ".join(c.id for c in judged(from_record(draft.constraints or [])))
            said = " / ".join(repr(reply[:80]) for reply in replies)
            raise _Eliminated(
                Failure(
                    Reason.CONSTRAINT_LOST,
                    f"the judge did not confirm that it still states {ids} "
                    f"(no states_requirements yes or no in {said})",
                )
            )

    def _unconfirmed(self, draft: Record, judgement: Judgement, reply: str) -> bool:
        """Whether the judge, asked whether the rewrite still states its unworded
        constraints, said neither yes nor no (a key missing, another value, prose), where
        nothing else it said eliminates the rewrite. Unconfirmed is not stated: it is asked
        again, then eliminated."""
        if judgement.states is not None or not judged(from_record(draft.constraints or [])):
            return False
        instruction_check = self.config.rules.instruction_check is not False
        return judgement.failure(reply, instruction_check=instruction_check) is None

    async def _check_answer(self, draft: Record) -> None:
        """Ask the judge model whether the answer does the task (by meaning: the phrase rules
        have passed it); an answer that asks for information, says the task is unclear, or
        only acknowledges it fails."""
        prompt = self.prompts.answer_check_prompt(
            compose(draft.instruction, draft.input), draft.output or ""
        )
        checked = await self._call(ANSWER_CHECK, _user(prompt), draft)
        cut = checked.finish_reason == "length"
        check: AnswerCheck = await _read(
            checked.text, lambda text: read_answer_check(clean_reply(text).text, cut=cut)
        )
        self.stats.judged[ANSWER_CHECK, check.form] += 1
        if failure := check.failure():
            raise _Eliminated(failure)

    def _record_elimination(self, record: Record, failed: _Eliminated) -> None:
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

        A call that still fails ends the lineage for this run (`_ItemFailed`), a refusal
        eliminates the step; fatal errors stop the run.
        """
        model, role_params = self._roles[role]
        params = params or role_params
        request = LLMRequest(messages, model, params, role, record.id, journal_as)
        try:
            completion = await self.calls.complete(request)
        except CallWaiting:
            raise _ItemFailed from None
        except CallFailed as failed:
            raise _ItemFailed from self._fail(record.id, record.round, role, failed.error)
        except CallRefused as refused:
            reason = (
                Reason.TOO_LONG
                if isinstance(refused.error, ContextLengthExceeded)
                else Reason.REJECTED
            )
            raise _Eliminated(Failure(reason, f"{role}: {refused.error}")) from None
        used = record.usage.setdefault(role, TokenUsage())
        used.prompt_tokens += completion.prompt_tokens
        used.completion_tokens += completion.completion_tokens
        return completion

    def _fail(self, item_id: str, round_: int, role: str, error: Exception) -> Exception:
        self.stats.failed.append(FailedItem(item_id, round_, role, str(error)))
        return error


async def _read(reply: str, read: Callable[[str], _Parsed]) -> _Parsed:
    """`read(reply)`, in a worker thread when the reply is large.

    The cleaning and the rules take time linear in it; on the loop, megabytes would hold up the
    replies to every request in flight (past `--timeout`, sent and paid for again). In a thread
    the loop runs between its steps; one regex call over the whole text still holds the GIL,
    so the longest stall is about halved, not gone (0.5 s to 0.2 s on a 4 MB verdict)."""
    if len(reply) <= LARGE_REPLY_CHARS:
        return read(reply)
    return await asyncio.to_thread(read, reply)


def _read_answer(
    reply: str, instruction: str, rules: EliminationRules
) -> tuple[Cleaned, Failure | None]:
    """The answer in `reply` cleaned, and the first answer rule it fails."""
    cleaned = clean_reply(reply)
    return cleaned, check_answer(instruction, cleaned.text, rules)


def _unstated(instruction: str, constraints: list[Constraint]) -> Failure | None:
    """The first constraint `instruction` no longer states (lost or garbled), as a failure."""
    for constraint in constraints:
        if why := unstated(instruction, constraint):
            return Failure(Reason.CONSTRAINT_LOST, f"{constraint.id}: {why}")
    return None


def _unmet(attempts: int, unmet: Counter[str], broken: list[str]) -> Failure:
    """constraint_unmet after `attempts` answers: the ids that failed, how often, and the
    further answers an answer rule failed."""
    tally = ", ".join(f"{cid} {unmet[cid]} of {attempts}" for cid in sorted(unmet))
    rules = f"; failed an answer rule: {', '.join(broken)}" if broken else ""
    return Failure(
        Reason.CONSTRAINT_UNMET,
        f"no answer of {attempts} met {', '.join(sorted(unmet)) or 'the answer rules'} "
        f"(failed: {tally or 'none by code'}{rules})",
    )


def _failed_ids(answer: str, constraints: list[Constraint]) -> list[str]:
    """The ids of the constraints `answer` fails, as IFEval's strict check says."""
    return [v.constraint.id for v in check(answer, constraints) if not v.strict]


def _with_format(params: GenerationParams, response_format: dict[str, Any]) -> GenerationParams:
    # Built anew, not model_copy'd: a copy would keep the original's cached `request`.
    return GenerationParams(**params.model_dump(), response_format=response_format)


def _judgement_reader(
    completion: Completion, states_asked: bool = False
) -> Callable[[str], tuple[str, Judgement]]:
    """Reads the judge's reply: cleaned, and what it says (nothing, if cut inside its JSON)."""
    cut = completion.finish_reason == "length"

    def read(reply: str) -> tuple[str, Judgement]:
        text = clean_reply(reply).text
        return text, read_judgement(text, cut=cut, states_asked=states_asked)

    return read


def _note(record: Record, cleaned: Cleaned, what: str) -> None:
    """Say in the record's detail what cleaning took off its `what` (rewrite or answer)."""
    if cleaned.stripped:
        note = f"from the {what}: {cleaned.detail}"
        record.detail = f"{record.detail}; {note}" if record.detail else note


def _truncation(finish_reason: str | None, tokens: int, what: str) -> Failure | None:
    """A reply that stopped at the token limit is not whole (`tokens`: its call's)."""
    if finish_reason != "length":
        return None
    return Failure(
        Reason.TRUNCATED,
        f"the {what} stopped at the token limit after {tokens} tokens "
        "(finish_reason 'length'): raise its --*-max-tokens",
    )


def _raise_if_truncated(completion: Completion, what: str) -> None:
    if failure := _truncation(completion.finish_reason, completion.completion_tokens, what):
        raise _Eliminated(failure)


async def _all(*coroutines: Coroutine[Any, Any, Any]) -> list[Any]:
    """Await all at once; the first failure cancels the others and is raised as itself."""
    if len(coroutines) == 1:
        return [await coroutines[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except BaseExceptionGroup as errors:
        raise most_telling(errors) from None
    return [task.result() for task in tasks]
