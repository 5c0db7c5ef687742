"""The judge's verdict read from prose (a server that ignores the schema): equal or not equal,
clause by clause, a negation or hedge taken into account."""

from __future__ import annotations

import re
from enum import StrEnum

from evol.method.textstats import normalize


class Verdict(StrEnum):
    """What the equality judge said."""

    EQUAL = "equal"
    DIFFERENT = "different"
    UNCLEAR = "unclear"


# A bare verdict word at the start: "Equal.", "Not equal:", "Verdict: the same".
# Linear in the (normalised) reply: the runs before a word are possessive, and only the last
# `[\W_]*` gives back, once, from the one place the match starts.
_LEADING = re.compile(
    r"^[\W_]*+(?:(?:verdict|answer|judgment|judgement|decision|result)\W++)?"
    r"(not equal|unequal|equal|different|the same|same)[\W_]*(?:[.!:\n]|$)"
)


def parse_verdict(reply: str) -> Verdict:
    """Read the judge's reply: one word or prose; `UNCLEAR` when it says neither.

    A bare verdict at the start decides; else a clause that names itself the verdict ("Verdict:
    Not Equal", 'My answer is not "Equal"'); else the last clause that decides, read with the
    negation in front of its word ("cannot be called equal", "no real difference"). Clauses
    that only ask, suppose or weigh ("Equal or Not Equal?", "might seem equal", "same topic")
    decide nothing, so a reply that never decides stays `UNCLEAR`.
    """
    text = normalize(reply)
    if match := _LEADING.match(text):
        return _meaning(match[1])
    decided, labelled = Verdict.UNCLEAR, False
    for clause in _CLAUSE.finditer(text):
        labelled = labelled or bool(_LABELLED.search(clause[0]))
        if (verdict := _clause_verdict(clause[0])) is not Verdict.UNCLEAR:
            if labelled:
                return verdict
            decided = verdict
    return decided


# Clauses end at sentence marks, colons, dashes and commas (the runs are possessive: linear).
_CLAUSE = re.compile(r"[^.;:!?,\n\u2014\u2013()\[\]{}]++[.;:!?,\n\u2014\u2013()\[\]{}]*+")


_LABELLED = re.compile(r"\b(?:verdict|conclusion|(?:my|final|the) answer)\b")


_SAMENESS = {"equal", "equally", "same", "identical", "equivalent", "paraphrase", "paraphrases"}


_DIFFERENCE = {"different", "differ", "differs", "difference", "differences", "distinct"}


_NEGATORS = {"not", "no", "never", "cannot", "neither", "nor", "hardly", "without"}


# Words that make a clause suppose, hedge or except instead of decide.
_HEDGES = {"might", "may", "could", "if", "whether", "seem", "seems", "had", "argue", "glance"}


# A likeness of one aspect is no verdict ("same topic", "equal length", "the wording differs").
_ASPECTS = {"topic", "topics", "subject", "theme", "length", "wording", "phrasing", "words"}


_NEGATION_REACH = 3  # "cannot be called equal": the negator three words before


def _clause_verdict(clause: str) -> Verdict:
    """What one clause decides, its negation read; `UNCLEAR` for none or both."""
    if "?" in clause:
        return Verdict.UNCLEAR
    found: set[Verdict] = set()
    clause_words = re.findall(r"[a-z']+", clause)
    if _HEDGES.intersection(clause_words):
        return Verdict.UNCLEAR
    for at, word in enumerate(clause_words):
        if word not in _SAMENESS and word not in _DIFFERENCE:
            continue
        around = clause_words[max(0, at - 2) : at] + clause_words[at + 1 : at + 3]
        if _ASPECTS.intersection(around):
            continue
        before = clause_words[max(0, at - _NEGATION_REACH) : at]
        negated = any(w in _NEGATORS or w.endswith("n't") for w in before)
        found.add(Verdict.EQUAL if (word in _SAMENESS) != negated else Verdict.DIFFERENT)
    return found.pop() if len(found) == 1 else Verdict.UNCLEAR


def _meaning(phrase: str) -> Verdict:
    """What the bare verdict at the start says: one of `_LEADING`'s words."""
    return (
        Verdict.DIFFERENT
        if phrase.startswith(("not equal", "unequal", "differ"))
        else Verdict.EQUAL
    )


_SAMENESS |= {"rephrases", "rephrased", "rephrasing", "reworded", "restates", "synonymous"}
_DIFFERENCE |= {"unequal"}
_HEDGES |= {"unless", "depends", "except"}
_ASPECTS |= {"style", "tone"}
