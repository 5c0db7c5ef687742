"""Model and seed text meets only work linear in its length (issue #21, item 1).

A stuck model sends a megabyte of newlines or spaces; a pattern that backtracks over such a
run took 38 s on 1,000 newlines and over a minute on `#` and 2,000 spaces, on the event loop.
Two kinds of test here (tests/run/test_run.py has the third: `evol run` with megabyte replies
among normal ones sends no request twice):

- the patterns rewritten to be linear (possessive runs, unrolled loops, a paragraph scan)
  give what the backtracking ones gave, on short texts made of the pieces they look for;
- every cleaning, parsing and scoring function grows at most linearly on adversarial shapes
  (a ratio of CPU times, see `test_text_work_grows_linearly_on_adversarial_shapes`), and
  finishes on a megabyte of each in a child process that is killed after two minutes.
"""

from __future__ import annotations

import gc
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from evol.method import cleaning, elimination, verdicts
from evol.method.cleaning import clean_reply, clean_rewrite
from evol.method.dedup import DuplicateIndex
from evol.method.elimination import EliminationRules, check_answer, check_rewrite
from evol.method.leaks import LeakDetector
from evol.method.prompts import PromptSet
from evol.method.textstats import estimate_tokens, normalize, tokens, word_count, words
from evol.method.verdicts import parse_verdict
from evol.quality import readings
from evol.quality.readings import read_number, read_ranking

# -- the patterns as they were, the reference for what the linear ones must give -------------

_OLD = {
    "think": re.compile(
        r"^\s*<(?P<tag>think|thinking|reasoning)>(?P<thought>.*?)(?:</(?P=tag)>|\Z)",
        re.DOTALL | re.IGNORECASE,
    ),
    "think_tail": re.compile(
        r"^(?P<thought>(?:(?!<think>).)*?)</think>", re.DOTALL | re.IGNORECASE
    ),
    "preamble": re.compile(
        r"^\s*(?:(?:sure|certainly|of course|absolutely|okay|ok|great|alright|gladly)\b[!,.]*\s*)?"
        r"(?:here(?:'s|\s+is|\s+are)|below\s+is|the\s+following\s+is)\b"
        r"[^\n:]{0,60}\b(?:version|instruction|prompt|question|task|request|rewrite|rewritten"
        r"|revised|rephrased)\b[^\n:]{0,40}:\s*",
        re.IGNORECASE,
    ),
    "interjection": re.compile(
        r"^\s*(?:sure|certainly|of course|absolutely|okay|ok|great|alright|gladly)[!.]*\s*\n",
        re.IGNORECASE,
    ),
    "label": re.compile(
        r"^\s*(?:#+\s*)?(?:\*\*|__)?\s*#?\s*(?:(?:the|my|your)\s+)?"
        r"(?:(?:new|rewritten|revised|evolved|created|updated|improved|modified|final|harder"
        r"|deeper|more\s+complex|complicated|concretized)\s+)?"
        r"(?:version\s+of\s+the\s+)?(?:instruction|prompt|question|task|request)\s*#?\s*"
        r"(?:(?:is|reads|would\s+be)\s*)?(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?\s*",
        re.IGNORECASE,
    ),
    "afterword": re.compile(
        r"\n\s*\n\s*(?:\*\*|__)?(?:(?:this|my)\s+(?:new\s+|rewritten\s+|revised\s+|updated\s+"
        r"|evolved\s+|modified\s+)?(?:version|instruction|prompt|rewrite|revision)\b"
        r"|the\s+(?:new|rewritten|revised|updated|evolved|modified)\s+"
        r"(?:version|instruction|prompt)\b"
        # Since issue #24 a note is an afterword only when it speaks of the rewrite.
        r"|note\s*:\s*(?:\*\*|__)?\s*(?:i\b|i've\b|this\b|these\s+changes\b|my\b"
        r"|the\s+(?:new|rewritten|revised|original)\b)"
        r"|explanation\s*:|changes?(?:\s+made)?\s*:)[^\n]*(?:\n[^\n]*)*\s*$",
        re.IGNORECASE,
    ),
    "fence": re.compile(r"^\s*```[\w+-]*[ \t]*\n(?P<body>.*?)\n```\s*$", re.DOTALL),
    "leading": re.compile(
        r"^[\W_]*(?:(?:verdict|answer|judgment|judgement|decision|result)\W+)?"
        r"(not equal|unequal|equal|different|the same|same)[\W_]*(?:[.!:\n]|$)"
    ),
    "range": re.compile(r"\b\d{1,4}\s*(?:-|\u2013|to)\s*\d{1,4}\b", re.IGNORECASE),
    "bare": re.compile(r"[^\w]*" + readings._NUMBER + r"[^\w]*"),
    "out_of": re.compile(readings._NUMBER + r"\s*(?:/|out of)\s*10\b", re.IGNORECASE),
    "rank": re.compile(
        r"(?:#|\[|\bversion\s*#?)\s*(\d{1,4})\s*\]?\s*(?:[:=\-\u2013]\s*)?(?:score\s*[:=]?\s*)?"
        r"\**\s*" + readings._NUMBER,
        re.IGNORECASE,
    ),
}
_NEW_OUT_OF = re.compile(readings._NUMBER + r"\s*+(?:/|out of)\s*+10\b", re.IGNORECASE)

