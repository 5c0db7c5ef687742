"""The verifiable-constraint registry: IFEval's checkers on google-research's own test cases,
the kwargs drawn for each id, the RLVR label, and the sentence splitter's data provided offline.
(Drawing a constraint: test_drawing.py; pairs no answer can meet: test_contradictions.py.)"""

from __future__ import annotations

import copy
import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("if_verifiable", reason="the verify extra")

from evol.errors import ConstraintError
from evol.method import ifeval_library  # noqa: E402
from evol.method.constraints import (
    KWARGS_SCHEMA,
    Constraint,
    check,
    from_ground_truth,
    ground_truth,
)
from tests.support.constraint_cases import AT_LEAST, LESS, c
from tests.support.verifiable import (
    ifeval_input,
    open_instruct_constraints,
    verify_in_child,
    write_rows,
)

# The punkt_tab model goes to a cache of this module's, not the developer's ~/.cache.
pytestmark = pytest.mark.usefixtures("private_cache")


# -- google-research's instructions_test.py, transcribed (registered ids only) ------------------

BULLETS_1 = """
  A Markdown bullet point is a way of formatting text to create a list. To
  create a bullet point, start each line with an asterisk (*). For example:
  * This is a bullet point.
  *(no space required)Another bullet point.
  * (no newline ending required)Another bullet point.
  markdown bullet points are often used to create to-do lists or to list items
  in a step-by-step guide."""
BULLETS_2 = """
  Check that inline asterisk (*), *, will not be counted. Only * that starts a
  bullet list will be counted:
    * This is a bullet point.
    * Another bullet point.
    . dot is not counted"""
BULLETS_4 = """
  Here are three markdown bullets:
  - I am a large language model, also known as a conversational AI.
  - I am trained on a massive amount of text data, and I am able to communicate.
  -I am still under development, but I am learning new things every day."""
BULLETS_5 = """
  Paragraph 1
  ***
  Paragraph 2
  ***
  Paragraph 3
  * only one bullet point
  """
HIGHLIGHTS_1 = """
  To highlight text with Markdown, you can use the * character before and after
  the text you want to highlight. For example, if you want to highlight the
  word `hello`, you would type:*hello*, You can also use the ** character to
  create bold text. For example, if you want to bold the word `hello`, you
  would type: **hello** """
HIGHLIGHTS_2 = """
  Sure, here are the numerical methods for solving partial differential
  equations highlighted with Markdown:
  *Finite difference methods
  *Finite element methods*
  *Boundary element methods
  *Monte Carlo methods
  I hope this helps!"""
HIGHLIGHTS_3 = """
  There is allowed to be *two different* highlighted *sections in the same*
  line. **This is also true** for **double markdown highlights.**
  """
SECTIONS_1 = """
  Your response must have multiple sections. Mark the beginning of each section
  with "Section X", such as:
  Section 1
  [content of section 1]
  Section 2
  [content of section 2]"""
SECTIONS_2 = """SECTION 1
  [content of section 1]
  SECTION 2
  [content of section 2]"""
PARAGRAPHS_2 = """
          ***
  paragraph 1
          ***
      paragraph 2
          ***
      paragraph 3"""
PARAGRAPHS_4 = """
  paragraph 1
          ***
      paragraph 2
          ***
          ***"""
POSTSCRIPT_1 = """
  I will do my best to follow your instructions and always start my responses
  with "My response is:". I will try to be as consistent as possible, but
  please be patient with me if I make a mistake. I am still under development,
  and I am always learning new things.

  P.S. I hope this is what you were looking for."""
POSTSCRIPT_2 = """
  Sure, here is my response with a postscript starting with P.P.S.:

  My response is: I hope this answers your question.

  P.P.S. I am always happy to answer any other questions you may have.

  Do you have any other questions for me?"""
POSTSCRIPT_5 = """
  The mysteries of space and time are mysterious.
  P. S. Sometimes there are even spaces between P. and S..
  """
PARIS_1 = """
  Paris is a city of beauty and romance. The romantic river Seine winds its way
  through the city, past iconic landmarks like the Eiffel Tower and the Louvre
  Museum, where the Mona Lisa resides. Whether you're taking a boat cruise down
  the river or simply strolling along the banks, you're sure to be captivated
  by the city's charm."""
PARIS_2 = """
  Paris is a city of beauty, romance, and history. It is home to some of the
  most iconic landmarks in the world, including the Eiffel Tower, the Louvre
  Museum, and the Notre Dame Cathedral. The city is also known for its romantic
  river cruises, its delicious food, and its stylish people.
  """
