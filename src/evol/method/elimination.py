"""The rules that decide an evolution failed, each returning why (`Failure`: a reason and a
detail that names the phrase, signal or figure that fired).

- The paper's four: the judge says the rewrite equals its parent; the answer says "sorry" in
  under 80 words; the answer is only stop words and punctuation; the rewrite copies the evolving
  prompt's own words (`LeakDetector`, built from the loaded templates plus the paper's markers).
- Free checks before any paid call: an empty or unchanged rewrite, and one that grew far past
  the method's bound (the evolver answered instead of rewriting, or ran away).
- Auto Evol-Instruct's signals (arXiv 2406.00770, appendix A), read from the answer to the
  rewrite: "Understood"/"Thank you" ... "?" (not a task), "Sure" ... "?" (under-specified),
  "please provide" (key information lost); and an answer that only repeats its instruction.
  They read short answers only (under 80 words): a long answer that opens "Sure!" and ends by
  offering more is a real answer.
- From the engine: `truncated` (finish_reason "length"), `too_long`, `rejected`,
  `judge_unclear`; the optional `duplicate` rule lives in `evol.method.dedup`; and with verifiable
  constraints (`evol.method.wording`, `evol.method.constraints`) `constraint_lost`, `constraint_unmet` and
  `no_constraint_left`.

Words are counted with `evol.method.textstats.words`, as `evol stats` counts them.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from evol.method.leaks import LeakDetector
from evol.method.stopwords import STOP_WORDS
from evol.method.textstats import iter_words, normalize, rouge_l_bitparallel, tokens, words


class Reason(StrEnum):
    """Why an evolution was eliminated; the value is what `eliminated.jsonl` records."""

    EMPTY = "empty"
    UNCHANGED = "unchanged"
    OVERGROWN = "overgrown"
    PROMPT_LEAK = "prompt_leak"
    NO_INFORMATION_GAIN = "no_information_gain"
    JUDGE_UNCLEAR = "judge_unclear"
    NOT_AN_INSTRUCTION = "not_an_instruction"
    SORRY = "sorry"
    STOPWORDS_ONLY = "stopwords_only"
    NOT_A_TASK = "not_a_task"
    UNDERSPECIFIED = "underspecified"
    ASKS_FOR_INFORMATION = "asks_for_information"
    TRUNCATED = "truncated"
    TOO_LONG = "too_long"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    # Verifiable constraints (#26): the rewrite no longer states one it carries; no answer in
    # --answer-attempts more met them all; every constraint left contradicts the lineage's.
    CONSTRAINT_LOST = "constraint_lost"
    CONSTRAINT_UNMET = "constraint_unmet"
    NO_CONSTRAINT_LEFT = "no_constraint_left"


class EliminationRules(BaseModel):
    """Which rules are on; the free checks always are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: bool = True
    # The judge also says whether the rewrite is an instruction at all. None: on, except for
    # the embedded default model, which marks every rewrite as not one (see README).
    instruction_check: bool | None = None
    sorry: bool = True
    stopwords: bool = True
    leak: bool = True
    growth: bool = True
    signals: bool = True
    dedup: bool = False
    dedup_method: Literal["auto", "rouge-l", "minhash"] = "auto"
    dedup_threshold: float = Field(0.7, gt=0, le=1)


@dataclass(frozen=True)
class Failure:
    """Why a step failed: the reason recorded, and what fired, in words."""

    reason: Reason
    detail: str


SORRY_MAX_WORDS = 80
SIGNAL_MAX_WORDS = 80
# How many words a rewrite may have, from its parent's: the prompts ask for 20 more at most
# (complicate_input adds material, breadth writes a new one of similar length); these bounds
# leave room for models that overshoot and catch the ones that answer instead.
GROWTH_BOUNDS = {
    "complicate_input": lambda words: words + 150,  # 15 lines of material, with room
    "breadth": lambda words: max(3 * words, words + 100),
}
IN_DEPTH_BOUND = lambda words: max(2 * words, words + 60)  # noqa: E731
# An answer this close to its instruction (ROUGE-L F1) and not much longer only repeats it.
REPEAT_SIMILARITY = 0.8
REPEAT_MAX_GROWTH = 1.5
# ROUGE-L is quadratic in words: longer texts are compared by their first this many (an answer
# that only repeats its instruction shows it from the start).
REPEAT_MAX_WORDS = 10_000


def check_rewrite(
    parent: str,
    child: str,
    rules: EliminationRules,
    leaks: LeakDetector | None = None,
    operation: str | None = None,
) -> Failure | None:
    """Rules on the evolved instruction alone, run before any answer or judge call."""
    if not child.strip():
        return Failure(Reason.EMPTY, "the rewrite is empty")
    if normalize(child) == normalize(parent):
        return Failure(Reason.UNCHANGED, "the rewrite is its parent, word for word")
    if rules.growth and operation is not None:
        before, after = len(words(parent)), len(words(child))
        if after > (bound := GROWTH_BOUNDS.get(operation, IN_DEPTH_BOUND)(before)):
            return Failure(
                Reason.OVERGROWN,
                f"the rewrite grew from {before} to {after} words ({operation} allows {bound})",
            )
    if rules.leak and leaks is not None and (phrase := leaks.find(parent, child)):
        return Failure(Reason.PROMPT_LEAK, f"the rewrite copies the prompt's words {phrase!r}")
    return None


