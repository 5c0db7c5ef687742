"""Drawing a verifiable constraint (evol.method.drawing): --constraint-ids read and checked, the
draw restricted to the ids named, the same seed drawing the same constraints without the global
random, each drawn constraint phrased as IFEval phrases it, and never one that contradicts the
lineage, whose required texts break a carried limit, or that no answer meets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("if_verifiable", reason="the verify extra")

from evol.errors import UsageError  # noqa: E402
from evol.method import constraints, contradictions, ifeval_library  # noqa: E402
from evol.method.constraints import KWARGS_SCHEMA, Constraint, check  # noqa: E402
from evol.method.contradictions import contradicts  # noqa: E402
from evol.method.drawing import describe, parse_ids, pick  # noqa: E402
from tests.support.constraint_cases import LESS, c, letters, limits_on, minimal_answers  # noqa: E402

pytestmark = pytest.mark.usefixtures("private_cache")


def test_constraint_ids_are_checked_and_restrict_the_draw() -> None:
    assert parse_ids(None) is None and parse_ids(" ") is None
    assert parse_ids("startend:quotation, punctuation:no_comma,startend:quotation") == [
        "punctuation:no_comma",
        "startend:quotation",
    ]
    with pytest.raises(UsageError, match="unknown id 'startend:nope'; known: change_case"):
        parse_ids("punctuation:no_comma,startend:nope")
    for nothing in (",", " , ,"):  # names no id: a usage error, not an empty pool
        with pytest.raises(UsageError, match="names no id"):
            parse_ids(nothing)
    ids = ["punctuation:no_comma", "startend:quotation"]
    drawn = {pick(random.Random(n), [], ids).id for n in range(40)}
    assert drawn == set(ids)
    assert pick(random.Random(0), [c("startend:quotation")], ids).id == "punctuation:no_comma"
    assert pick(random.Random(0), [c("startend:quotation"), c("punctuation:no_comma")], ids) is None


# -- the same seed, the same draw, and no other randomness ---------------------------------------


def picks(seed: int, count: int = 30) -> list[Constraint]:
    rng, carried = random.Random(seed), []
    for _ in range(count):
        found = pick(rng, carried)
        if found is None:
            break
        carried.append(found)
    return carried


def test_the_same_seed_draws_the_same_constraints_and_another_seed_others():
    assert picks(7) == picks(7)
    assert picks(7) != picks(8)


def test_drawing_and_phrasing_never_touch_the_global_random():
    state = random.getstate()
    for seed in range(20):
        for constraint in picks(seed):
            describe(constraint)
    assert random.getstate() == state


def test_every_drawn_constraint_is_phrased_as_ifeval_phrases_its_kwargs():
    rng = random.Random(3)
    for instruction_id, draw in KWARGS_SCHEMA.items():
        for _ in range(20):
            constraint = Constraint(id=instruction_id, kwargs=draw(rng))
            checker = ifeval_library.instruction_classes()[instruction_id](instruction_id)
            assert describe(constraint) == checker.build_description(**constraint.kwargs)
            assert (checker.get_instruction_args() or {}) == constraint.kwargs


def test_the_paragraph_draw_covers_ifeval_s_range_and_names_a_paragraph_there_is() -> None:
    """IFEval draws 1 to 5 paragraphs (and an nth that can go one past); evol draws the same
    counts, with an nth among them: a one-paragraph answer is as much a case as five."""
    rng = random.Random(7)
    draw = KWARGS_SCHEMA["length_constraints:nth_paragraph_first_word"]
    drawn = [draw(rng) for _ in range(300)]
    assert {kwargs["num_paragraphs"] for kwargs in drawn} == set(range(1, 6))
    assert all(1 <= kwargs["nth_paragraph"] <= kwargs["num_paragraphs"] for kwargs in drawn)
    fifths = {kwargs["nth_paragraph"] for kwargs in drawn if kwargs["num_paragraphs"] == 5}
    assert fifths == set(range(1, 6))


# -- never what contradicts the lineage, or what no answer meets ---------------------------------


@given(seed=st.integers(), count=st.integers(1, 12), order=st.randoms(use_true_random=False))
def test_no_sequence_of_picks_carries_two_constraints_that_contradict(seed, count, order):
    carried = picks(seed, count)
    order.shuffle(carried)  # contradiction is symmetric: the order they were carried in is not
    for i, first in enumerate(carried):
        for second in carried[i + 1 :]:
            assert not contradicts(first, second) and not contradicts(second, first)
            assert second.id not in ifeval_library.conflict_table()[first.id]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(), data=st.data())
def test_pick_never_draws_a_constraint_whose_required_text_breaks_a_carried_limit(seed, data):
    words = constraints._word_list()
    limit = data.draw(limits_on([" ".join(words[:200]), *constraints.END_PHRASES, "Section P.S."]))
    picked = pick(random.Random(seed), [limit])
    assert picked is not None
    assert all(check(text, [limit])[0].strict for text in minimal_answers(picked))


def test_pick_sums_what_the_whole_lineage_requires() -> None:
    """'constant' needs two t's, 'Any other questions?' two more: a limit of three t's fits
    each alone but not the lineage, so pick never draws it; four fit."""
    carried = [
        c("keywords:existence", keywords=["constant", "river"]),
        c("startend:end_checker", end_phrase="Any other questions?"),
    ]
    assert not any(contradicts(letters("t", 4), other) for other in carried)
    drawn = [pick(random.Random(n), carried, ["keywords:letter_frequency"]) for n in range(300)]
    limits = [
        d for d in drawn if d and d.kwargs["letter"] == "t" and d.kwargs["let_relation"] == LESS
    ]
    assert limits and all(d.kwargs["let_frequency"] >= 5 for d in limits)
    answer = "constant river. Any other questions?"
    for limit in (d for d in drawn if d is not None and d.kwargs["let_relation"] == LESS):
        assert check(answer, [*carried, limit])[-1].strict, limit


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(), data=st.data())
def test_pick_never_draws_a_limit_the_lineages_texts_break_together(seed, data):
    """Several carried constraints' minimal texts, joined: a limit pick adds fits them all."""
    rng = random.Random(seed)
    carried: list[Constraint] = []
    for _ in range(data.draw(st.integers(1, 4))):
        if (added := pick(rng, carried)) is not None:
            carried.append(added)
    texts = [text for carried_one in carried for text in minimal_answers(carried_one)]
    limit = data.draw(limits_on(texts))
    if any(contradicts(limit, other) for other in carried):
        return
    if contradictions.limits_clash([*carried, limit]):
        return  # pick refuses it: checked against the joined texts below
    joined = "\n".join(texts)
    assert check(joined, [limit])[0].strict or not texts, (joined, limit)