NAZIS = """
  The Nazis came to power in 1933 through a combination of legal and illegal
  means. Hitler was appointed chancellor by President Paul von Hindenburg, and
  the Nazis quickly consolidated their power by passing a series of laws that
  restricted the rights of opposition parties and individuals. By 1934, Hitler
  had become dictator of Germany.
  """
GPT = """
  GPT, or Generative Pre-trained Transformer, is a family of neural network
  models that uses the transformer architecture. GPT models are trained on a
  massive dataset of text and code, and can be used for a variety of tasks,
  including text generation, translation, and question answering. GPT models
  have been shown to be very effective at these tasks, and are being used by
  a variety of companies and organizations like Google.
  """
FIRST_WORD_4 = """
  Wow this is a very long response.

  I can't believe there is more than three paragraphs.

  Really more than three? No way!

  I can't believe it but I guess I am living proof.

  Haha, you go that right."""
FIRST_WORD_5 = FIRST_WORD_4.replace("Really more", '"Really?! more').replace(
    "No way!\n", 'No way!"\n'
)
FIRST_WORD_6 = FIRST_WORD_4.replace("Really more", "Rea!lly more")

UPSTREAM_CASES = [
    (c("language:response_language", language="en"), "The response is English", True),
    (c("language:response_language", language="es"), "Desayunamos en McDonald's hoy", True),
    (c("language:response_language", language="en"), "Today we visit the Louvre", True),
    (c("length_constraints:number_sentences", num_sentences=4, relation=LESS), "xx,x. xx,x! xx/x. x{x}x?", False),
    (c("length_constraints:number_sentences", num_sentences=5, relation=LESS), "xxxx. xx,x! xxxx. x(x)x?", True),
    (c("length_constraints:number_sentences", num_sentences=4, relation=AT_LEAST), "xxxx. xx,x! xx|x. x&x x?", True),
    (c("length_constraints:number_sentences", num_sentences=5, relation=AT_LEAST), "xx-x. xx,x! xx}x. x,xx?", False),
    (c("detectable_content:number_placeholders", num_placeholders=5), "Sure, here is a short template with 5 placeholders:\n[Name]\n[Email]\n[Phone]\n[Address]\n[Website]\nThis template can be used for a variety of purposes, such ascreating a contact list, sending out surveys, or creating a sign-up form.", True),
    (c("detectable_content:number_placeholders", num_placeholders=7), "My [adjective] [noun] is [adjective] [noun]. I [verb] and [verb].", False),
    (c("detectable_format:number_bullet_lists", num_bullets=3), BULLETS_1, True),
    (c("detectable_format:number_bullet_lists", num_bullets=2), BULLETS_2, True),
    (c("detectable_format:number_bullet_lists", num_bullets=3), BULLETS_4, True),
    (c("detectable_format:number_bullet_lists", num_bullets=1), BULLETS_5, True),
    (c("detectable_format:constrained_response"), "\n My answer is no.\n", True),
    (c("detectable_format:constrained_response"), "My answer is no.   ", True),
    (c("detectable_format:number_highlighted_sections", num_highlights=2), HIGHLIGHTS_1, True),
    (c("detectable_format:number_highlighted_sections", num_highlights=2), HIGHLIGHTS_2, False),
    (c("detectable_format:number_highlighted_sections", num_highlights=4), HIGHLIGHTS_3, True),
    (c("detectable_format:multiple_sections", section_spliter="Section", num_sections=3), SECTIONS_1, False),
    (c("detectable_format:multiple_sections", section_spliter="SECTION", num_sections=2), SECTIONS_2, True),
    (c("length_constraints:number_paragraphs", num_paragraphs=3), "\n  paragraph 1\n  ***\n  paragraph 2\n  ***\n  paragraph 3", True),
    (c("length_constraints:number_paragraphs", num_paragraphs=3), PARAGRAPHS_2, True),
    (c("length_constraints:number_paragraphs", num_paragraphs=2), PARAGRAPHS_4, False),
    (c("detectable_content:postscript", postscript_marker="P.S."), POSTSCRIPT_1, True),
    (c("detectable_content:postscript", postscript_marker="PS:"), POSTSCRIPT_1, False),
    (c("detectable_content:postscript", postscript_marker="P.P.S"), POSTSCRIPT_2, True),
    (c("detectable_content:postscript", postscript_marker="P.P.S"), "\n  p.p.s what if the entire response was lower case letters?\n  ", True),
    (c("detectable_content:postscript", postscript_marker="P.S."), POSTSCRIPT_5, True),
    (c("keywords:existence", keywords=["romantic", "river", "Mona Lisa"]), PARIS_1, True),
    (c("keywords:existence", keywords=["romantic", "river", "Mona Lisa"]), PARIS_2, False),
    (c("keywords:frequency", keyword="  keyword ", frequency=4, relation=LESS), "\n  keyword, Keyword, KEYWORD\n  ", True),
    (c("keywords:frequency", keyword="  keyword ", frequency=3, relation=AT_LEAST), "\n  keyword, Keyword, KEYWORD\n  ", True),
    (c("keywords:frequency", keyword="KEYWORD", frequency=4, relation=AT_LEAST), "\n    *keyword\n    *Keyword\n    *KEYWORD\n  ", False),
    (c("length_constraints:number_words", num_words=8, relation=LESS), "\n  d3sCRi7 lArge lAnguagE M0del w1tH 20 w0RdS.", True),
    (c("length_constraints:number_words", num_words=16, relation=LESS), "\n  L4RGE L4NGU4GE M0DEL: AI syst3m th4t und3rstands, g3n3r4tes, or tr4nsforms\n  l4ngu4g3 b4s3d on pr3vious l3arning & d4t4.", False),
    (c("length_constraints:number_words", num_words=16, relation=AT_LEAST), "\n  L4RGE L4NGU4GE M0DEL: AI syst3m th4t und3rstands, g3n3r4tes, or tr4nsforms\n  l4ngu4g3 b4s3d on pr3vious l3arning & d4t4.", True),
    (c("length_constraints:nth_paragraph_first_word", num_paragraphs=3, nth_paragraph=2, first_word="I"), "\n  paragraph 1\n\n  I paragraph 2\n\n  paragraph 3", True),
    (c("length_constraints:nth_paragraph_first_word", num_paragraphs=3, nth_paragraph=2, first_word="I"), "\n  paragraph 1\n\n  I paragraph 2", False),
    (c("length_constraints:nth_paragraph_first_word", num_paragraphs=3, nth_paragraph=2, first_word="I"), "\n  paragraph 1\n\n  fail paragraph 2\n\n  paragraph 3", False),
    (c("length_constraints:nth_paragraph_first_word", num_paragraphs=5, nth_paragraph=5, first_word="haha"), FIRST_WORD_4, True),
    (c("length_constraints:nth_paragraph_first_word", num_paragraphs=5, nth_paragraph=3, first_word="Really"), FIRST_WORD_5, True),
    (c("length_constraints:nth_paragraph_first_word", num_paragraphs=5, nth_paragraph=3, first_word="Really"), FIRST_WORD_6, False),
    (c("keywords:forbidden_words", forbidden_words=["HOUSE", "POWER", "BECOME"]), NAZIS, False),
    (c("keywords:forbidden_words", forbidden_words=["HOUSE", "POWER", "BECOME"]), GPT, True),
    (c("keywords:forbidden_words", forbidden_words=["GOOGLE", "TEXT"]), NAZIS, True),
    (c("keywords:forbidden_words", forbidden_words=["GOOGLE", "TEXT"]), GPT, False),
    (c("keywords:forbidden_words", forbidden_words=["GENE", "TRANSFORM"]), GPT, True),
    (c("combination:two_responses"), "\n  This is response 1.\n  ******\n  This is response 2.\n  ", True),
    (c("combination:two_responses"), "\n  This is response 1.\n  ******\n  This is response 1.\n  ", False),
    (c("combination:two_responses"), "\n  This is response 1.\n  ******\n  This is response 2.\n  ******\n  This is response 3.\n  ", False),
    (c("combination:two_responses"), "\n  ******\n  Response 1.\n  ******\n  ******\n  Response 2.\n  ******\n  ", False),
    (c("combination:two_responses"), "\n  ******\n  Response 1\n  ******\n  Response 2\n  ******\n  ", True),
    (c("combination:repeat_prompt", prompt_to_repeat="Write a CL description."), "Write a CL description. Hi, Le and TJ, please\n  check this out. Thanks.\n  ", True),
    (c("combination:repeat_prompt", prompt_to_repeat="Write a CL description."), "Hi, Le and TJ. Write a CL description. Thanks.\n  ", False),
    (c("startend:end_checker", end_phrase="\n  Any more questions?\n  "), "\n  The answer is 7. Any more questions?\n  ", True),
    (c("startend:end_checker", end_phrase="\n  This is the end.\n  "), "\n  At the end of this prompt I am required to say that this is the end.\n  ", True),
    (c("startend:end_checker", end_phrase="\n  This will fail.\n  "), "\n  This will fail. Paris is cool.\n  ", False),
    (c("detectable_format:title"), "\n  <<Song of Joy>>\n  La la la. Happy song.\n  ", True),
    (c("detectable_format:title"), "\n  Is it fine for title to be at the end?\n  <<This is the title>>\n  ", True),
    (c("detectable_format:title"), "\n  << >>\n  There is no title.\n  ", False),
    (c("detectable_format:title"), "\n  <<This is not a title.\n  This is a paragraph.>>\n  ", False),
    (c("keywords:letter_frequency", letter="T", let_frequency=4, let_relation=AT_LEAST), "\n  There is the T. Four T's.\n  ", True),
    (c("keywords:letter_frequency", letter="a", let_frequency=4, let_relation=LESS), "\n  asdfghjkl!!aA\n  ", True),
    (c("keywords:letter_frequency", letter="p", let_frequency=4, let_relation=AT_LEAST), "\n  asdfghjkl!!aA\n  ", False),
    (c("change_case:english_capital"), "\n  THIS IS AN ENGLISH SENTENCE. EVERY LETTER IS CAPITALIZED!!! AMAZING.\n  ", True),
    (c("change_case:english_capital"), "\n  Every Word Is Capitalized.\n  ", False),
    (c("change_case:english_lowercase"), "\n  every letter is lowercase.\n  ", True),
    (c("change_case:english_lowercase"), "\n  Almost every letter is lowercase.\n  ", False),
    (c("punctuation:no_comma"), "\n  Every sentence is short. There is no need for a comma.\n  ", True),
    (c("punctuation:no_comma"), "\n  Since the start of time, people have always found a way to punctuate.\n  ", False),
    (c("change_case:capital_word_frequency", capital_frequency=3, capital_relation=AT_LEAST), "\n  HERE there are THREE FUlly CAPITAL words.\n  ", True),
    (c("change_case:capital_word_frequency", capital_frequency=5, capital_relation=LESS), "\n  THERE are Four FULLY CAPITAL WORDS. Many Others Are Only Partially So.\n  ", True),
    (c("change_case:capital_word_frequency", capital_frequency=4, capital_relation=LESS), "\n  THERE are Four FULLY CAPITAL WORDS. Many Others Are Only Partially So.\n  ", False),
    (c("startend:quotation"), '\n  "This entire message is wrapped in double quotation marks."\n  ', True),
    (c("startend:quotation"), '\n  "This message is wrapped in double quotation marks." But not everything.\n  ', False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("constraint", "answer", "expected"),
    UPSTREAM_CASES,
    ids=[f"{i}-{case[0].id}" for i, case in enumerate(UPSTREAM_CASES)],
)
def test_the_checker_agrees_with_google_researchs_own_test_cases(constraint, answer, expected):
    [verdict] = check(answer, [constraint])
    assert verdict.strict is expected
    assert verdict.constraint == constraint
    if expected:
        assert verdict.loose  # loose accepts whatever strict does


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('```json\n{"answer": 42}\n```', True),
        ('{"answer": 42}', True),
        ("The answer is 42.", False),
    ],
)
def test_the_json_checker_which_upstream_does_not_test(answer, expected):
    assert check(answer, [c("detectable_format:json_format")])[0].strict is expected


