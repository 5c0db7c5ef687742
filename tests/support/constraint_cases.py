"""Verifiable constraints for tables of cases: one written in a line (c, letters), the shortest
answers that meet its required words (minimal_answers, built apart from evol's own rules), and a
limit drawn on those answers (limits_on, a Hypothesis strategy). test_constraints,
test_drawing and test_contradictions share them."""

from __future__ import annotations

from hypothesis import strategies as st

from evol.method import constraints
from evol.method.constraints import Constraint

LESS, AT_LEAST = "less than", "at least"


def c(instruction_id: str, **kwargs) -> Constraint:
    return Constraint(id=instruction_id, kwargs=kwargs)


def letters(letter: str, n: int = 1) -> Constraint:
    """Fewer than `n` of `letter` (one: none at all)."""
    return c("keywords:letter_frequency", letter=letter, let_frequency=n, let_relation=LESS)


def minimal_answers(constraint: Constraint) -> list[str]:
    """The shortest texts that meet `constraint`'s required words, written the way its
    instruction asks (an expectation built apart from contradictions._required_texts)."""
    k = constraint.kwargs
    if constraint.id == "keywords:existence":
        return list(k["keywords"])
    if constraint.id == "keywords:frequency" and k["relation"] == AT_LEAST:
        return [" ".join([k["keyword"]] * k["frequency"])]
    if constraint.id == "detectable_format:multiple_sections":
        word = k["section_spliter"]
        return ["\n".join(f"{word} {n}" for n in range(1, k["num_sections"] + 1))]
    for name in ("first_word", "end_phrase", "postscript_marker"):
        if name in k:
            return [k[name]]
    return []


@st.composite
def limits_on(draw, texts: list[str]) -> Constraint:
    """A constraint that bounds a letter or a word from `texts` (or any from IFEval's list)."""
    words = [w.strip("?.") for t in texts for w in t.split() if w.strip("?.").isalpha()]
    words = words or constraints._word_list()[:50]
    word = draw(st.sampled_from(words))
    kind = draw(st.sampled_from(["letter", "keyword", "forbidden"]))
    times = draw(st.integers(1, 6))
    if kind == "letter":
        letter = draw(st.sampled_from(sorted({ch.lower() for ch in word})))
        return c("keywords:letter_frequency", letter=letter, let_frequency=times, let_relation=LESS)
    if kind == "keyword":
        start = draw(st.integers(0, len(word) - 1))
        part = word[start : draw(st.integers(start + 1, len(word)))]
        return c("keywords:frequency", keyword=part, frequency=times, relation=LESS)
    return c("keywords:forbidden_words", forbidden_words=[word, "zzzz"])
