"""The judge model's calls in a round: the verdict on a rewrite, and the answer check.

The verdict says whether the rewrite equals its parent and is an instruction at all (and,
for constraints no rule reads, whether it still states them); it is asked once more when it
says nothing. The answer check asks whether the answer does the task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from evol.config import RunConfig
from evol.llm import Completion, GenerationParams, Message
from evol.method.cleaning import clean_reply
from evol.method.constraints import from_record
from evol.method.drawing import describe
from evol.method.elimination import Failure, Reason
from evol.method.judging import (
    ANSWER_CHECK,
    VERDICT_CONSTRAINT_FORMAT,
    AnswerCheck,
    Judgement,
    read_answer_check,
    read_judgement,
)
from evol.method.prompts import PromptSet
from evol.method.verdicts import Verdict
from evol.method.wording import judged
from evol.rundir.lineage import Tip
from evol.rundir.records import Record, compose
from evol.steps import Eliminated, StepCall, read_reply, user_message


class JudgeCalls:
    """The judge model's two calls, through the engine's `call`; how its replies were read is
    counted in `judged` by (role, form)."""

    def __init__(
        self,
        *,
        call: StepCall,
        prompts: PromptSet,
        config: RunConfig,
        judged: Counter[tuple[str, str]],
    ):
        self._call, self.prompts, self.config, self.judged = call, prompts, config, judged
        # The judge of a rewrite with unworded constraints: its schema asks about them too.
        self._constraint_judge = with_format(config.params.judge, VERDICT_CONSTRAINT_FORMAT)

    async def verdict(self, draft: Record, tip: Tip) -> tuple[Judgement, list[str]]:
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
        messages = user_message(prompt)
        first = await self._call("judge", messages, draft, params=params)
        reply, judgement = await read_reply(first.text, _judgement_reader(first, bool(asked)))
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
            reply, judgement = await read_reply(again.text, _judgement_reader(again, bool(asked)))
            replies.append(reply)
        self.judged["judge", judgement.form] += 1
        return judgement, replies

    def take_verdict(self, draft: Record, judgement: Judgement, replies: list[str]) -> None:
        """Record the judge's verdict; a rewrite it found equal, could not judge, or (with the
        instruction check on) found no instruction, fails."""
        draft.judge = judgement.verdict
        if judgement.verdict == Verdict.UNCLEAR:
            shown = " / ".join(repr(reply[:80]) for reply in replies)
            raise Eliminated(Failure(Reason.JUDGE_UNCLEAR, f"no verdict in {shown}"))
        instruction_check = self.config.rules.instruction_check is not False
        if failure := judgement.failure(replies[-1], instruction_check=instruction_check):
            raise Eliminated(failure)
        if self._unconfirmed(draft, judgement, replies[-1]):
            ids = ", ".join(c.id for c in judged(from_record(draft.constraints or [])))
            said = " / ".join(repr(reply[:80]) for reply in replies)
            raise Eliminated(
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

    async def check_answer(self, draft: Record) -> None:
        """Ask the judge model whether the answer does the task (by meaning: the phrase rules
        have passed it); an answer that asks for information, says the task is unclear, or
        only acknowledges it fails."""
        prompt = self.prompts.answer_check_prompt(
            compose(draft.instruction, draft.input), draft.output or ""
        )
        checked = await self._call(ANSWER_CHECK, user_message(prompt), draft)
        cut = checked.finish_reason == "length"
        check: AnswerCheck = await read_reply(
            checked.text, lambda text: read_answer_check(clean_reply(text).text, cut=cut)
        )
        self.judged[ANSWER_CHECK, check.form] += 1
        if failure := check.failure():
            raise Eliminated(failure)


def with_format(params: GenerationParams, response_format: dict[str, Any]) -> GenerationParams:
    """`params` asking for a reply in `response_format` (the judge model's schemas)."""
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