# Pieces of what the patterns look for, and the runs that made them backtrack.
PIECES = [
    *(" ", "  ", "\n", "\n\n", "\t", "\r\n", "\u00a0", "#", "##", "**", "__", "*", ":", "\uff1a"),
    *("the ", "The ", "my ", "new ", "New ", "more  complex ", "version of the ", "rewritten "),
    *("instruction", "Prompt", "task", " is", " reads", "would be", "version", "rewrite"),
    *("Sure", "sure!", "OK.", "here is", "Here's", "here are", "below is", "the following is"),
    *("```", "```text", "x", "body", "<think>", "</think>", "<THINKING>", "</thinking>"),
    *("<reasoning>", "</reasoning>", "<", "/", ">", "This version", "my new prompt", "Note:"),
    *("Note: I", "note:**this", "i've", "the original", "revision"),
    *("Changes made:", "explanation :", "[", "]", "(", "1", "12", "10", "5.5", "-", "\u2013"),
    *("to", "out of", "=", "score", "Score: ", "Version #", "not equal", "unequal", "equal"),
    *("verdict", "different", "the same", ".", "!", "?", "'", '"', "a", "\u212a"),
]
PIECEWISE = st.lists(st.sampled_from(PIECES), max_size=24).map("".join)
SHORT_TEXT = st.one_of(PIECEWISE, st.text(max_size=40))


def _found(match: re.Match[str] | None) -> tuple | None:
    return None if match is None else (match.span(), match.groups())


@settings(max_examples=1500, deadline=None)
@given(text=SHORT_TEXT)
@example(text="# \n  ## **  # new instruction  #  is ** :  ** x")
@example(text="Sure!\n\n  Here is   the rewritten instruction:\n\n x")
@example(text="```text \nbody\n```\n```  \n ")
@example(text="<think>a</thinking></THINK>x")
@example(text="a</think>b</think>")
@example(text="X \n \n\n **This version \n\nNote: y\n")
@pytest.mark.slow
def test_the_cleaning_patterns_match_what_the_backtracking_ones_matched(text: str) -> None:
    for name in ("think", "think_tail", "preamble", "interjection", "label", "fence"):
        pattern = getattr(cleaning, f"_{name.upper()}")
        assert _found(pattern.match(text)) == _found(_OLD[name].match(text)), name
    old = _OLD["afterword"].search(text)
    assert cleaning._afterword_start(text) == (old.start() if old else None)


@settings(max_examples=1500, deadline=None)
@given(text=SHORT_TEXT)
@example(text="[12 ]  = score: ** 3 #2: 4")
@example(text="Version #  3 \u2013 5, [1 to 10]")
@example(text="Verdict: not equal.")
@pytest.mark.slow
def test_the_scoring_and_verdict_patterns_match_what_the_backtracking_ones_matched(
    text: str,
) -> None:
    def spans(pattern: re.Pattern[str]) -> list[tuple]:
        return [_found(found) for found in pattern.finditer(text)]

    assert spans(readings._RANK) == spans(_OLD["rank"])
    assert spans(readings._RANGE) == spans(_OLD["range"])
    assert _found(readings._BARE.fullmatch(text)) == _found(_OLD["bare"].fullmatch(text))
    assert _found(_NEW_OUT_OF.search(text)) == _found(_OLD["out_of"].search(text))
    folded = normalize(text)
    assert _found(verdicts._LEADING.match(folded)) == _found(_OLD["leading"].match(folded))


# -- every function that reads model or seed text grows linearly -----------------------------

RULES = EliminationRules()
NO_GROWTH = EliminationRules(growth=False)
LEAKS: LeakDetector = PromptSet.load().leak_detector()
PARENT = "Explain how tides work, with one worked example."


