"""The leak rule's detector (evol.method.leaks): the phrases and n-grams it reads off the templates,
the paper's markers, and which leak it names; a phrase the parent held is no leak."""

from __future__ import annotations

import pytest

from evol.method.elimination import EliminationRules, Reason, check_rewrite
from evol.method.leaks import PAPER_MARKERS, LeakDetector
from evol.method.prompts import PromptSet
from evol.method.textstats import normalize

ON = EliminationRules()


@pytest.mark.parametrize("marker", PAPER_MARKERS)
def test_the_papers_markers_are_always_leaks(marker: str) -> None:
    assert marker in LeakDetector.from_templates([]).phrases


TEMPLATE = (
    "You rewrite <Task> instructions.\n"  # 4 words with the tag: a phrase
    "$instruction\n"
    "Keep ${input} as it is\n"  # placeholders are not words: "keep as it is"
    "two words\n"  # too short to be a phrase
    "Answer in plain words with no title or label please\n"  # long: its 6-grams
    "</Task>\n"
)


def test_the_phrases_and_ngrams_of_a_template_are_exactly_these() -> None:
    leaks = LeakDetector.from_templates([TEMPLATE])
    assert leaks.phrases == tuple(
        dict.fromkeys(
            [
                *PAPER_MARKERS,
                "<task>",
                "</task>",
                "you rewrite task instructions",
                "keep as it is",
            ]
        )
    )
    words = ["answer", "in", "plain", "words", "with", "no", "title", "or", "label", "please"]
    assert leaks.ngrams == {tuple(words[i : i + 6]) for i in range(len(words) - 5)}


@pytest.mark.parametrize(
    ("line", "phrase"),
    [
        ("one two", None),  # 2 words
        ("one two three", "one two three"),  # 3: the shortest phrase
        ("one two three four five", "one two three four five"),  # 5: the longest
        ("one two three four five six", None),  # 6: only its 6-gram
        ("one two $instruction three", "one two three"),
        ("one two ${input} three", "one two three"),
    ],
)
def test_a_template_line_is_a_phrase_from_three_to_five_words(
    line: str, phrase: str | None
) -> None:
    leaks = LeakDetector.from_templates([line])
    assert leaks.phrases[len(PAPER_MARKERS) :] == ((phrase,) if phrase else ())
    six = line.split() == ["one", "two", "three", "four", "five", "six"]
    assert leaks.ngrams == ({tuple(line.split())} if six else set())


def test_blank_and_repeated_phrases_are_dropped() -> None:
    leaks = LeakDetector(["", "  ", "Given Prompt", "given   prompt", "<b>"])
    assert leaks.phrases == ("given prompt", "<b>")


@pytest.mark.parametrize(
    ("parent", "child", "fired"),
    [
        ("Explain X.", "Explain X, as the given prompt asks.", "given prompt"),
        ("Explain X.", "Explain X to a forgiven promptly person.", None),  # whole words only
        ("Explain X.", "Explain X. #Given Prompt#", "#given prompt#"),  # tags and marks first
        ("Explain X.", "Explain X in <task> form.", "<task>"),
        ("Explain the given prompt.", "Explain the given prompt twice.", None),  # its parent's
        ("Explain the given prompt.", "Explain the given prompt in <task> form.", "<task>"),
        ("Explain <task>.", "Explain <task>, as the given prompt asks.", "given prompt"),
        ("Explain X.", "Explain X: answer in plain words with no title.", "answer in plain words with no"),
        ("Answer in plain words with no title", "Answer in plain words with no title!", None),
        ("Explain X.", "In plain words with no title or label, explain X.", "in plain words with no title"),
    ],
)  # fmt: skip
def test_the_leak_named_is_the_first_new_one(parent: str, child: str, fired: str | None) -> None:
    leaks = LeakDetector.from_templates([TEMPLATE])
    failure = check_rewrite(parent, child, ON, leaks)
    if fired is None:
        assert failure is None
        return
    assert failure and failure.reason == Reason.PROMPT_LEAK
    assert failure.detail == f"the rewrite copies the prompt's words {fired!r}"


def test_template_lines_become_phrases_at_their_edges() -> None:
    detector = LeakDetector.from_templates(
        [
            "two words\n"  # too short to be distinctive
            "exactly three words\n"
            "the five words line here\n"  # five: whole
            "a line of six words here\n"  # six: its one 6-gram
            "Keep $instruction as it stands\n"  # the placeholder is no word
            "<Context> and <INPUT>\n"
        ]
    )
    assert "two words" not in detector.phrases
    assert {"exactly three words", "the five words line here"} <= set(detector.phrases)
    assert "keep as it stands" in detector.phrases
    assert "a line of six words here" not in detector.phrases
    assert ("a", "line", "of", "six", "words", "here") in detector.ngrams
    assert {"<context>", "<input>"} <= set(detector.phrases)


