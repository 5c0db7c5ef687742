"""The rules that decide an evolution failed, each returning the `Reason` it failed for.

The paper's four rules (judge says equal, a short "sorry" answer, an answer of only stop words
and punctuation, a rewrite that leaks the evolving prompt's words) plus two free checks that
run before any paid call (empty or unchanged rewrite) and `too_long` for prompts that overflow
the model's context. The optional `duplicate` rule lives in `evol.dedup`.
"""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Reason(StrEnum):
    """Why an evolution was eliminated; the value is what `eliminated.jsonl` records."""

    EMPTY = "empty"
    UNCHANGED = "unchanged"
    PROMPT_LEAK = "prompt_leak"
    NO_INFORMATION_GAIN = "no_information_gain"
    SORRY = "sorry"
    STOPWORDS_ONLY = "stopwords_only"
    TOO_LONG = "too_long"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"


class Verdict(StrEnum):
    """What the equality judge said."""

    EQUAL = "equal"
    DIFFERENT = "different"
    UNCLEAR = "unclear"


class EliminationRules(BaseModel):
    """Which of the paper's rules are on; the free checks always are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: bool = True
    sorry: bool = True
    stopwords: bool = True
    leak: bool = True
    dedup: bool = False
    dedup_method: Literal["auto", "rouge-l", "minhash"] = "auto"
    dedup_threshold: float = Field(0.7, gt=0, le=1)


SORRY_MAX_WORDS = 80
# Words of the evolving prompts (the paper's and ours) that have no business in an instruction.
LEAK_PHRASES = (
    "given prompt",
    "rewritten prompt",
    "created prompt",
    "#given prompt#",
    "#rewritten prompt#",
    "#created prompt#",
    "rewritten instruction",
    "original instruction",
    "new version of the instruction",
    "the instruction above",
    "rules for the rewrite",
    "rules for the new instruction",
    "<instruction>",
    "</instruction>",
)
STOP_WORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "aren't",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "can't",
        "cannot",
        "could",
        "couldn't",
        "did",
        "didn't",
        "do",
        "does",
        "doesn't",
        "doing",
        "don't",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "hadn't",
        "has",
        "hasn't",
        "have",
        "haven't",
        "having",
        "he",
        "he'd",
        "he'll",
        "he's",
        "her",
        "here",
        "here's",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "how's",
        "i",
        "i'd",
        "i'll",
        "i'm",
        "i've",
        "if",
        "in",
        "into",
        "is",
        "isn't",
        "it",
        "it's",
        "its",
        "itself",
        "let's",
        "me",
        "more",
        "most",
        "mustn't",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "ought",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "shan't",
        "she",
        "she'd",
        "she'll",
        "she's",
        "should",
        "shouldn't",
        "so",
        "some",
        "such",
        "than",
        "that",
        "that's",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "there's",
        "these",
        "they",
        "they'd",
        "they'll",
        "they're",
        "they've",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "wasn't",
        "we",
        "we'd",
        "we'll",
        "we're",
        "we've",
        "were",
        "weren't",
        "what",
        "what's",
        "when",
        "when's",
        "where",
        "where's",
        "which",
        "while",
        "who",
        "who's",
        "whom",
        "why",
        "why's",
        "will",
        "with",
        "won't",
        "would",
        "wouldn't",
        "you",
        "you'd",
        "you'll",
        "you're",
        "you've",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "yes",
        "ok",
        "okay",
    ]
)
_WORD = re.compile(r"[\w']+", re.UNICODE)


def normalize(text: str) -> str:
    """Lower-case, NFKC, whitespace folded: the form in which two texts count as the same."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def check_rewrite(parent: str, child: str, rules: EliminationRules) -> Reason | None:
    """Rules on the evolved instruction alone, run before any answer or judge call."""
    if not child.strip():
        return Reason.EMPTY
    if normalize(child) == normalize(parent):
        return Reason.UNCHANGED
    if rules.leak and leaks_prompt(parent, child):
        return Reason.PROMPT_LEAK
    return None


def leaks_prompt(parent: str, child: str) -> bool:
    """True when the child holds a leak phrase that its parent did not already hold."""
    child_text, parent_text = normalize(child), normalize(parent)
    return any(phrase in child_text and phrase not in parent_text for phrase in LEAK_PHRASES)


def check_answer(answer: str, rules: EliminationRules) -> Reason | None:
    """Rules on the answer to the evolved instruction."""
    words = _WORD.findall(answer.casefold())
    if rules.sorry and "sorry" in answer.casefold() and len(words) < SORRY_MAX_WORDS:
        return Reason.SORRY
    if rules.stopwords and all(word.strip("'") in STOP_WORDS for word in words):
        return Reason.STOPWORDS_ONLY
    return None


def parse_verdict(reply: str) -> Verdict:
    """Read the judge's reply; anything we cannot read keeps the evolution (`UNCLEAR`)."""
    text = " ".join(_WORD.findall(reply.casefold()))
    if text.startswith(("not equal", "different")):
        return Verdict.DIFFERENT
    if text.startswith(("equal", "same")):
        return Verdict.EQUAL
    if "not equal" in text or "different" in text:
        return Verdict.DIFFERENT
    if re.search(r"\bequal\b", text):
        return Verdict.EQUAL
    return Verdict.UNCLEAR