def _dedup_lookup(text: str) -> None:
    for method in ("minhash", "rouge-l"):
        pool = DuplicateIndex(method=method)
        pool.add("a", "a", PARENT)
        pool.find(text, "b")


TEXT_WORK: dict[str, Callable[[str], object]] = {
    "clean_rewrite": lambda text: clean_rewrite(text, text[:40]),
    "clean_reply": clean_reply,
    "check_rewrite": lambda text: check_rewrite(PARENT, text, RULES, LEAKS, "deepen"),
    "check_rewrite (no growth bound)": lambda text: check_rewrite(
        text, f"{text} more", NO_GROWTH, LEAKS, "deepen"
    ),
    "check_answer": lambda text: check_answer(PARENT, text, RULES),
    "parse_verdict": parse_verdict,
    "read_number": lambda text: read_number(text, 10),
    "read_ranking": lambda text: read_ranking(text, 5),
    "words": words,
    "word_count": word_count,
    "tokens": tokens,
    "estimate_tokens": estimate_tokens,
    "dedup": _dedup_lookup,
    # Issue #24: closing words, echoed inputs and short answers that do no task, read directly
    # (through clean_rewrite and check_answer they see only a bounded tail or a short answer).
    "closing_words_start": cleaning.closing_words_start,
    "echoed_input_start": lambda text: cleaning.echoed_input_start(text, text[-40:]),
    "is_talk_about_the_rewrite": cleaning.is_talk_about_the_rewrite,
    "_does_not_answer": elimination._does_not_answer,
    "_clause_verdict": verdicts._clause_verdict,
}
# ROUGE-L of two long texts that share their words is quadratic by nature (bit-parallel, a
# 64th of it): the repeat rule reads at most REPEAT_MAX_WORDS of each, so it is bounded, not
# linear, and only the megabyte test below runs it.
BOUNDED_WORK = {"check_answer (an echo)": lambda text: check_answer(text, text, RULES)}
UNITS = [
    *("\n", " ", "\t", "#", "*", "_", "[", "(", "[1", "[1 ", "# ", "#\n", "\n \n", "**", "__"),
    *("<think>", "</think>", "<think>a", "<", '"', "'", "`", "```\n", "here is ", "1", "1 "),
    *("1-", "10/", "Sure! Here is the new instruction: ", "This version ", "Note: ", "score: "),
    *("version #", "not equal ", ":", "\u00a0", "\r\n", "a ", "word ", "don't "),
    *("Let me know ", "Hope this helps! ", "I can ", "Input: ", "(none)", "---\n", ". ", "? "),
    *("could you ", "not the same, ", "i'd be happy to help ", "### Input\n", "\u2014"),
]
PREFIXES = ["", "a", "#", "[1", "<think>", "```\n", "Sure!", "Explain tides.", "Verdict:"]
SUFFIXES = ["", "x", "\n\nThis version adds x", "</think>", "\n```", " 5", ":", "?"]
SUFFIXES += [" Let me know if you want more.", "\n\nInput: N/A", "\n---", " so: not equal."]
GROWTH = 16  # the large text is this many times the small one
# Linear work grows at most GROWTH times (less where a constant part dominates); quadratic
# work GROWTH**2 = 256 times, cubic 4,096. The bound sits a factor of 4 from each.
MAX_GROWTH = 64
SHAPES = st.tuples(
    st.sampled_from(PREFIXES),
    st.lists(st.sampled_from(UNITS), min_size=1, max_size=4).map("".join),
    st.sampled_from(SUFFIXES),
    st.integers(min_value=32, max_value=256),
)


def _cpu_seconds(work: Callable[[str], object], text: str, calls: int) -> float:
    """CPU time of this thread for `calls` calls of `work(text)`, garbage collection off."""
    gc.disable()
    try:
        start = time.thread_time()
        for _ in range(calls):
            work(text)
        return time.thread_time() - start
    finally:
        gc.enable()