def test_only_six_words_in_a_row_of_a_long_line_are_a_copy() -> None:
    detector = LeakDetector.from_templates(["one two three four five six seven\n"])
    assert detector.find("Do it.", "Do it: three four five six seven.") is None  # five words
    assert detector.find("Do it.", "Do it: two three four five six seven.") == (
        "two three four five six seven"
    )


def test_a_leaked_phrase_of_words_is_hidden_only_by_the_same_whole_words_in_the_parent() -> None:
    detector = LeakDetector(["given prompt"])
    assert detector.find("Praise the forgiven prompts", "Praise the given prompt") == "given prompt"
    assert detector.find("Praise the given prompt", "Praise the given prompt now") is None


MIXED_TEMPLATE = """<Mixed_Tag>
Rewrite $instruction now please
Rewrite ${instruction} again please
One two three
one two three four five six
alpha bravo charlie delta echo foxtrot golf
</Mixed_Tag>"""


def test_a_template_yields_its_tags_its_short_lines_whole_and_the_6_grams_of_long_ones() -> None:
    detector = LeakDetector.from_templates([MIXED_TEMPLATE])
    # Tags in any case; placeholders are not words; 3 to 5 words whole; 6 or more as 6-grams.
    assert detector.phrases == (
        *(normalize(marker) for marker in PAPER_MARKERS),
        "<mixed_tag>",
        "</mixed_tag>",
        "rewrite now please",
        "rewrite again please",
        "one two three",
    )
    assert detector.ngrams == {
        ("one", "two", "three", "four", "five", "six"),
        ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot"),
        ("bravo", "charlie", "delta", "echo", "foxtrot", "golf"),
    }


@pytest.mark.parametrize(
    "child",
    [
        "golf",  # the last word of a long template line
        "charlie delta echo foxtrot golf",  # its last five
        "Explain why the sky is blue",
    ],
)
def test_fewer_than_6_words_of_a_long_template_line_is_no_leak(child: str) -> None:
    assert LeakDetector.from_templates([MIXED_TEMPLATE]).find("Name a colour", child) is None


def test_a_copied_6_gram_is_named_as_its_words() -> None:
    detector = LeakDetector.from_templates([MIXED_TEMPLATE])
    found = detector.find("Name a colour", "Name a colour: alpha bravo charlie delta echo foxtrot")
    assert found == "alpha bravo charlie delta echo foxtrot"


def test_a_phrase_of_words_is_looked_for_in_the_parents_words_not_its_punctuation() -> None:
    # The parent said "given, prompt": as words it holds the phrase, so the child copies nothing.
    detector = LeakDetector(["given prompt"])
    assert detector.find("Praise the given, prompt", "Praise the given prompt twice") is None
    assert detector.find("Praise the prompt", "Praise the given prompt") == "given prompt"


def test_a_phrase_of_words_is_in_the_parent_only_as_whole_words() -> None:
    detector = LeakDetector(["given prompt"])
    assert detector.find("Praise the forgiven prompts", "Praise the given prompt") == (
        "given prompt"
    )


LEAKS = PromptSet.load().leak_detector()


# Written out rather than read from the code: deleting one there must fail here.
EXPECTED_LEAK_PHRASES = [
    "#given prompt#",
    "#rewritten prompt#",
    "#created prompt#",
    "given prompt",
    "rewritten prompt",
    "created prompt",
    "rewritten instruction",
    "original instruction",
    "new instruction:",
    "input: (none)",
    "rewritten version",
    "rewrite the instruction",
    "no heading",
    # from the shipped templates
    "<instruction>",
    "</instruction>",
    "<input>",
    "</input>",
    "<first>",
    "<second>",
    "the rewrite must",
    "the new instruction must",
]


@pytest.mark.parametrize("phrase", EXPECTED_LEAK_PHRASES)
def test_each_expected_leak_phrase_is_caught(phrase: str) -> None:
    child = f"Describe the tides. {phrase.upper()} Use two examples."
    failure = check_rewrite("Describe the tides.", child, EliminationRules(), LEAKS)
    assert failure and failure.reason == Reason.PROMPT_LEAK, phrase