def test_pick_returns_nothing_when_everything_conflicts():
    assert pick(random.Random(0), [c("detectable_format:constrained_response")]) is None


def test_pick_skips_a_constraint_whose_kwargs_contradict_the_carried_ones():
    forbidden = c("keywords:forbidden_words", forbidden_words=constraints._word_list())
    for seed in range(30):
        found = pick(random.Random(seed), [forbidden])
        assert found is not None and not contradicts(found, forbidden)
        assert found.id not in ("keywords:existence", "length_constraints:nth_paragraph_first_word")


def _required_text(c: Constraint) -> str:
    """Text any answer meeting `c` must contain (IFEval's checkers ignore case here)."""
    k = c.kwargs
    parts = [*k.get("keywords", []), k.get("first_word", ""), k.get("end_phrase", "")]
    parts += [k.get("section_spliter", ""), k.get("postscript_marker", "")]
    if c.id == "keywords:frequency" and k.get("relation") == "at least":
        parts.append(k["keyword"])
    return " ".join(parts).lower()


def test_pick_never_adds_a_constraint_that_needs_a_letter_the_lineage_forbids():
    carried = [letters("e")]
    needs_e = [
        picked
        for seed in range(300)
        if (picked := pick(random.Random(seed), carried)) and "e" in _required_text(picked)
    ]
    assert needs_e == []


def test_pick_never_draws_a_constraint_no_answer_meets():
    never = {"num_sentences": 1, "relation": "less than"}
    drawn = [
        s
        for s in range(1000, 1100)
        if (c := pick(random.Random(s), [])).id == "length_constraints:number_sentences"
        and c.kwargs == never
    ]
    assert drawn == []