def _growth(
    work: Callable[[str], object], small: str, large: str, *, bound: float = MAX_GROWTH
) -> float:
    """How many times longer one call on `large` takes than one on `small`, by CPU time.

    The small text is called often enough to take 2 ms (a clock's tick and the call overhead
    vanish in it), the large one as much less often as it is longer. Noise on a loaded machine
    only ever adds time, so the least of a few tries is kept; a try within `bound` ends it.
    """
    calls = 1
    while _cpu_seconds(work, small, calls) < 0.002 and calls < 1 << 16:
        calls *= 2
    large_calls = max(1, calls * len(small) // len(large))
    best = float("inf")
    for _ in range(5):
        per_small = _cpu_seconds(work, small, calls) / calls
        per_large = _cpu_seconds(work, large, large_calls) / large_calls
        best = min(best, per_large / max(per_small, 1e-9))
        if best <= bound:
            break
    return best


@settings(max_examples=25, deadline=None, derandomize=True)
@given(shape=SHAPES)
@example(shape=("a", "\n", "", 64))  # the afterword pattern: cubic
@example(shape=("", "#", " ", 64))  # (unit repeated, then the suffix) the label: cubic
@example(shape=("#", " ", "", 64))
@example(shape=("[1", " ", "", 64))  # the ranking pattern: cubic
@example(shape=("<think>", "a", "", 64))
@example(shape=("```\n", "a\n", "", 64))
@example(shape=("Explain tides.", "\n \n", "Note: x", 64))
@pytest.mark.slow
def test_text_work_grows_linearly_on_adversarial_shapes(shape: tuple[str, str, str, int]) -> None:
    """Each function on a shape of n and of 16 n characters: the second may take at most 64
    times as long (linear: 16; quadratic: 256).

    A ratio of CPU times of this very thread, not a wall-clock limit: it does not depend on
    how fast or how loaded the machine is, only on how the work grows. `re` cannot count its
    steps, and google-re2 lacks the lookarounds and backreferences these patterns use, so
    linearity is shown by growth; the megabyte test below is the backstop.
    """
    prefix, unit, suffix, size = shape
    repeats = max(1, size // len(unit))
    small = prefix + unit * repeats + suffix
    large = prefix + unit * (repeats * GROWTH) + suffix
    for name, work in TEXT_WORK.items():
        growth = _growth(work, small, large)
        assert growth <= MAX_GROWTH, f"{name} on {shape}: {growth:.0f} times for 16 times the text"


@pytest.mark.parametrize("instruction", [PARENT, " ".join([PARENT] * 20)])
def test_an_answer_is_read_no_further_than_its_rules_need(instruction: str) -> None:
    """An answer 64 times longer costs at most 8 times as much (reading it all: about 64)."""
    sentence = "Tides rise and fall twice a day as the moon pulls the oceans. "
    growth = _growth(
        lambda answer: check_answer(instruction, answer, RULES),
        sentence * 10,
        sentence * 640,
        bound=8,
    )
    assert growth <= 8, f"{growth:.0f} times for 64 times the answer"


MEGABYTE = 1_000_000
MEGABYTE_SHAPES = {
    "newlines": "a" + "\n" * MEGABYTE + "b",
    "spaces after #": "#" + " " * MEGABYTE + "x",
    "spaces after [1": "[1" + " " * MEGABYTE,
    "blank paragraphs": "Explain tides." + "\n \n" * (MEGABYTE // 3) + "Note: x",
    "think tags": "<think>" * (MEGABYTE // 7),
    "an open think block": "<think>" + "a<" * (MEGABYTE // 2),
    "a fence": "```\n" + "a\n" * (MEGABYTE // 2) + "```x",
    "here is": "Sure! here is " * (MEGABYTE // 14),
    "markers": "# **\n\n [1 ( \"'\t_ *" * (MEGABYTE // 20),
    "digits": "1 " * (MEGABYTE // 2),
    "closing sentences": "Hope this helps! " * (MEGABYTE // 17),
    "echoed inputs": "\nInput: (none)" * (MEGABYTE // 14),
    "asking sentences": "Could you share the data? " * (MEGABYTE // 25),
    "verdict clauses": "not the same, equal; " * (MEGABYTE // 21),
}


@pytest.mark.slow  # 14-25 s of CPU on 2 loaded cores; its child also imports evol afresh
@pytest.mark.heavy  # left out of make mutate
def test_a_megabyte_of_each_shape_is_read_by_every_function() -> None:
    """The backstop: each function on a megabyte of each shape, in a child process killed
    after 600 s: a guard against hours, not a pace (14-25 s of CPU, but it timed out at 120 s
    beside a mutation run and two test workers). Linear work takes well under a second a call;
    the cubic patterns took hours."""
    script = (
        f"import {__name__} as t\n"
        "for shape in t.MEGABYTE_SHAPES.values():\n"
        "    for work in [*t.TEXT_WORK.values(), *t.BOUNDED_WORK.values()]:\n"
        "        work(shape)\n"
        "print('done')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[__name__.count(".")],  # the folder that holds tests/
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