def test_every_registered_id_has_a_case():
    tested = {case[0].id for case in UPSTREAM_CASES} | {"detectable_format:json_format"}
    assert tested == set(ifeval_library.instruction_classes())


def test_loose_accepts_an_answer_without_its_first_line_where_strict_does_not():
    [verdict] = check(
        "Sure! here it is:\nevery word here is lowercase.", [c("change_case:english_lowercase")]
    )
    assert (verdict.strict, verdict.loose) == (False, True)


def test_an_empty_answer_meets_nothing():
    [verdict] = check("   \n", [c("punctuation:no_comma")])
    assert (verdict.strict, verdict.loose) == (False, False)


def test_language_detection_is_seeded_before_every_check():
    # Unseeded, langdetect called this English 296 times in 300 and something else 4 times.
    import langdetect

    langdetect.DetectorFactory.seed = None
    english = c("language:response_language", language="en")
    verdicts = {check("my answer is no", [english])[0].strict for _ in range(40)}
    assert len(verdicts) == 1
    assert langdetect.DetectorFactory.seed == 0


# -- what the library would skip or fill at random is refused ------------------------------------


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        (c("keywords:no_such_check"), "unknown constraint id 'keywords:no_such_check'"),
        (c("length_constraints:number_words", num_words=100), "kwargs missing relation"),
        (c("punctuation:no_comma", comma=1), "kwargs unknown comma"),
        (c("keywords:letter_frequency", letter="#", let_frequency=4, let_relation=AT_LEAST), "letter must be one ASCII letter, got '#'"),
        (c("keywords:letter_frequency", letter="é", let_frequency=4, let_relation=AT_LEAST), "letter must be one ASCII letter"),
        (c("length_constraints:nth_paragraph_first_word", num_paragraphs=2, nth_paragraph=3, first_word="we"), "nth_paragraph must be 1 to num_paragraphs (2), got 3"),
        (c("detectable_format:number_bullet_lists", num_bullets=-1), "num_bullets must be a count, got -1"),
        (c("length_constraints:number_words", num_words=100, relation="about"), "relation"),
        (c("keywords:existence", keywords=["(a+)+$"]), "keywords must be plain words, got '(a+)+$'"),
        (c("keywords:frequency", keyword="a*", frequency=1, relation=LESS), "keyword must be plain words"),
        (c("detectable_content:postscript", postscript_marker="(p+)+q"), "postscript_marker must be plain words"),
        (c("detectable_format:multiple_sections", section_spliter="[S]ection", num_sections=2), "section_spliter must be plain words"),
        (c("keywords:letter_frequency", letter="a", let_frequency=2, let_relation="at most"), "let_relation must be 'less than' or 'at least', got 'at most'"),
        (c("language:response_language", language="zh-TW"), "language must be one of IFEval's"),
        (c("keywords:existence", keywords="river"), "keywords must be a list of words, got 'river'"),
        (c("keywords:existence", keywords=["river", " "]), "keywords must be plain words, got ' '"),
        (c("length_constraints:number_sentences", num_sentences=2.0, relation=LESS), "num_sentences must be a count, got 2.0"),
        (c("combination:repeat_prompt", prompt_to_repeat=""), "prompt_to_repeat must be text"),
        (c("combination:repeat_prompt", prompt_to_repeat=["a list"]), "prompt_to_repeat must be text"),
    ],
)  # fmt: skip
def test_a_constraint_the_library_would_skip_or_randomise_is_refused(constraint, message):
    with pytest.raises(ConstraintError) as raised:
        check("any answer", [constraint])
    assert message in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("constraint", "met"),
    [
        (c("detectable_content:number_placeholders", num_placeholders=0), True),
        (c("keywords:letter_frequency", letter="z", let_frequency=0, let_relation=LESS), False),
        (c("keywords:letter_frequency", letter="z", let_frequency=0, let_relation=AT_LEAST), True),
    ],
)  # fmt: skip
def test_a_count_of_zero_is_checked_as_ifeval_checks_it(constraint: Constraint, met: bool) -> None:
    """IFEval draws a count afresh only where it is missing or negative: 0 is a count, checked
    (an answer has fewer than 0 of nothing), not refused as a broken constraint."""
    [verdict] = check("any answer", [constraint])
    assert verdict.strict is met


