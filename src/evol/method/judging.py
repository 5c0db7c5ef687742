"""What the judge model is asked for in a schema, and how its replies are read.

Two calls go to the judge model:

- the **verdict** on a rewrite: is it equal to its parent (the paper's rule), and is it a
  self-contained instruction at all (or talk to the user, an answer, an echoed input, a task
  with a part missing);
- the **answer check**: does the answer do the task, or does it ask for information, say the
  task is unclear, or only acknowledge it (Auto Evol-Instruct's signals, read by meaning).

Each is asked for as a closed choice in a JSON schema (`response_format`, which OpenAI, vLLM,
SGLang, llama.cpp's server and llama-cpp-python take). A server that refuses the schema is
asked in llama-cpp-python's spelling, then without it (`evol.llm.openai_api.ResponseFormats`,
per endpoint), and a reply that is not the JSON asked for is read as prose: the verdict by `parse_verdict`, the answer check by the one choice it
names. How each reply was read is counted, and `run.json` says so per role.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from evol.method.elimination import Failure, Reason
from evol.method.verdicts import Verdict, parse_verdict

# How a reply was read: the JSON asked for, or prose (a server that ignored or refused the
# schema); an answer check whose reply named no choice is "unread".
Form = Literal["schema", "prose", "unread"]

# The judge model's second call; it uses the judge's model and options.
ANSWER_CHECK = "answer_check"


def model_role(role: str) -> str:
    """The role whose model and options a call of `role` uses."""
    return "judge" if role == ANSWER_CHECK else role


# What the rewrite is, by the judge; anything but INSTRUCTION eliminates it.
INSTRUCTION = "instruction"
REWRITE_PROBLEMS = {
    "talks_to_user": "it talks to the user instead of stating a task",
    "answer": "it is an answer, not a task",
    "echoed_input": "it echoes an input or a placeholder",
    "missing_part": "a part of the task is missing",
}
# What an answer does, by the answer check; each failure has the reason of the phrase rule
# that reads the same signal for free.
DOES_THE_TASK = "does_the_task"
ANSWER_PROBLEMS = {
    "asks_for_information": Reason.ASKS_FOR_INFORMATION,
    "says_task_unclear": Reason.UNDERSPECIFIED,
    "only_acknowledges": Reason.NOT_A_TASK,
}
REASON_MAX_CHARS = 300  # of the judge's own words kept in a record's detail

# The reason comes first: a model writes it before it decides (greedy SmolLM2-135M, asked for
# the verdict first, called all four pairs of a probe "equal"; reason first, "different").
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "second_is": {"type": "string", "enum": [INSTRUCTION, *REWRITE_PROBLEMS]},
        "verdict": {"type": "string", "enum": ["equal", "different"]},
    },
    "required": ["reason", "second_is", "verdict"],
    "additionalProperties": False,
}
# For a rewrite that carries constraints no rule can read (`evol.method.wording.UNWORDED`): the judge
# also says whether it still asks for each of them. Other rewrites are asked as they always were.
STATES = ("yes", "no")
VERDICT_CONSTRAINT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "second_is": VERDICT_SCHEMA["properties"]["second_is"],
        "states_requirements": {"type": "string", "enum": list(STATES)},
        "verdict": VERDICT_SCHEMA["properties"]["verdict"],
    },
    "required": ["reason", "second_is", "states_requirements", "verdict"],
    "additionalProperties": False,
}
ANSWER_CHECK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reason": {"type": "string"},
        "answer": {"type": "string", "enum": [DOES_THE_TASK, *ANSWER_PROBLEMS]},
    },
    "required": ["reason", "answer"],
    "additionalProperties": False,
}


def response_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `response_format` for a JSON schema (the local backend turns it into a
    grammar)."""
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


VERDICT_FORMAT = response_format("verdict", VERDICT_SCHEMA)
VERDICT_CONSTRAINT_FORMAT = response_format("verdict", VERDICT_CONSTRAINT_SCHEMA)
ANSWER_CHECK_FORMAT = response_format(ANSWER_CHECK, ANSWER_CHECK_SCHEMA)


@dataclass(frozen=True)
class Judgement:
    """The judge's reply on one rewrite, read."""

    verdict: Verdict
    second_is: str | None  # None: not said (a prose reply)
    reason: str
    form: Form
    # Asked only of a rewrite with unworded constraints: whether it still states them all
    # (None: not asked, or not said).
    states: bool | None = None

    def failure(self, reply: str, *, instruction_check: bool = True) -> Failure | None:
        """Why the rewrite fails, if it does: equal to its parent, (`instruction_check`) not
        an instruction, or (asked of it) no longer stating its constraints. `reply` is the
        judge's text, shown for a verdict of equal."""
        if self.verdict == Verdict.EQUAL:
            said = self.reason if self.form == "schema" else reply
            return Failure(Reason.NO_INFORMATION_GAIN, f"the judge found it equal: {said!r}")
        if instruction_check and self.second_is not in (None, INSTRUCTION):
            said = f": {self.reason!r}" if self.reason else ""
            problem = REWRITE_PROBLEMS[self.second_is]
            return Failure(Reason.NOT_AN_INSTRUCTION, f"the judge says {problem}{said}")
        if self.states is False:
            said = f": {self.reason!r}" if self.reason else ""
            return Failure(
                Reason.CONSTRAINT_LOST, f"the judge says it no longer states a requirement{said}"
            )
        return None


