"""The answer model's calls in a round: the answer and its rules, and, for a record with
verifiable constraints (#26), the further answers drawn until one meets them.

Each further answer is its own journalled call (answer_2, answer_3...); with --answer-n, all in
one request with `n` (answer_n), where the backend sends it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

from evol.config import RunConfig
from evol.llm import GenerationParams, Message
from evol.method.cleaning import Cleaned, clean_reply
from evol.method.constraints import Constraint, check, from_record
from evol.method.elimination import EliminationRules, Failure, Reason, check_answer
from evol.rundir.records import Record, compose
from evol.steps import Eliminated, StepCall, note_cleaning, read_reply, truncation, user_message


class AnswerCalls:
    """The answer model's calls, through the engine's `call`. `answer_n`: the parameters of
    the one request for the further answers (with `n`), or None for a call each."""

    def __init__(self, *, call: StepCall, config: RunConfig, answer_n: GenerationParams | None):
        self._call, self.config, self._answer_n = call, config, answer_n

    async def answer(
        self, record: Record, *, check: bool = True, key: str | None = None
    ) -> Failure | None:
        """Answer `record`'s instruction into it; the answer rules' failure, raised or returned.
        `key` names a further answer to the same instruction in the journal ("answer_2")."""
        answered = await self._call("answer", self._messages(record), record, journal_as=key)
        failure = await self._take_answer(
            record, answered.text, answered.finish_reason, answered.completion_tokens
        )
        if failure and check:
            raise Eliminated(failure)
        return failure

    def _messages(self, record: Record) -> list[Message]:
        messages = user_message(compose(record.instruction, record.input))
        if self.config.system_prompt:
            messages = [{"role": "system", "content": self.config.system_prompt}, *messages]
        return messages

    async def _take_answer(
        self, record: Record, text: str, finish_reason: str | None, tokens: int
    ) -> Failure | None:
        """`text` cleaned into `record` as its answer; the first answer rule it fails."""
        rules = self.config.rules
        cleaned, answer_failure = await read_reply(
            text, lambda reply: _read_answer(reply, record.instruction, rules)
        )
        record.output = cleaned.text
        note_cleaning(record, cleaned, "answer")
        return truncation(finish_reason, tokens, "answer") or answer_failure

    async def meet_constraints(self, draft: Record) -> None:
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
                    raise Eliminated(_unmet(attempts, unmet, broken))
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
            messages = self._messages(draft)
            answered = await self._call(
                "answer", messages, draft, journal_as="answer_n", params=self._answer_n
            )
            for text, finish_reason in answered.every_choice()[: self._answer_n.n]:
                yield await self._take_answer(
                    draft, text, finish_reason, answered.completion_tokens
                )
                number += 1
        while True:
            yield await self.answer(draft, check=False, key=f"answer_{number}")
            number += 1


def _read_answer(
    reply: str, instruction: str, rules: EliminationRules
) -> tuple[Cleaned, Failure | None]:
    """The answer in `reply` cleaned, and the first answer rule it fails."""
    cleaned = clean_reply(reply)
    return cleaned, check_answer(instruction, cleaned.text, rules)


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
