"""Constraints that no answer can meet together: IFEval's conflict table made symmetric, plus the
rules on kwargs it does not cover (counts that cannot both hold, a text one constraint requires
that another forbids, and the sums of everything a lineage requires against each limit)."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from evol.method.constraints import COMPARISON, LATIN_SCRIPT, Constraint, is_plain
from evol.method.ifeval_library import conflict_table


def contradicts(a: Constraint, b: Constraint) -> bool:
    """Whether no answer can meet both: IFEval's conflict table (symmetric), or kwargs that
    cannot hold together (a word both required and forbidden, counts of one thing whose bounds
    do not meet, an English word or letter asked of an answer in another language, a section
    word whose case the other forbids, texts they require that together hold more of a
    letter, a word, words or capital words than one allows)."""
    if b.id in conflict_table().get(a.id, frozenset()):
        return True
    if limits_clash([a, b]):
        return True
    return _counts_clash(a, b) or _language_clash(a, b) or _case_clash(a, b)


Counted = tuple[str, str]  # what is counted: ("words", ""), ("keyword", "river"), ...


def counts_of(c: Constraint) -> dict[Counted, tuple[float, float]]:
    """What `c` bounds, each as the range of counts it allows (upper bound inclusive)."""
    k = c.kwargs

    def bound(n: Any, relation: Any) -> tuple[float, float]:
        return (0, n - 1) if relation == COMPARISON[0] else (n, float("inf"))

    if c.id == "keywords:existence":
        return {("keyword", w.lower()): (1, float("inf")) for w in k.get("keywords", [])}
    if c.id == "keywords:forbidden_words":
        return {("keyword", w.lower()): (0, 0) for w in k.get("forbidden_words", [])}
    if c.id == "length_constraints:nth_paragraph_first_word":
        return {("keyword", str(k.get("first_word", "")).lower()): (1, float("inf"))}
    counted_by = {  # id -> (what is counted, the count's kwarg, the relation's kwarg)
        "keywords:frequency": (
            ("keyword", str(k.get("keyword", "")).strip().lower()),
            "frequency",
            "relation",
        ),
        "keywords:letter_frequency": (
            ("letter", str(k.get("letter", "")).lower()),
            "let_frequency",
            "let_relation",
        ),
        "length_constraints:number_words": (("words", ""), "num_words", "relation"),
        "length_constraints:number_sentences": (("sentences", ""), "num_sentences", "relation"),
        "change_case:capital_word_frequency": (
            ("capital words", ""),
            "capital_frequency",
            "capital_relation",
        ),
    }
    if c.id not in counted_by:
        return {}
    counted, number, relation = counted_by[c.id]
    if not isinstance(k.get(number), int):
        return {}
    return {counted: bound(k[number], k.get(relation))}


def _counts_clash(a: Constraint, b: Constraint) -> bool:
    ours, theirs = counts_of(a), counts_of(b)
    for counted, (low, high) in ours.items():
        if counted in theirs:
            other_low, other_high = theirs[counted]
            if max(low, other_low) > min(high, other_high):
                return True
    return False


def _required_texts(c: Constraint) -> list[tuple[str, int]]:
    """Texts every answer meeting `c` holds, written as its instruction asks (a phrase of its
    own: "Section 1", not "xSection1"), each with how many separate copies it needs. A text
    its checker finds in any case is given in lowercase (the fewest capitals an answer needs);
    the section word is matched as it is written ("SECTION" is all capitals)."""
    k = c.kwargs
    if c.id == "keywords:existence":
        return [(w.lower(), 1) for w in k.get("keywords", []) if isinstance(w, str)]
    if c.id == "keywords:frequency" and k.get("relation") == COMPARISON[1]:
        times = k.get("frequency")
        return [(str(k.get("keyword", "")).lower(), times)] if isinstance(times, int) else []
    if c.id == "detectable_format:multiple_sections":
        times = k.get("num_sections")
        return [(str(k.get("section_spliter", "")), times)] if isinstance(times, int) else []
    name = REQUIRED_TEXT_KWARG.get(c.id)
    return [(str(k[name]).lower(), 1)] if name in k else []


REQUIRED_TEXT_KWARG = {
    "length_constraints:nth_paragraph_first_word": "first_word",
    "startend:end_checker": "end_phrase",
    "detectable_content:postscript": "postscript_marker",
    "combination:repeat_prompt": "prompt_to_repeat",
}


def _text_limits(c: Constraint) -> list[tuple[Callable[[str], int], int]]:
    """What `c` allows at most, each as (how many its checker finds in a text, the most it
    allows), found as the checker finds it: a letter in the lowercased text, a keyword as a
    substring ignoring case ("press" in "expression"), a forbidden word between word
    boundaries ignoring case, words as IFEval counts them, all-capital words among NLTK's
    tokens."""
    k = c.kwargs
    if c.id == "keywords:forbidden_words":
        words = [w for w in k.get("forbidden_words", []) if is_plain(w)]
        return [(functools.partial(_word_found, w), 0) for w in words]
    most = _most_allowed(c)
    if most is None:
        return []
    if c.id == "keywords:letter_frequency":
        letter = str(k.get("letter", "")).strip().lower()
        if len(letter) == 1:
            return [(lambda text: text.lower().count(letter), most)]
    if c.id == "keywords:frequency":
        keyword = str(k.get("keyword", "")).strip()
        if is_plain(keyword):
            return [(lambda text: len(re.findall(keyword, text, flags=re.IGNORECASE)), most)]
    if c.id == "length_constraints:number_words":
        return [(_word_count, most)]
    if c.id == "change_case:capital_word_frequency":
        return [(_capital_words, most)]
    return []


# id -> (the count's kwarg, the relation's kwarg) of the ids whose "less than" is a limit.
_LIMIT_KWARGS = {
    "keywords:letter_frequency": ("let_frequency", "let_relation"),
    "keywords:frequency": ("frequency", "relation"),
    "length_constraints:number_words": ("num_words", "relation"),
    "change_case:capital_word_frequency": ("capital_frequency", "capital_relation"),
}


def _most_allowed(c: Constraint) -> int | None:
    """The most `c` allows of what it counts (its count less one, under "less than")."""
    if c.id not in _LIMIT_KWARGS:
        return None
    number, relation = _LIMIT_KWARGS[c.id]
    count = c.kwargs.get(number)
    if c.kwargs.get(relation) != COMPARISON[0] or not isinstance(count, int):
        return None
    return count - 1


def _word_count(text: str) -> int:
    from if_verifiable.ifeval import instructions_util

    return int(instructions_util.count_words(text))


def _capital_words(text: str) -> int:
    from if_verifiable.ifeval import instructions_util

    return sum(word.isupper() for word in instructions_util.nltk.word_tokenize(text))


def _word_found(word: str, text: str) -> int:
    return int(bool(re.search(r"\b" + word + r"\b", text, flags=re.IGNORECASE)))


def limits_clash(constraints: list[Constraint]) -> bool:
    """Whether the texts `constraints` require, all together, hold more of a letter, a word,
    words or capital words than one of them allows: "constant" and "shift" hold three t's
    between them where each alone holds fewer."""
    limits = [limit for c in constraints for limit in _text_limits(c)]
    if not limits:
        return False
    required = _separate_copies([t for c in constraints for t in _required_texts(c)])
    return any(
        sum(times * found(text) for text, times in required) > most for found, most in limits
    )


def _separate_copies(texts: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The copies of each text an answer needs apart from the others: one copy of a text
    serves every constraint that asks for it, and copies of a longer text that holds it
    (ignoring case: "ant" in "constant", "section" in "SECTION") count towards it. What is
    left is the least an answer holds, so a sum over it never overstates."""
    most: dict[str, int] = {}
    for text, times in texts:
        if text.strip() and times > 0:
            most[text] = max(most.get(text, 0), times)
    kept: list[tuple[str, int]] = []
    for text, times in sorted(most.items(), key=lambda item: (-len(item[0]), -item[1], item[0])):
        inside = sum(n * other.lower().count(text.lower()) for other, n in kept)
        if times > inside:
            kept.append((text, times - inside))
    return kept


def _language_clash(a: Constraint, b: Constraint) -> bool:
    for language, other in ((a, b), (b, a)):
        if language.id != "language:response_language":
            continue
        code = language.kwargs.get("language")
        if other.id == "length_constraints:nth_paragraph_first_word" and code != "en":
            return True  # its first word is an English one
        if other.id == "keywords:letter_frequency" and code not in LATIN_SCRIPT:
            return other.kwargs.get("let_relation") == COMPARISON[1]
    return False


def _case_clash(a: Constraint, b: Constraint) -> bool:
    """The sections checker matches its word case-sensitively: "Section 1" is never all
    lowercase, and is not all capitals either. (The letter and keyword checkers ignore case,
    so they never clash with a case constraint.)"""
    for sections, case in ((a, b), (b, a)):
        if sections.id != "detectable_format:multiple_sections":
            continue
        word = str(sections.kwargs.get("section_spliter", ""))
        if case.id == "change_case:english_lowercase" and word != word.lower():
            return True
        if case.id == "change_case:english_capital" and word != word.upper():
            return True
    return False