def test_loose_is_checked_only_where_strict_fails_and_agrees_with_ifevals_scorer():
    from if_verifiable.common import get_loose_transformations

    registry = ifeval_library.instruction_classes()
    answers = ["*Title*\nplain words here\nP.S. end", "Hello, world", "a\n\nb", "   ", "x"]
    for answer in answers:
        for instruction_id, draw in KWARGS_SCHEMA.items():
            constraint = c(instruction_id, **draw(random.Random(len(answer))))
            checker = registry[instruction_id](instruction_id)
            checker.build_description(**constraint.kwargs)
            expected = any(
                v.strip() and checker.check_following(v) for v in get_loose_transformations(answer)
            )
            assert check(answer, [constraint])[0].loose == expected


def test_none_kwargs_are_dropped_as_ifeval_data_writes_them():
    assert c("punctuation:no_comma", relation=None).kwargs == {}
    assert Constraint.model_validate({"id": "punctuation:no_comma", "kwargs": None}).kwargs == {}


# -- the kwargs drawn for each id -----------------------------------------------------------------


def test_nth_paragraph_never_exceeds_the_paragraph_count():
    rng = random.Random(0)
    draw = KWARGS_SCHEMA["length_constraints:nth_paragraph_first_word"]
    for _ in range(500):
        kwargs = draw(rng)
        assert 1 <= kwargs["nth_paragraph"] <= kwargs["num_paragraphs"]