@dataclass(frozen=True)
class AnswerCheck:
    """The answer check's reply, read; `problem` None: the answer does the task (or the reply
    named no choice, `form` "unread", which eliminates nothing)."""

    problem: str | None
    reason: str
    form: Form

    def failure(self) -> Failure | None:
        if self.problem is None:
            return None
        said = f": {self.reason!r}" if self.reason else ""
        what = self.problem.replace("_", " ")
        return Failure(ANSWER_PROBLEMS[self.problem], f"the answer check says it {what}{said}")


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    reason: str = ""


def _choice(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


class _VerdictReply(_Reply):
    verdict: Literal["equal", "different"]
    second_is: Literal["instruction", "talks_to_user", "answer", "echoed_input", "missing_part"]
    states_requirements: Literal["yes", "no"] | None = None

    _choices = field_validator("verdict", "second_is", "states_requirements", mode="before")(
        _choice
    )


class _AnswerCheckReply(_Reply):
    answer: Literal[
        "does_the_task", "asks_for_information", "says_task_unclear", "only_acknowledges"
    ]

    _choices = field_validator("answer", mode="before")(_choice)


_ReplyT = TypeVar("_ReplyT", bound=_Reply)


def read_judgement(reply: str, *, cut: bool = False, states_asked: bool = False) -> Judgement:
    """The verdict in `reply`: the JSON asked for, else read as prose (`parse_verdict`).
    A reply `cut` at the token limit without a whole object holds no verdict: the reason comes
    first, and its words ("the same as the first but adds...") are no verdict of their own.
    Whether the rewrite states its requirements is read only when `states_asked`."""
    if (found := _json_object(reply, _VerdictReply)) is not None:
        verdict = Verdict.EQUAL if found.verdict == "equal" else Verdict.DIFFERENT
        said = found.states_requirements if states_asked else None
        states = None if said is None else said == "yes"
        return Judgement(verdict, found.second_is, _shown(found.reason), "schema", states)
    return Judgement(Verdict.UNCLEAR if cut else parse_verdict(reply), None, "", "prose")


def read_answer_check(reply: str, *, cut: bool = False) -> AnswerCheck:
    """The answer check in `reply`: the JSON asked for, else the one choice its prose names;
    nothing from a reply `cut` at the token limit without a whole object (as for a verdict)."""
    if (found := _json_object(reply, _AnswerCheckReply)) is not None:
        problem = None if found.answer == DOES_THE_TASK else found.answer
        return AnswerCheck(problem, _shown(found.reason), "schema")
    if cut:
        return AnswerCheck(None, "", "unread")
    text = reply.lower()
    mentions = list(_CHOICE.finditer(text.replace(" ", "_")))
    named = {mention[0] for mention in mentions}
    if len(named) != 1 or any(_denied(text, mention.start()) for mention in mentions):
        return AnswerCheck(None, "", "unread")
    choice = named.pop()
    return AnswerCheck(None if choice == DOES_THE_TASK else choice, "", "prose")


_CHOICE = re.compile("|".join(re.escape(c) for c in (DOES_THE_TASK, *ANSWER_PROBLEMS)))
_WORD = re.compile(r"[a-z']+")
_NEGATORS = {"not", "no", "never", "neither", "nor", "without", "cannot"}
_NEGATION_REACH = 3  # words before a choice: "neither asks for information", "does not ..."


def _denied(text: str, at: int) -> bool:
    """Whether a negation comes just before the choice named at `at`: prose that denies a
    choice ("it never asks for information") does not choose it."""
    words = _WORD.findall(text[max(0, at - 60) : at])[-_NEGATION_REACH:]
    return any(word in _NEGATORS or word.endswith("n't") for word in words)


def _json_object(reply: str, schema: type[_ReplyT]) -> _ReplyT | None:
    """The first JSON object in `reply` that `schema` allows, its keys in any case, or None.
    Text around it (a fence, a remark, braces of its own) is tolerated; a few starts are tried,
    each read in linear time, so a reply full of braces costs no more than a few passes."""
    start = reply.find("{")
    for _ in range(_OBJECT_STARTS):
        if start < 0:
            return None
        try:
            found, _end = _DECODER.raw_decode(reply, start)
            if isinstance(found, dict):
                return schema.model_validate({str(key).lower(): v for key, v in found.items()})
        except (ValueError, RecursionError, ValidationError):
            pass
        start = reply.find("{", start + 1)
    return None


_DECODER = json.JSONDecoder(strict=False)  # raw newlines in a string, as llama.cpp's grammar allows
_OBJECT_STARTS = 8  # the "{"s tried: an example echoed, a nested wrapper, then the object


def _shown(reason: str) -> str:
    """The judge's reason as a record's detail keeps it: one line, bounded."""
    line = " ".join(reason.split())
    return line if len(line) <= REASON_MAX_CHARS else line[: REASON_MAX_CHARS - 3] + "..."