def check_answer(instruction: str, answer: str, rules: EliminationRules) -> Failure | None:
    """Rules on an answer, to a seed or to an evolved instruction.

    Each rule reads no further into the answer than it must (to its first word that is no stop
    word, its 80th word, 1.5 times its instruction's length): a megabyte answer costs little
    more than a short one.
    """
    if rules.stopwords and all(
        w.casefold().replace("\u2019", "'") in STOP_WORDS for w in iter_words(answer)
    ):
        shown = " ".join(answer.split())[:60]
        return Failure(
            Reason.STOPWORDS_ONLY, f"the answer is only stop words and punctuation: {shown!r}"
        )
    # Both rules below read short answers only: the first 80 words tell whether it is one.
    answer_words = words(answer, limit=max(SORRY_MAX_WORDS, SIGNAL_MAX_WORDS))
    if rules.sorry and "sorry" in answer.casefold() and len(answer_words) < SORRY_MAX_WORDS:
        return Failure(Reason.SORRY, f"the answer says sorry in {len(answer_words)} words")
    if not rules.signals:
        return None
    if len(answer_words) < SIGNAL_MAX_WORDS and (
        failure := _signal(answer, answer_words, refusals=rules.sorry)
    ):
        return failure
    return _repeats(instruction, answer)


def _signal(answer: str, answer_words: list[str], *, refusals: bool) -> Failure | None:
    """Auto Evol-Instruct's signals that the rewrite failed, read from a short answer; a
    refusal counts only with the sorry rule on (`refusals`)."""
    first = answer_words[0].casefold() if answer_words else ""
    opening = " ".join(answer_words[:2]).casefold()
    asks_back = answer.rstrip(" \t\n*_\"'`)").endswith("?")
    if asks_back and (first == "understood" or opening == "thank you"):
        return Failure(
            Reason.NOT_A_TASK,
            f"the answer starts with {answer_words[0]!r} and ends with a question: nothing was asked",
        )
    if asks_back and first == "sure":
        return Failure(
            Reason.UNDERSPECIFIED,
            "the answer starts with 'Sure' and ends with a question: the task is under-specified",
        )
    if (at := answer.casefold().find("please provide")) >= 0:
        sentence = answer[at : at + 80].split("\n")[0]
        return Failure(
            Reason.ASKS_FOR_INFORMATION, f"the answer asks for what is missing: {sentence!r}"
        )
    return _does_not_answer(answer, refusals=refusals)


# What a short answer that does not do its task says instead, sentence by sentence. A sentence
# none of these sees is content (a question that names neither "you" nor "I" is neither).
_REFUSES = re.compile(
    r"\b(?:as an ai|as a (?:large )?language model|i(?: cannot| can't| can not| won't| will not"
    r"| must decline| am unable|'m unable| am not able|'m not able|'m not comfortable"
    r"| am not comfortable| (?:do not|don't) feel comfortable| (?:do not|don't) have personal)"
    r"|not something i can|i'd rather not|please (?:consult|contact|seek|refer|reach out))\b"
)
_ASKS = re.compile(
    r"\b(?:(?:could|can|would|will) you(?: please)? (?:share|send|paste|provide|tell|give"
    r"|specify|list|upload|attach|describe|confirm|mind|let me know|include)"
    r"|(?:please|kindly) (?:share|send|paste|provide|specify|upload|attach|tell|give|list)"
    r"|^(?:share|send|paste|provide|specify|upload|attach|tell|give) (?:me|us)\b"
    r"|let me know (?:the|your|what|which|who|how|when|where|if)|tell me (?:more|what|which|about)"
    r"|i(?:'ll| will|'d| would)? need (?:to know|more|a few|some|the|your|a bit|additional)"
    r"|it would help (?:to know|if you)|knowing (?:that|this|these|more) (?:will|would) help"
    r"|(?:once|if|when|after) you (?:can |could )?(?:share|send|paste|provide|give|tell|specify"
    r"|upload|list)|you can (?:paste|share|send|upload|attach|provide|list)"
    r"|(?:that|this|it) (?:will|would) help"
    r"|before i (?:answer|start|begin|do|can|write|proceed|get started)"
    r"|(?:doesn't|does not|don't|do not|didn't|did not) (?:seem to |appear to )?(?:be )?"
    r"(?:included|attached|provided|given|shown|mentioned)"
    r"|i (?:don't|do not|can't|cannot) (?:see|find) (?:any|the|a|your)"
    r"|(?:is|are) missing|without (?:it|them|this|that)\b"
    r"|no \w+ (?:(?:was|were|are|is) )?(?:given|provided|mentioned|included|shown|attached))"
)
_UNCLEAR = re.compile(
    r"\b(?:i (?:don't|do not) understand|i'm not sure (?:what|how|which|who|i)|i am not sure"
    r"|(?:i'm|i am) confused|confused by|(?:can't|cannot) (?:determine|tell) (?:what|which)"
    r"|missing information|(?:could|can) you (?:rephrase|clarify)|what do you mean"
    r"|(?:doesn't|does not|don't|do not) make sense|contradicts itself)"
)
_UNCLEAR_WORD = re.compile(r"\b(?:unclear|not clear|ambiguous|vague|incomplete|contradictory)\b")
_ABOUT_THE_TASK = re.compile(
    r"\b(?:you|your|this|here|refers?|instruction|question|prompt|request|task|message)\b"
)
_ACKNOWLEDGES = re.compile(
    r"^(?:(?:sure|certainly|of course|absolutely|okay|ok|alright|all right|great|got it|noted"
    r"|understood|will do|no problem|gladly|yes|lovely idea|great idea|good idea|great question"
    r"|(?:i'd|i would|i'm|i am) (?:be )?(?:happy|glad) to help|happy to help|thanks|thank you)"
    r"[\s,.!]*+)*(?:(?:then |and |so )?(?:i(?:'ll| will| can| am going to|'m going to"
    r"|'d love to| understand| see)|(?:(?:i'd|i would) be |i'm |i am )?(?:happy|glad) to"
    r"|let me|you(?:'d like| would like| want|'re asking"
    r"| are asking) me to|ready when you are|i'm excited|i am excited|thanks for|thank you for)"
    r"\b[^:]*+)?$"
)
# An acknowledgement is short; the bound also keeps its pattern's one backtracking loop small.
ACKNOWLEDGE_MAX_CHARS = 80
_SENTENCE_END = re.compile(r"(?<=[.!?])\s++")