def test_the_prompt_repeating_constraint_is_never_drawn():
    assert "combination:repeat_prompt" not in KWARGS_SCHEMA
    assert set(KWARGS_SCHEMA) | {"combination:repeat_prompt"} == set(
        ifeval_library.instruction_classes()
    )


# -- IFEval's conflict table, copied and left as it is ----------------------------------------------


def test_the_librarys_conflict_table_is_left_as_it_is():
    registry = ifeval_library._library()
    before = copy.deepcopy(registry.INSTRUCTION_CONFLICTS)
    ifeval_library.conflict_table.cache_clear()
    table = ifeval_library.conflict_table()
    assert before == registry.INSTRUCTION_CONFLICTS
    # The raw table has english_capital conflict with itself only; the copy is symmetric.
    assert before["change_case:english_capital"] == {"change_case:english_capital"}
    assert "change_case:english_lowercase" in table["change_case:english_capital"]


# -- the RLVR label -----------------------------------------------------------------------------


def test_ground_truth_reads_the_same_as_a_python_literal_and_as_json():
    import ast

    carried = [
        c("keywords:existence", keywords=["café", "naïve"]),
        c("startend:end_checker", end_phrase='Say "bye" \\ then stop.'),
        c("punctuation:no_comma"),
    ]
    label = ground_truth(carried)
    assert ast.literal_eval(label) == json.loads(label)
    assert from_ground_truth(label) == carried
    # open-instruct's datasets write the Python repr, None for a constraint without kwargs.
    python_repr = str([{"instruction_id": ["punctuation:no_comma"], "kwargs": [None]}])
    assert from_ground_truth(python_repr) == [c("punctuation:no_comma")]


