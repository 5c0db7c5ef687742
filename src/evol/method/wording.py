"""Whether an instruction states its verifiable constraints: the free check of every rewrite
that carries constraints (an `add_verifiable_constraint` rewrite, or any rewrite of one).

A constraint is *worded* when its kwargs hold what any statement of it repeats: a count and
the direction it bounds in, a keyword, a phrase, a marker. For those this check decides alone:
the rewrite must hold each of them, and a count must be said with a direction that implies the
constraint's ("fewer than 300 words" for IFEval's "less than 300"; "exactly 3" or "at least 3"
for "at least 3"): a count said the other way round ("more than", "at most") is garbled.
An answer that meets the rewrite then meets the constraint.

The others (`UNWORDED`: lowercase, no commas, JSON, a title, quotation marks, two responses,
all capitals) can be put in too many words for a rule: here a rewrite only needs a cue word
("comma", "lowercase", "JSON"...), without which it has surely lost the constraint, even with
no judge to ask; the judge is then asked whether the rewrite states them (`judged`).

Every pattern here is linear in the text: tokens and plain alternations, no nested quantifier.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from evol.method.constraints import Constraint
from evol.method.drawing import language_name

LESS, AT_LEAST, EXACTLY = "less than", "at least", "exactly"
# How a statement bounds a count. "more" and "at most" imply neither of IFEval's relations.
LT, LE, EQ, GE, GT = "fewer than", "at most", "exactly", "at least", "more than"
IMPLIED_BY = {  # the constraint's relation -> what a statement of it may say
    LESS: {LT},
    AT_LEAST: {GE, GT, EQ, None},
    EXACTLY: {EQ, None},
}
# Said just before the count, longest first where one ends another ("no more than").
BEFORE = {
    ("no", "more", "than"): LE,
    ("not", "more", "than"): LE,
    ("no", "fewer", "than"): GE,
    ("no", "less", "than"): GE,
    ("not", "fewer", "than"): GE,
    ("not", "less", "than"): GE,
    ("no", "longer", "than"): LE,
    (
        "not",
        "exceeding",
    ): LE,
    ("without", "exceeding"): LE,
    ("without", "going", "over"): LE,
    ("less", "than"): LT,
    ("fewer", "than"): LT,
    ("shorter", "than"): LT,
    ("under",): LT,
    ("below",): LT,
    ("at", "least"): GE,
    ("minimum", "of"): GE,
    ("at", "most"): LE,
    ("up", "to"): LE,
    ("maximum", "of"): LE,
    ("within",): LE,
    ("more", "than"): GT,
    ("greater", "than"): GT,
    ("longer", "than"): GT,
    ("over",): GT,
    ("above",): GT,
    ("exceeding",): GT,
    ("exactly",): EQ,
    ("precisely",): EQ,
}
# Said after the count and its unit ("300 words or more").
AFTER = {
    ("or", "more"): GE,
    ("or", "fewer"): LE,
    ("or", "less"): LE,
    ("at", "least"): GE,
    ("at", "most"): LE,
    ("minimum",): GE,
    ("maximum",): LE,
    ("max",): LE,
    ("min",): GE,
}
# A negation governing a bound turns it round: "should not be less than 150" is at least 150.
NOT_EXACTLY = "not exactly"
TURNED = {LT: GE, LE: GT, GE: LT, GT: LE, EQ: NOT_EXACTLY, None: NOT_EXACTLY}
NEGATION_REACH = 4  # tokens before a bound among which a negation governs it ("not make it")
FILLERS = frozenset({"a", "total", "of", "only"})
NUMBER_WORDS = {
    **{
        word: value
        for value, word in enumerate(
            [
                "zero",
                "one",
                "two",
                "three",
                "four",
                "five",
                "six",
                "seven",
                "eight",
                "nine",
                "ten",
                "eleven",
                "twelve",
                "thirteen",
                "fourteen",
                "fifteen",
                "sixteen",
                "seventeen",
                "eighteen",
                "nineteen",
                "twenty",
            ]
        )
    },
    "single": 1,
    "once": 1,
    "twice": 2,
    "thrice": 3,
}
TIMES_WORDS = frozenset({"once", "twice", "thrice"})  # a count with its unit in one word
ORDINALS = ("zeroth", "first", "second", "third", "fourth", "fifth")
UNIT_REACH = 4  # tokens between a count and its unit ("4 short markdown bullet points")

_TOKEN = re.compile(r"[a-z]+|\d+")
_NEGATION = re.compile(
    r"\b(?:not|no|never|nor|without|avoid\w*|exclud\w*|forbid\w*|refrain\w*|omit\w*"
    r"|ban(?:s|ned|ning)?|prohibit\w*|cannot)\b|n't\b"
)
# A negation before a count's bound; "n't" only after a letter ("the letter 't'" is none).
# ("no" and "without" also go before nouns, "with no title in under 150 words": they negate
# a bound only as part of its phrase, "no more than", "without exceeding".)
_COUNT_NEGATION = re.compile(r"\b(?:not|never|cannot)\b|[a-z]n['’]t\b")
# Words between a negation and what follows that end its hold ("don't forget to write at
# least", "not only at least"), or start another clause.
_UNNEGATING = frozenset(
    {"and", "or", "but", "then", "forget", "fail", "hesitate", "neglect", "only", "just"}
)
# A negation after a forbidden word, in its clause: "apple and pear must not appear".
_FORBIDDING_AFTER = re.compile(
    r"\b(?:not|never|cannot|forbidden|prohibited|banned|excluded|off[- ]limits)\b|n['’]t\b"
)
_SENTENCE_END = re.compile(r"[.!?\n]+")
_CLAUSE_BREAK = re.compile(r"[.!?;:,\n]")

# The cue words of the unworded constraints, found in the lowercased rewrite.
UNWORDED = {
    "detectable_format:json_format": re.compile(r"\bjson\b"),
    "detectable_format:title": re.compile(r"<<|angular bracket|angle bracket|double angle"),
    "combination:two_responses": re.compile(r"\*{6}|\b(?:6|six) asterisk"),
    "change_case:english_capital": re.compile(
        r"capital|upper ?case|upper-case|all caps|all-caps|block letters"
    ),
    "change_case:english_lowercase": re.compile(r"lower ?case|lower-case|small letters"),
    "punctuation:no_comma": re.compile(r"comma"),
    "startend:quotation": re.compile(r"quotation|quote"),
}
# The units a count of each id is said in.
UNITS = {
    "length_constraints:number_words": ("word",),
    "length_constraints:number_sentences": ("sentence",),
    "length_constraints:number_paragraphs": ("paragraph",),
    "length_constraints:nth_paragraph_first_word": ("paragraph",),
    "keywords:frequency": ("time",),
    "keywords:letter_frequency": ("time",),
    "change_case:capital_word_frequency": ("time", "word"),
    "detectable_content:number_placeholders": ("placeholder",),
    "detectable_format:number_bullet_lists": ("bullet", "point"),
    "detectable_format:number_highlighted_sections": ("section", "highlight", "part", "phrase"),
    "detectable_format:multiple_sections": ("section", "part"),
}
# Each counted id: (the count's kwarg, the relation's kwarg, or the relation IFEval fixes).
COUNTS = {
    "length_constraints:number_words": ("num_words", "relation"),
    "length_constraints:number_sentences": ("num_sentences", "relation"),
    "length_constraints:number_paragraphs": ("num_paragraphs", EXACTLY),
    "length_constraints:nth_paragraph_first_word": ("num_paragraphs", EXACTLY),
    "keywords:frequency": ("frequency", "relation"),
    "keywords:letter_frequency": ("let_frequency", "let_relation"),
    "change_case:capital_word_frequency": ("capital_frequency", "capital_relation"),
    "detectable_content:number_placeholders": ("num_placeholders", AT_LEAST),
    "detectable_format:number_bullet_lists": ("num_bullets", EXACTLY),
    "detectable_format:number_highlighted_sections": ("num_highlights", AT_LEAST),
    "detectable_format:multiple_sections": ("num_sections", EXACTLY),
}
# What else a statement of an id must hold, as a pattern on the lowercased rewrite, and what
# the rewrite then lacks in words.
ALSO = {
    "length_constraints:number_paragraphs": (re.compile(r"\*\*\*"), "the *** divider"),
    "detectable_content:number_placeholders": (re.compile(r"bracket|\["), "square brackets"),
    "detectable_format:number_highlighted_sections": (
        re.compile(r"highlight|markdown|bold|italic|\*"),
        "highlighting",
    ),
    "change_case:capital_word_frequency": (
        re.compile(r"capital|upper ?case|upper-case|all caps|all-caps"),
        "capital letters",
    ),
    "detectable_format:constrained_response": (re.compile(r"my answer is"), "'My answer is'"),
}


def judged(constraints: Iterable[Constraint]) -> list[Constraint]:
    """The constraints whose statement the judge is asked about: the unworded ones."""
    return [c for c in constraints if c.id in UNWORDED]


def unstated(instruction: str, constraint: Constraint) -> str | None:
    """Why `instruction` does not state `constraint` (lost, or garbled), in words; None when
    it states it (for an unworded one: when it holds its cue)."""
    lower = instruction.lower()
    if cue := UNWORDED.get(constraint.id):
        return None if cue.search(lower) else "lost: no word of it is left"
    problems = [
        problem
        for problem in (
            _count_problem(lower, constraint),
            _text_problem(instruction, lower, constraint),
        )
        if problem
    ]
    return "; ".join(problems) or None


def _count_problem(lower: str, constraint: Constraint) -> str | None:
    """Whether the count of `constraint` is said, with a direction that implies it."""
    if constraint.id not in COUNTS:
        return None
    number_kwarg, relation = COUNTS[constraint.id]
    count = constraint.kwargs[number_kwarg]
    relation = constraint.kwargs.get(relation, relation)
    said = list(_bounds(lower, count, UNITS[constraint.id]))
    allowed = IMPLIED_BY[relation]
    unit = UNITS[constraint.id][0]
    wanted = f"{'' if relation == EXACTLY else relation + ' '}{count} {unit}s"
    # A bare mention ("3 sentences") implies "at least" and "exactly", and is neutral next to
    # a "fewer than" said elsewhere.
    wrong = [bound for bound in said if bound is not None and bound not in allowed]
    if wrong:
        return f"garbled: it says {wrong[0]} {count} {unit}s, where the constraint is {wanted}"
    if any(bound in allowed for bound in said):
        return None
    if said:
        return f"garbled: it says {count} {unit}s with no 'less than', where the constraint is {wanted}"
    return f"lost: it never says {wanted}"


def _bounds(lower: str, count: int, units: tuple[str, ...]) -> Iterable[str | None]:
    """How each mention of `count` followed by one of `units` bounds it (None: it says no
    direction, a bare "3 paragraphs"), turned round where a negation governs it ("not be
    less than 3" is at least 3; "not 3 paragraphs", not exactly 3)."""
    found = list(_TOKEN.finditer(lower))
    tokens = [match[0] for match in found]
    for at, token in enumerate(tokens):
        value = int(token) if token.isdigit() else NUMBER_WORDS.get(token)
        if value != count:
            continue
        following = tokens[at + 1 : at + 1 + UNIT_REACH]
        unit_at = next(
            (i for i, word in enumerate(following) if word.startswith(units)),
            None if token not in TIMES_WORDS or "time" not in units else -1,
        )
        if unit_at is None:
            continue
        said, phrase_at = _said_before(tokens[:at])
        if said is None:
            said = _said_after(following[unit_at + 1 :])
        yield TURNED[said] if _negated(lower, found, phrase_at) else said


def _said_before(before: list[str]) -> tuple[str | None, int]:
    """The bound said just before a count, and the token its phrase starts at (the count's
    own when none is said)."""
    end = len(before)
    while end and before[end - 1] in FILLERS:
        end -= 1
    for length in (3, 2, 1):
        if end >= length and (said := BEFORE.get(tuple(before[end - length : end]))):
            return said, end - length
    return None, len(before)


def _negated(lower: str, found: list[re.Match[str]], at: int) -> bool:
    """Whether a negation governs what starts at token `at`: one among the few tokens before
    it, in its clause, with no word between that ends its hold."""
    first = max(0, at - NEGATION_REACH)
    if first and found[first][0] == "t":
        first -= 1  # "don't" is two tokens: start at "don"
    if at == first:
        return False
    window = lower[found[first].start() : found[at].start()]
    window = _CLAUSE_BREAK.split(window)[-1]
    negations = list(_COUNT_NEGATION.finditer(window))
    if not negations:
        return False
    return not any(word in _UNNEGATING for word in _TOKEN.findall(window[negations[-1].end() :]))


def _said_after(after: list[str]) -> str | None:
    for length in (2, 1):
        if (said := AFTER.get(tuple(after[:length]))) is not None:
            return said
    return None


def _text_problem(text: str, lower: str, constraint: Constraint) -> str | None:
    """Whether the words, phrases and markers of `constraint` are in the rewrite."""
    k, cid = constraint.kwargs, constraint.id
    if cid in ALSO and not ALSO[cid][0].search(lower):
        return f"lost: it never mentions {ALSO[cid][1]}"
    if cid == "keywords:existence":
        return _keywords_problem(lower, k["keywords"], forbidden=False)
    if cid == "keywords:forbidden_words":
        return _keywords_problem(lower, k["forbidden_words"], forbidden=True)
    if cid == "keywords:frequency":
        return _missing(lower, [k["keyword"]])
    if cid == "keywords:letter_frequency":
        letter = re.escape(k["letter"].lower())
        pattern = rf"letter\W{{1,3}}{letter}\b|[\"'‘“]{letter}[\"'’”]"
        return (
            None
            if re.search(pattern, lower)
            else f"lost: it never names the letter {k['letter']!r}"
        )
    if cid == "language:response_language":
        return _missing(lower, [language_name(k["language"])])
    if cid == "length_constraints:nth_paragraph_first_word":
        return _missing(lower, [k["first_word"]]) or _nth_problem(lower, k)
    if cid == "detectable_content:postscript":
        marker = r"p\.\s?p\.\s?s" if k["postscript_marker"] == "P.P.S" else r"p\.\s?s\b"
        return None if re.search(marker, lower) else f"lost: no {k['postscript_marker']} in it"
    if cid == "detectable_format:multiple_sections":
        word = re.escape(k["section_spliter"])
        found = re.search(rf"\b{word} (?:\d+|[XN]\b)", text)  # its checker's case, as it is
        return None if found else f"lost: it never shows {k['section_spliter']} 1 or X"
    if cid == "startend:end_checker":
        phrase = k["end_phrase"].lower()
        return None if phrase in lower else f"lost: no {k['end_phrase']!r} in it"
    return None


def _missing(lower: str, words: list[str]) -> str | None:
    for word in words:
        if not re.search(rf"\b{re.escape(word.lower())}\b", lower):
            return f"lost: it never says {word!r}"
    return None


def _keywords_problem(lower: str, words: list[str], *, forbidden: bool) -> str | None:
    """Each keyword is in the rewrite, forbidden in a sentence that negates, required in one
    that does not negate it just before."""
    if problem := _missing(lower, words):
        return problem
    sentences = _SENTENCE_END.split(lower)
    for word in words:
        pattern = re.compile(rf"\b{re.escape(word.lower())}\b")
        holding = [s for s in sentences if pattern.search(s)]
        if forbidden and not any(_forbids(s, pattern) for s in holding):
            return f"garbled: {word!r} is not forbidden in it"
        if not forbidden and all(_negated_before(s, pattern) for s in holding):
            return f"garbled: {word!r} is forbidden in it, not required"
    return None


def _forbids(sentence: str, pattern: re.Pattern[str]) -> bool:
    """Whether a negation in `sentence` governs the word `pattern` finds: one before it
    ("do not use apple or pear"), or one after it in its clause ("apple must not appear");
    not one in another clause ("mention apple, with no exceptions")."""
    found = pattern.search(sentence)
    assert found is not None
    if _NEGATION.search(sentence[: found.start()]):
        return True
    clause = _CLAUSE_BREAK.split(sentence[found.end() :])[0]
    return bool(_FORBIDDING_AFTER.search(clause))


def _negated_before(sentence: str, pattern: re.Pattern[str]) -> bool:
    found = pattern.search(sentence)
    assert found is not None
    before = " ".join(_TOKEN.findall(sentence[: found.start()])[-UNIT_REACH:])
    return bool(_NEGATION.search(before))


def _nth_problem(lower: str, kwargs: dict) -> str | None:
    """Which paragraph starts with the word: named when there are several."""
    nth = kwargs["nth_paragraph"]
    if kwargs["num_paragraphs"] == 1:
        return None
    names = [rf"\b{ORDINALS[nth]}\b" if nth < len(ORDINALS) else "", rf"paragraph #?{nth}\b"]
    names.append(rf"\b{nth}(?:st|nd|rd|th)\b")
    if any(name and re.search(name, lower) for name in names):
        return None
    return (
        f"lost: it never says which paragraph (the {ORDINALS[nth] if nth < len(ORDINALS) else nth})"
    )