def _does_not_answer(answer: str, *, refusals: bool = True) -> Failure | None:
    """A short answer all of whose sentences ask, say it is unclear, refuse or acknowledge."""
    said: dict[str, str] = {}
    for sentence in _SENTENCE_END.split(answer.casefold().replace("\u2019", "'")):
        sentence = sentence.strip(" \t\n*_\"'`()-")
        if not re.search(r"[^\W\d_]", sentence):
            continue  # a list number, an emoji: neither content nor a signal
        if kind := _kind(sentence, refusals=refusals):
            said.setdefault(kind, sentence)
        elif not sentence.endswith("?"):
            return None  # content: the answer does something
    for kind, reason in _SAYS_INSTEAD:
        if kind in said:
            return Failure(reason, f"the answer only {kind}: {said[kind][:80]!r}")
    return None


_SAYS_INSTEAD = (
    ("refuses", Reason.SORRY),
    ("asks for what is missing", Reason.ASKS_FOR_INFORMATION),
    ("says the task is unclear", Reason.UNDERSPECIFIED),
    ("acknowledges the task", Reason.NOT_A_TASK),
)


def _kind(sentence: str, *, refusals: bool) -> str | None:
    if refusals and _REFUSES.search(sentence):
        return "refuses"
    if _UNCLEAR.search(sentence) or (
        _UNCLEAR_WORD.search(sentence) and _ABOUT_THE_TASK.search(sentence)
    ):
        return "says the task is unclear"
    if _ASKS.search(sentence) or (sentence.endswith("?") and _ADDRESSED.search(sentence)):
        return "asks for what is missing"
    if len(sentence) <= ACKNOWLEDGE_MAX_CHARS and _ACKNOWLEDGES.match(sentence):
        return "acknowledges the task"
    return None


# A question that names the user or the answerer asks them for something.
_ADDRESSED = re.compile(r"\b(?:you|your|yours|i|me|my)\b")


def _repeats(instruction: str, answer: str) -> Failure | None:
    """An answer no longer than 1.5 times its instruction, and nearly its words."""
    instruction_tokens = tokens(instruction)
    longest = int(REPEAT_MAX_GROWTH * len(instruction_tokens))
    answer_tokens = tokens(answer, limit=longest + 1)
    if len(answer_tokens) > longest:
        return None  # most answers: far longer than what they answer
    # The longest common subsequence is at most the words the two share: most answers share
    # too few for ROUGE-L to be worth computing.
    shared = sum((Counter(instruction_tokens) & Counter(answer_tokens)).values())
    if 2 * shared < REPEAT_SIMILARITY * (len(instruction_tokens) + len(answer_tokens)):
        return None
    similarity = rouge_l_bitparallel(
        answer_tokens[:REPEAT_MAX_WORDS], instruction_tokens[:REPEAT_MAX_WORDS]
    )
    if similarity >= REPEAT_SIMILARITY:
        return Failure(
            Reason.NOT_A_TASK, f"the answer only repeats its instruction (ROUGE-L {similarity:.2f})"
        )
    return None