# -- NLTK's sentence splitter, offline -------------------------------------------------------------

OFFLINE_CHECK = """
import json, socket, sys
import nltk
from evol.method import constraints, contradictions, ifeval_library

def no_network(*args, **kwargs):
    raise OSError("network use in the offline check")

socket.socket = socket.create_connection = socket.getaddrinfo = no_network
ifeval_library._library()
root = str(ifeval_library.punkt_data_root())
first = nltk.data.path[0]
nltk.data.path[:] = [root]  # nowhere else to find punkt_tab
sentences = constraints.Constraint(
    id="length_constraints:number_sentences", kwargs={"num_sentences": 3, "relation": "at least"})
capitals = constraints.Constraint(
    id="change_case:capital_word_frequency",
    kwargs={"capital_frequency": 2, "capital_relation": "at least"})
verdicts = constraints.check("Dr. Smith came. He saw NASA and the UN. Then he left.", [sentences, capitals])
print(json.dumps({"root": root, "first": first, "strict": [v.strict for v in verdicts]}))
"""


def run_offline(tmp_path: Path, cache: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("NLTK_DATA", "HOME")} | {
        "XDG_CACHE_HOME": str(cache),
        "HOME": str(tmp_path / "home"),
    }
    done = subprocess.run(
        [sys.executable, "-c", OFFLINE_CHECK], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "nltk_data" not in done.stderr.replace(str(cache), "")  # no download was tried
    return json.loads(done.stdout)


@pytest.mark.slow
def test_the_sentence_splitter_works_offline_from_evols_cache(tmp_path: Path):
    cache = tmp_path / "cache"
    first = run_offline(tmp_path, cache)
    # "Dr." does not end a sentence: Punkt's abbreviations are there.
    assert first["strict"] == [True, True]
    model = Path(first["root"]) / "tokenizers" / "punkt_tab" / "english"
    assert Path(first["root"]).is_relative_to(cache / "evol" / "nltk_data")
    assert first["first"] == first["root"]  # evol put it first on nltk's path
    files = {path.name: path.stat().st_mtime_ns for path in model.iterdir()}
    assert set(files) == {
        "abbrev_types.txt",
        "sent_starters.txt",
        "collocations.tab",
        "ortho_context.tab",
    }
    assert not [p for p in model.parent.iterdir() if p.name != "english"]  # no leftovers
    again = run_offline(tmp_path, cache)
    assert again == first
    assert {path.name: path.stat().st_mtime_ns for path in model.iterdir()} == files


def test_an_unwritable_cache_is_one_line_naming_it(tmp_path: Path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(
        ConstraintError, match="cannot write the sentence splitter's data"
    ) as raised:
        ifeval_library.punkt_data_root()
    assert str(blocker) in str(raised.value) and "XDG_CACHE_HOME" in str(raised.value)


def test_a_partly_copied_punkt_model_is_rebuilt_whole(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    model = ifeval_library.punkt_data_root() / "tokenizers" / "punkt_tab" / "english"
    whole = {path.name: path.read_bytes() for path in model.iterdir()}
    (model / "ortho_context.tab").unlink()
    (model / "collocations.tab").write_text("half")
    assert ifeval_library.punkt_data_root() / "tokenizers" / "punkt_tab" / "english" == model
    assert {path.name: path.read_bytes() for path in model.iterdir()} == whole
    assert [p.name for p in model.parent.iterdir()] == ["english"]  # nothing left aside


@pytest.mark.slow
def test_a_checker_that_fails_is_one_line(tmp_path: Path):
    """A punkt model whose files are all there but garbled: nltk's error while checking is a
    ConstraintError naming the id, not a traceback."""
    code = (
        "from pathlib import Path\n"
        "from evol.errors import ConstraintError\n"
        "from evol.method.constraints import Constraint, check\n"
        "from evol.method.ifeval_library import punkt_data_root\n"
        "model = punkt_data_root() / 'tokenizers' / 'punkt_tab' / 'english'\n"
        "(model / 'ortho_context.tab').write_text('no tab here')\n"
        "c = Constraint(id='length_constraints:number_sentences',"
        " kwargs={'num_sentences': 2, 'relation': 'less than'})\n"
        "try:\n    check('One. Two.', [c])\nexcept ConstraintError as error:\n    print(error)\n"
    )
    env = os.environ | {"XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("length_constraints:number_sentences: the checker failed")
    assert done.stdout.count("\n") == 1


def test_a_relative_xdg_cache_home_is_ignored(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ifeval_library.cache_dir() == tmp_path / ".cache" / "evol"


def test_an_undetectable_language_is_not_logged_with_the_answer(caplog):
    # IFEval counts it as followed, and its checker logs the whole answer as an error.
    with caplog.at_level("DEBUG"):
        [verdict] = check("12345 67890", [c("language:response_language", language="en")])
    assert verdict.strict
    assert not [record for record in caplog.records if "12345" in record.getMessage()]


RANDOM_FILLED = [
    pytest.param("keywords:existence", {"keywords": []}, id="keywords-empty-list"),
    pytest.param("keywords:forbidden_words", {"forbidden_words": []}, id="forbidden-empty-list"),
    pytest.param(
        "keywords:frequency",
        {"keyword": "", "frequency": 1, "relation": "at least"},
        id="keyword-empty",
    ),
    pytest.param(
        "length_constraints:number_words",
        {"num_words": -1.5, "relation": "at least"},
        id="num_words-negative-float",
    ),
    pytest.param(
        "keywords:letter_frequency",
        {"letter": "a", "let_frequency": -2.0, "let_relation": "at least"},
        id="let_frequency-negative-float",
    ),
]


@pytest.mark.parametrize(("instruction_id", "kwargs"), RANDOM_FILLED)
def test_kwargs_that_ifeval_fills_at_random_are_refused(instruction_id, kwargs):
    with pytest.raises(ConstraintError):
        check("some answer text", [Constraint(id=instruction_id, kwargs=kwargs)])


def test_a_verdict_does_not_depend_on_the_global_rng():
    from if_verifiable.ifeval import instructions_util

    words = instructions_util.WORD_LIST
    answer = " ".join(words[: len(words) // 2])
    constraint = Constraint(id="keywords:forbidden_words", kwargs={"forbidden_words": []})
    state = random.getstate()
    verdicts = set()
    try:
        for seed in range(40):
            random.seed(seed)
            try:
                verdicts.add(check(answer, [constraint])[0].strict)
            except ConstraintError:
                return  # refused: nothing random left to observe
    finally:
        random.setstate(state)
    assert len(verdicts) == 1


VACUOUS = [
    pytest.param("detectable_content:postscript", {"postscript_marker": ""}, id="postscript-empty"),
    pytest.param("startend:end_checker", {"end_phrase": ""}, id="end_phrase-empty"),
    pytest.param("startend:end_checker", {"end_phrase": "   "}, id="end_phrase-blank"),
]


@pytest.mark.parametrize(("instruction_id", "kwargs"), VACUOUS)
def test_empty_marker_kwargs_are_refused(instruction_id, kwargs):
    with pytest.raises(ConstraintError):
        check("anything at all", [Constraint(id=instruction_id, kwargs=kwargs)])


def test_no_non_blank_text_has_zero_sentences():
    """Why 'less than 1' sentences is unmeetable (a sample of odd answers)."""
    c = Constraint(
        id="length_constraints:number_sentences",
        kwargs={"num_sentences": 1, "relation": "less than"},
    )
    for answer in ["x", ".", "...", "\u200b", "a\n\nb", "-", "*", "1", "日本語"]:
        assert not check(answer, [c])[0].loose


plain_words = st.text(
    st.characters(categories=["L", "Nd"], exclude_characters="\x00"), min_size=1, max_size=12
)


phrases = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40).filter(
    lambda s: s.strip()
)


@settings(max_examples=200, deadline=None)
@given(words=st.lists(plain_words, min_size=1, max_size=3), phrase=phrases)
@pytest.mark.slow
def test_ground_truth_reads_back_the_same_through_literal_eval(words, phrase):
    constraints = [
        Constraint(id="keywords:existence", kwargs={"keywords": sorted(words)}),
        Constraint(id="startend:end_checker", kwargs={"end_phrase": phrase}),
        Constraint(id="punctuation:no_comma"),
    ]
    label = ground_truth(constraints)
    assert open_instruct_constraints(label) == [(c.id, c.kwargs) for c in constraints]
    assert json.loads(label)[0]["kwargs"][1]["end_phrase"] == phrase


@pytest.mark.slow
def test_processes_building_the_punkt_cache_at_once_all_succeed(tmp_path):
    row = ifeval_input(
        ["length_constraints:number_sentences"],
        [{"num_sentences": 3, "relation": "less than"}],
        "One here. Two here.",
    )
    path = write_rows(tmp_path / "s.jsonl", [row])
    env = os.environ | {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "evol", "verify", str(path), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(3)
    ]
    for child in children:
        out, _err = child.communicate(timeout=300)
        assert child.returncode == 0 and json.loads(out)["rows"]["strict"] == 1


def test_the_punkt_cache_is_as_readable_as_its_files(tmp_path):
    code = (
        "import os; os.umask(0o022)\n"
        "from evol.method.ifeval_library import punkt_data_root\n"
        "print(punkt_data_root())\n"
    )
    env = os.environ | {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    english = Path(done.stdout.strip()) / "tokenizers" / "punkt_tab" / "english"
    assert stat.S_IMODE(english.stat().st_mode) & 0o055 == 0o055


@pytest.mark.slow
def test_an_unwritable_cache_blocks_only_checks_that_need_punkt(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = os.environ | {"XDG_CACHE_HOME": str(blocker / "cache"), "HOME": str(blocker)}
    path = write_rows(
        tmp_path / "nc.jsonl", [ifeval_input(["punctuation:no_comma"], [{}], "no commas")]
    )
    done = verify_in_child(path, env)
    assert done.returncode == 0, done.stderr
    # A check that splits sentences says why it cannot, in one line.
    kwargs = {"num_sentences": 2, "relation": "less than"}
    row = ifeval_input(["length_constraints:number_sentences"], [kwargs], "One. Two.")
    path = write_rows(tmp_path / "sentences.jsonl", [row])
    done = verify_in_child(path, env)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "length_constraints:number_sentences" in line
    assert "cannot write the sentence splitter's data" in line and "XDG_CACHE_HOME" in line


@pytest.mark.slow
def test_a_relative_cache_home_is_not_written_under_the_working_directory(tmp_path):
    row = ifeval_input(["punctuation:no_comma"], [{}], "fine")
    path = write_rows(tmp_path / "nc.jsonl", [row])
    env = os.environ | {"XDG_CACHE_HOME": "relative-cache", "HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "evol", "verify", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "relative-cache").exists()
    assert (tmp_path / "home" / ".cache" / "evol" / "nltk_data").is_dir()


@pytest.mark.slow
def test_a_damaged_punkt_cache_is_rebuilt_or_one_line(tmp_path):
    from punkt import __version__ as punkt_version

    english = tmp_path / "cache" / "evol" / "nltk_data" / f"punkt-{punkt_version}"
    english = english / "tokenizers" / "punkt_tab" / "english"
    english.mkdir(parents=True)
    row = ifeval_input(
        ["length_constraints:number_sentences"],
        [{"num_sentences": 3, "relation": "less than"}],
        "One here. Two here.",
    )
    path = write_rows(tmp_path / "s.jsonl", [row])
    done = verify_in_child(path, os.environ | {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert done.returncode in (0, 2) and "Traceback" not in done.stderr, done.stderr[-300:]


def test_checks_from_many_threads_take_turns_and_agree_with_one_thread(monkeypatch) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from evol.method import constraints

    answers = [
        "Das ist eine kurze Antwort auf Deutsch, ohne Umschweife.",
        "this is a short answer in english, all in lowercase.",
        "Voici une réponse courte en français, sans détour.",
    ] * 8
    asked = [c("language:response_language", language=code) for code in ("de", "en", "fr")]
    alone = [[v.strict for v in check(answer, asked)] for answer in answers]
    follows, inside = constraints._follows, []

    def watched(*args: Any) -> bool:
        inside.append(constraints._CHECKING.locked())  # langdetect's state is one per process
        return follows(*args)

    monkeypatch.setattr(constraints, "_follows", watched)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda a: [v.strict for v in check(a, asked)], answers))
    assert together == alone and inside and all(inside)
