"""Verifiable evolution (#26): add_verifiable_constraint draws an IFEval constraint, the rewrite
must state it (evol.method.wording, the judge), answers are checked by code and drawn again until one
passes, and stats, export, --batch and a resume after kill -9 agree with what was kept."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evol.errors import PromptError, UsageError
from evol.method.constraints import KWARGS_SCHEMA, Constraint, check
from evol.method.contradictions import contradicts
from evol.method.drawing import describe, parse_ids, pick
from evol.method.elimination import Reason
from evol.method.judging import read_judgement
from evol.method.operations import OPERATIONS, VERIFIABLE, choice_rng, parse_weights
from evol.method.prompts import PromptSet
from evol.method.wording import UNWORDED, judged, unstated
from evol.rundir.records import EliminatedRecord, Record, compose
from tests.support.batch_server import BatchServer
from tests.support.fake_server import (
    FakeServer,
    VerifiableResponder,
    first_user_turn,
    kind_of,
)
from tests.support.runs import assert_valid_run, read_jsonl, run_args, write_seeds
from tests.support.subprocesses import ENV
from tests.support.verifiable import POOL, SEEDS, constraints_of, expected_attempts, fails

pytestmark = pytest.mark.usefixtures("private_cache")


def c(cid: str, **kwargs: Any) -> Constraint:
    return Constraint(id=cid, kwargs=kwargs)


# -- the rewrite states its constraints -----------------------------------------------------------


@pytest.mark.parametrize("draw", range(12))
def test_ifevals_own_wording_states_every_constraint_and_a_bare_task_none(draw: int) -> None:
    rng = random.Random(draw)
    for cid, make in sorted(KWARGS_SCHEMA.items()):
        constraint = Constraint(id=cid, kwargs=make(rng))
        assert unstated(f"Write about the sea. {describe(constraint)}", constraint) is None
        assert unstated("Write about the sea.", constraint) is not None, cid


@pytest.mark.parametrize("draw", range(12))
def test_a_count_said_the_other_way_round_is_garbled(draw: int) -> None:
    rng = random.Random(draw)
    turned = {"less than": "at least", "at least": "less than"}
    for cid, make in sorted(KWARGS_SCHEMA.items()):
        constraint = Constraint(id=cid, kwargs=make(rng))
        relation = next((v for k, v in constraint.kwargs.items() if k.endswith("relation")), None)
        if relation is None:
            continue
        reversed_ = describe(constraint).replace(relation, turned[relation])
        assert (unstated(f"Write. {reversed_}", constraint) or "").startswith("garbled"), cid


AT_LEAST_300 = c("length_constraints:number_words", num_words=300, relation="at least")
LESS_THAN_300 = c("length_constraints:number_words", num_words=300, relation="less than")


@pytest.mark.parametrize(
    ("constraint", "rewrite", "expected"),
    [
        (AT_LEAST_300, "Write an essay of at least 300 words.", None),
        (AT_LEAST_300, "Write an essay of no fewer than 300 words.", None),
        (AT_LEAST_300, "Write an essay of 300 words or more.", None),
        (AT_LEAST_300, "Write an essay of more than 300 words.", None),  # implies at least
        (AT_LEAST_300, "Write a 300-word essay.", None),  # a bare count: about exactly
        (AT_LEAST_300, "Write an essay in fewer than 300 words.", "garbled"),
        (AT_LEAST_300, "Write an essay of at most 300 words.", "garbled"),
        (AT_LEAST_300, "Write an essay, 300 words at most.", "garbled"),
        (AT_LEAST_300, "Write an essay of under 300 words.", "garbled"),
        (AT_LEAST_300, "Write a long essay.", "lost"),
        (AT_LEAST_300, "Write 300 essays.", "lost"),  # the count without its unit
        (LESS_THAN_300, "Write an essay of under 300 words.", None),
        (LESS_THAN_300, "Keep the essay shorter than 300 words.", None),
        (LESS_THAN_300, "Use fewer than 300 words; quote 300 words of it.", None),
        (LESS_THAN_300, "Write a 300-word essay.", "garbled"),  # allows 300
        (LESS_THAN_300, "Write at most 300 words.", "garbled"),  # allows 300 too
        (LESS_THAN_300, "Write at least 300 words.", "garbled"),
        (c("keywords:frequency", keyword="tide", frequency=2, relation="at least"),
         "Describe the coast, using the word tide at least twice.", None),
        (c("keywords:frequency", keyword="tide", frequency=2, relation="at least"),
         "Describe the coast, using the word tide fewer than 2 times.", "garbled"),
        (c("keywords:frequency", keyword="tide", frequency=2, relation="at least"),
         "Describe the coast at least twice.", "lost"),  # the keyword is gone
        (c("detectable_format:number_bullet_lists", num_bullets=4),
         "List its parts in exactly four bullet points.", None),
        (c("detectable_format:number_bullet_lists", num_bullets=4),
         "List its parts in at least 4 bullet points.", "garbled"),
        (c("length_constraints:number_paragraphs", num_paragraphs=3),
         "Write 3 paragraphs.", "lost"),  # without the *** divider its checker counts one
        (c("length_constraints:number_paragraphs", num_paragraphs=3),
         "Write 3 paragraphs separated by ***.", None),
        (c("keywords:forbidden_words", forbidden_words=["boy", "elevator"]),
         "Describe a ride; the words boy and elevator must not appear.", None),
        (c("keywords:forbidden_words", forbidden_words=["boy", "elevator"]),
         "Describe a ride. Use the words boy and elevator.", "garbled"),
        (c("keywords:existence", keywords=["chip", "revenue"]),
         "Explain it. Mention chip and revenue.", None),
        (c("keywords:existence", keywords=["chip", "revenue"]),
         "Explain it. Do not include chip or revenue.", "garbled"),
        (c("keywords:existence", keywords=["chip", "revenue"]),
         "Explain microchips and revenues.", "lost"),  # whole words only
        (c("keywords:letter_frequency", letter="z", let_frequency=3, let_relation="at least"),
         "Use the letter 'z' at least 3 times.", None),
        (c("keywords:letter_frequency", letter="z", let_frequency=3, let_relation="at least"),
         "Use at least 3 zebras.", "lost"),
        (c("language:response_language", language="mr"), "Reply in Marathi only.", None),
        (c("language:response_language", language="mr"), "Reply in Hindi only.", "lost"),
        (c("detectable_format:multiple_sections", section_spliter="Section", num_sections=2),
         "Write 2 sections headed Section 1 and Section 2.", None),
        (c("detectable_format:multiple_sections", section_spliter="SECTION", num_sections=2),
         "Write 2 sections headed Section 1 and Section 2.", "lost"),  # its checker's case
        (c("length_constraints:nth_paragraph_first_word", num_paragraphs=3, nth_paragraph=2,
           first_word="strain"), "Write 3 paragraphs; the second one starts with strain.", None),
        (c("length_constraints:nth_paragraph_first_word", num_paragraphs=3, nth_paragraph=2,
           first_word="strain"), "Write 3 paragraphs; one starts with strain.", "lost"),
        (c("detectable_content:postscript", postscript_marker="P.P.S"),
         "End with a note after P.P.S.", None),
        (c("detectable_content:postscript", postscript_marker="P.P.S"),
         "End with a note after P.S.", "lost"),
        (c("startend:end_checker", end_phrase="Any other questions?"),
         'Close with "any other questions?" and nothing after it.', None),
        (c("detectable_format:constrained_response"), "Answer yes or no.", "lost"),
        (c("punctuation:no_comma"), "Write the story without a single comma.", None),
        (c("punctuation:no_comma"), "Write the story.", "lost"),
        (c("change_case:english_lowercase"), "Reply in lower case only.", None),
        (c("change_case:english_capital"), "Reply in ALL CAPS.", None),
        (c("detectable_format:json_format"), "Reply as a Json object.", None),
        (c("detectable_format:title"), "Give it a title like <<this>>.", None),
        (c("combination:two_responses"), "Give two answers split by ******.", None),
        (c("startend:quotation"), "Wrap it in double quotes.", None),
        (c("startend:quotation"), "Wrap it up.", "lost"),
    ],
)  # fmt: skip
def test_what_a_rewrite_must_say(constraint: Constraint, rewrite: str, expected: str | None):
    found = unstated(rewrite, constraint)
    assert (found.split(":")[0] if found else None) == (expected and expected.split(":")[0])
    if expected == "lost" and constraint.id in UNWORDED:
        assert found == "lost: no word of it is left"


def test_the_judge_is_asked_about_the_unworded_constraints_only() -> None:
    constraints = [c("punctuation:no_comma"), AT_LEAST_300, c("detectable_format:title")]
    assert [x.id for x in judged(constraints)] == [
        "punctuation:no_comma",
        "detectable_format:title",
    ]
    assert set(UNWORDED) < set(KWARGS_SCHEMA)


def test_the_judges_word_on_requirements_counts_only_where_it_was_asked() -> None:
    reply = '{"reason": "dropped", "second_is": "instruction", "states_requirements": "no", "verdict": "different"}'
    asked = read_judgement(reply, states_asked=True)
    assert asked.states is False
    failure = asked.failure(reply)
    assert failure and failure.reason == Reason.CONSTRAINT_LOST and "dropped" in failure.detail
    plain = read_judgement(reply)
    assert plain.states is None and plain.failure(reply) is None
    kept = read_judgement(reply.replace('"no"', '"YES"'), states_asked=True)
    assert kept.states is True and kept.failure(reply) is None
    silent = read_judgement(reply.replace(', "states_requirements": "no"', ""), states_asked=True)
    assert silent.states is None and silent.failure(reply) is None
    equal = read_judgement(reply.replace('"different"', '"equal"'), states_asked=True)
    assert equal.failure(reply).reason == Reason.NO_INFORMATION_GAIN  # the paper's rule first


# -- choosing the operation and the constraint ----------------------------------------------------


def test_the_operation_is_used_only_when_named() -> None:
    assert VERIFIABLE not in parse_weights(None) and set(parse_weights(None)) == set(OPERATIONS)
    assert parse_weights("add_verifiable_constraint=2,deepen") == {VERIFIABLE: 2.0, "deepen": 1.0}
    assert parse_weights(None, verifiable=True) == {VERIFIABLE: 1.0}
    assert parse_weights("  ", verifiable=True) == {VERIFIABLE: 1.0}
    with pytest.raises(UsageError, match="--verifiable evolves with add_verifiable_constraint"):
        parse_weights("deepen", verifiable=True)


def test_the_choice_streams_are_the_operations_as_before_and_the_constraints_own() -> None:
    before = random.Random("7\0s1.2\x003").random()  # choose_operation's stream until now
    assert choice_rng(7, "s1.2", 3).random() == before
    assert choice_rng(7, "s1.2", 3, "constraint").random() != before
    assert (
        choice_rng(7, "s1.2", 3, "constraint").random()
        == random.Random("7\0s1.2\x003\0constraint").random()
    )


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


# -- templates ----------------------------------------------------------------------------------


def test_runs_without_the_operation_keep_their_prompt_digest_and_leak_rule(tmp_path: Path):
    shipped = PromptSet.load()
    assert shipped.digest(OPERATIONS) == "48d74de7d03ecce0"  # main's, before #26's templates
    (tmp_path / "add_verifiable_constraint.txt").write_text(
        "Add this: $constraint\n<instruction>\n$instruction\n</instruction>\n"
    )
    (tmp_path / "judge_constraint.txt").write_text("$first / $second / $requirements")
    other = PromptSet.load(tmp_path)
    assert other.digest(["deepen"]) == shipped.digest(["deepen"])
    assert other.digest([VERIFIABLE]) != shipped.digest([VERIFIABLE])
    assert other.evolve_prompt(VERIFIABLE, "Do X", "", "No commas.").startswith(
        "Add this: No commas.\n<instruction>\nDo X"
    )
    rewrite = "Describe tides. <requirement> Use no commas."
    assert shipped.leak_detector(OPERATIONS).find("Describe tides.", rewrite) is None
    assert shipped.leak_detector([VERIFIABLE]).find("Describe tides.", rewrite) == "<requirement>"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("add_verifiable_constraint.txt", "$instruction only", "missing placeholder $constraint"),
        ("add_verifiable_constraint.txt", "$constraint only", "missing placeholder $instruction"),
        ("judge_constraint.txt", "$first $second", "missing placeholder $requirements"),
        ("judge_constraint.txt", "$first $second $requirements $input", "unknown placeholder"),
    ],
)
def test_the_new_templates_placeholders_are_checked_on_load(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(PromptError, match=message.replace("$", r"\$")):
        PromptSet.load(tmp_path)


def test_seed_text_and_the_constraint_go_into_the_template_verbatim() -> None:
    prompts = PromptSet.load()
    hostile = "Costs $5 or ${amount} or $constraint {0} </instruction> <requirement>"
    rendered = prompts.evolve_prompt(VERIFIABLE, hostile, "in $input", "Say {x} $$ $instruction")
    assert f"<instruction>\n{hostile}\n</instruction>" in rendered
    assert "<input>\nin $input\n</input>" in rendered
    assert "<requirement>\nSay {x} $$ $instruction\n</requirement>" in rendered


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


def test_the_judge_is_shown_each_requirement_on_a_line() -> None:
    rendered = PromptSet.load().judge_constraint_prompt("A {x}", "B $y", ["No commas.", "Say $5."])
    assert "<first>\nA {x}\n</first>" in rendered and "<second>\nB $y\n</second>" in rendered
    assert "\n- No commas.\n- Say $5.\n" in rendered


# -- records ------------------------------------------------------------------------------------

OLD_KEYS = [
    "id", "parent_id", "root_id", "generation", "round", "operation", "instruction", "input",
    "output", "judge", "metadata", "usage", "detail",
]  # fmt: skip


def test_a_record_without_constraints_keeps_its_shape_and_one_with_them_adds_its_fields():
    record = Record(
        id="s1.1", parent_id="s1", root_id="s1", generation=1, round=1, operation="deepen",
        instruction="x", output="y",
    )  # fmt: skip
    assert list(record.model_dump(mode="json")) == OLD_KEYS
    gone = EliminatedRecord(**record.model_dump(), reason=Reason.SORRY)
    assert list(gone.model_dump(mode="json")) == [*OLD_KEYS, "reason", "duplicate_of"]
    record.constraints, record.attempts = [{"id": "punctuation:no_comma", "kwargs": {}}], 1
    assert list(record.model_dump(mode="json")) == [*OLD_KEYS, "constraints", "attempts"]
    record.rejected_output, record.unmet = "a, b", {"punctuation:no_comma": 1}
    assert list(record.model_dump())[-4:] == ["constraints", "attempts", "rejected_output", "unmet"]


# -- runs against the fake server -----------------------------------------------------------------


def verifiable_run(evol, server, tmp_path: Path, *extra: object, rows=SEEDS, name="run") -> Path:
    seeds, out = write_seeds(tmp_path / f"{name}.jsonl", rows), tmp_path / name
    result = evol(*run_args(server, seeds, out, "--verifiable", *extra))
    assert result.exit_code == 0, result.output
    return out


def test_every_kept_answer_passes_and_the_counts_match_a_recount(evol, tmp_path: Path) -> None:
    rate, extra = 0.45, 2
    responder = VerifiableResponder(pass_rate=rate)
    with FakeServer(responder=responder) as server:
        out = verifiable_run(
            evol, server, tmp_path, "--generations", "3", "--constraint-ids", POOL,
            "--answer-attempts", str(extra), "--concurrency", "4", "--seed", "5",
        )  # fmt: skip
        asked = Counter(first_user_turn(b) for b in server.requests_for("answer"))
    manifest = assert_valid_run(out)
    kept = [r for r in read_jsonl(out / "dataset.jsonl") if r["generation"] > 0]
    gone = [r for r in read_jsonl(out / "eliminated.jsonl")]
    answered = kept + [r for r in gone if r.get("attempts")]
    assert kept and any(r["attempts"] > 1 for r in kept), "the sampling had work to do"
    assert any(r["reason"] == "constraint_unmet" for r in gone)
    for record in answered:
        constraints = constraints_of(record)
        text = compose(record["instruction"], record["input"])
        expected = expected_attempts(text, rate, extra)
        assert asked[text] == record["attempts"], record["id"]  # each answer paid once
        assert record["attempts"] == (expected or extra + 1)
        if record in kept:
            assert fails(record["output"], constraints) == []  # every kept answer passes
        else:
            assert record["reason"] == "constraint_unmet" and expected is None
            assert all(cid in record["detail"] for cid in fails(record["output"], constraints))
        if record["attempts"] == 1:
            assert "rejected_output" not in record and "unmet" not in record
        else:
            assert fails(record["rejected_output"], constraints)
            assert record["unmet"] == dict.fromkeys(
                sorted(x.id for x in constraints), record["attempts"] - (record in kept)
            )
    # The lineage carries its constraints on, adds one a round, none contradicting another.
    by_id = {r["id"]: r for r in read_jsonl(out / "dataset.jsonl")}
    for record in kept:
        mine, parents = record["constraints"], by_id[record["parent_id"]].get("constraints") or []
        assert mine[: len(parents)] == parents and len(mine) == len(parents) + 1
        pairs = [
            (a, b)
            for i, a in enumerate(constraints_of(record))
            for b in constraints_of(record)[i + 1 :]
        ]
        assert not any(contradicts(a, b) for a, b in pairs)
    # run.json, stats and verify say what the files say.
    reasons = Counter(r["reason"] for r in gone)
    assert manifest["summary"]["eliminated_per_reason"] == dict(sorted(reasons.items()))
    stats = json.loads(evol("stats", out, "--json").stdout)["constraints"]
    attempts = Counter(r["attempts"] for r in kept)
    assert stats["attempts"] == {str(n): attempts[n] for n in sorted(attempts)}
    assert stats["kept"] == len(kept) and stats["unmet"] == reasons["constraint_unmet"]
    checked: Counter[str] = Counter()
    met: Counter[str] = Counter()
    for record in kept + [r for r in gone if r["reason"] == "constraint_unmet"]:
        for constraint in record["constraints"]:
            checked[constraint["id"]] += record["attempts"]
            met[constraint["id"]] += record in kept
    assert {k: (v["answers"], v["met"]) for k, v in stats["pass_rate"].items()} == {
        k: (checked[k], met[k]) for k in checked
    }
    per_generation = Counter(r["generation"] for r in kept)
    assert {g: row["records"] for g, row in stats["per_generation"].items()} == {
        str(g): n for g, n in per_generation.items()
    }
    verified = json.loads(evol("verify", out, "--json").stdout)
    assert verified["rows"]["checked"] == len(kept) and verified["rows"]["strict_rate"] == 1.0
    shown = evol("stats", out).stdout
    assert "pass rate" in shown and "attempts per kept record: mean" in shown


def test_a_run_without_the_operation_writes_what_it_always_wrote(evol, server, tmp_path) -> None:
    seeds, out = write_seeds(tmp_path / "s.jsonl", SEEDS[:3]), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "2")).exit_code == 0
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        for record in read_jsonl(out / name):
            assert not {"constraints", "attempts", "rejected_output", "unmet"} & set(record)
    manifest = json.loads((out / "run.json").read_text())
    assert not {"constraint_ids", "answer_attempts"} & set(manifest["config"])
    assert not {"--constraint-ids", "--answer-attempts"} & set(manifest["fingerprint"])
    assert manifest["fingerprint"]["constraint_ids"] is manifest["fingerprint"]["answer_attempts"]
    assert manifest["fingerprint"]["answer_attempts"] is None  # as a run before them
    assert "constraints" not in json.loads(evol("stats", out, "--json").stdout)


@pytest.mark.parametrize("judge", ["--judge", "--no-judge"])
def test_a_dropped_unworded_constraint_is_lost_not_unmet(evol, tmp_path, judge: str) -> None:
    rows = [{"instruction": "Tell a story about a fox. [drop-requirement]"}]
    with FakeServer(responder=VerifiableResponder()) as server:
        out = verifiable_run(
            evol, server, tmp_path, "--generations", "1", judge,
            "--constraint-ids", "punctuation:no_comma", rows=rows,
        )  # fmt: skip
        kinds = Counter(kind_of(body) for body in server.requests)
    [gone] = read_jsonl(out / "eliminated.jsonl")
    assert (gone["reason"], gone["detail"]) == (
        "constraint_lost",
        "punctuation:no_comma: lost: no word of it is left",
    )
    assert kinds == {"evolve": 1, "answer": 1}  # the seed's answer; nothing paid after the rewrite


@pytest.mark.parametrize("judge", ["--judge", "--no-judge"])
def test_a_count_turned_round_in_the_rewrite_is_not_kept(evol, tmp_path, judge: str) -> None:
    rows = [{"instruction": f"Describe a harbour at dawn number {n}. [reverse]"} for n in range(4)]
    with FakeServer(responder=VerifiableResponder()) as server:
        out = verifiable_run(
            evol, server, tmp_path, "--generations", "1", judge,
            "--constraint-ids", "length_constraints:number_words", rows=rows,
        )  # fmt: skip
    assert read_jsonl(out / "gen_1.jsonl") == []
    gone = read_jsonl(out / "eliminated.jsonl")
    assert [r["reason"] for r in gone] == ["constraint_lost"] * 4
    assert all("garbled" in r["detail"] for r in gone)


def test_the_judge_is_asked_whether_an_unworded_constraint_is_still_stated(evol, tmp_path):
    rows = [
        {"instruction": "Tell a story about a fox. [unstated]"},
        {"instruction": "Tell a story about an owl."},
    ]
    with FakeServer(responder=VerifiableResponder()) as server:
        out = verifiable_run(
            evol, server, tmp_path, "--generations", "1", "--constraint-ids", "punctuation:no_comma",
            rows=rows,
        )  # fmt: skip
        judged_requests = server.requests_for("judge")
    [gone] = read_jsonl(out / "eliminated.jsonl")
    assert (gone["root_id"], gone["reason"]) == ("s1", "constraint_lost")
    assert "the judge says it no longer states a requirement" in gone["detail"]
    assert [r["root_id"] for r in read_jsonl(out / "gen_1.jsonl")] == ["s2"]
    for body in judged_requests:
        schema = body["response_format"]["json_schema"]["schema"]
        assert "states_requirements" in schema["required"]
        assert "- In your entire response, refrain from the use of any commas." in first_user_turn(
            body
        )


def test_a_worded_constraint_is_judged_as_any_rewrite(evol, tmp_path) -> None:
    rows = [{"instruction": "Tell a story about a fox. [unstated]"}]  # the judge is not asked
    with FakeServer(responder=VerifiableResponder()) as server:
        out = verifiable_run(
            evol, server, tmp_path, "--generations", "1", "--constraint-ids",
            "startend:end_checker", rows=rows,
        )  # fmt: skip
        [judge] = server.requests_for("judge")
    assert "states_requirements" not in json.dumps(judge["response_format"])
    assert [r["id"] for r in read_jsonl(out / "gen_1.jsonl")] == ["s1.1"]


def test_a_lineage_whose_every_constraint_is_taken_ends_its_rounds_for_free(evol, tmp_path):
    rows = [{"instruction": "Tell a story about a fox."}]
    with FakeServer(responder=VerifiableResponder()) as server:
        out = verifiable_run(
            evol, server, tmp_path, "--generations", "3", "--constraint-ids",
            "punctuation:no_comma", rows=rows,
        )  # fmt: skip
        evolved = len(server.requests_for("evolve"))
    assert [r["id"] for r in read_jsonl(out / "gen_1.jsonl")] == ["s1.1"]
    gone = read_jsonl(out / "eliminated.jsonl")
    assert [(r["id"], r["reason"]) for r in gone] == [
        ("s1.1.2", "no_constraint_left"),
        ("s1.1.3", "no_constraint_left"),
    ]
    assert "punctuation:no_comma" in gone[0]["detail"] and evolved == 1


def test_a_mix_of_operations_carries_constraints_through_in_depth_rounds(evol, tmp_path) -> None:
    with FakeServer(responder=VerifiableResponder()) as server:
        seeds, out = write_seeds(tmp_path / "s.jsonl", SEEDS), tmp_path / "run"
        result = evol(*run_args(
            server, seeds, out, "--generations", "3", "--constraint-ids", POOL, "--operations",
            "add_verifiable_constraint=2,deepen,breadth",
        ))  # fmt: skip
    assert result.exit_code == 0, result.output
    records = {r["id"]: r for r in read_jsonl(out / "dataset.jsonl")}
    operations = Counter(r["operation"] for r in records.values())
    assert operations["deepen"] and operations["breadth"] and operations[VERIFIABLE]
    for record in records.values():
        parent = records.get(record["parent_id"] or "", {})
        if record["operation"] == "breadth":
            assert "constraints" not in record  # a new instruction starts afresh
        elif record["operation"] == "deepen":
            assert record.get("constraints") == parent.get("constraints")
        if record.get("constraints"):
            assert fails(record["output"], constraints_of(record)) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--constraint-ids", "punctuation:no_comma"], "--constraint-ids: only add_verifiable"),
        (["--verifiable", "--operations", "deepen"], "--verifiable evolves with"),
        (["--verifiable", "--constraint-ids", "nope"], "--constraint-ids: unknown id 'nope'"),
        (["--verifiable", "--answer-attempts", "-1"], "'--answer-attempts'"),
    ],
)
def test_options_that_do_not_fit_are_refused_before_any_call(evol, tmp_path, args, message):
    seeds = write_seeds(tmp_path / "s.jsonl", SEEDS[:1])
    with FakeServer() as server:
        result = evol(*run_args(server, seeds, tmp_path / "run", *args))
    assert result.exit_code == 2 and message in result.output and server.requests == []


def test_a_resume_with_other_constraint_options_is_refused(evol, tmp_path) -> None:
    with FakeServer(responder=VerifiableResponder()) as server:
        out = verifiable_run(evol, server, tmp_path, "--generations", "1", rows=SEEDS[:2])
        seeds = tmp_path / "run.jsonl"
        for option in (["--answer-attempts", "5"], ["--constraint-ids", "punctuation:no_comma"]):
            result = evol(
                *run_args(server, seeds, out, "--verifiable", "--generations", "2", *option)
            )
            assert result.exit_code == 2 and option[0] in result.output
        grown = evol(*run_args(server, seeds, out, "--verifiable", "--generations", "2"))
    assert grown.exit_code == 0, grown.output


def test_dpo_pairs_load_with_datasets_and_the_checker_agrees(evol, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    with FakeServer(responder=VerifiableResponder(pass_rate=0.5)) as server:
        out = verifiable_run(evol, server, tmp_path, "--generations", "2", "--constraint-ids", POOL)
    records = [r for r in read_jsonl(out / "dataset.jsonl") if r.get("rejected_output")]
    assert records
    result = evol("export", out, "--out", tmp_path / "dpo.jsonl", "--format", "dpo", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (
        summary["left_out_without_pair"]
        == len(read_jsonl(out / "dataset.jsonl"))
        - len(records)
        - summary["left_out_without_constraints"]
    )
    rows = datasets.load_dataset(
        "json", data_files=str(tmp_path / "dpo.jsonl"), split="train",
        cache_dir=str(tmp_path / "hf"),
    )  # fmt: skip
    assert rows.column_names == ["prompt", "chosen", "rejected"] and len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert row["prompt"] == compose(record["instruction"], record["input"])
        assert not fails(row["chosen"], constraints_of(record))
        assert fails(row["rejected"], constraints_of(record))
    parquet = evol("export", out, "--out", tmp_path / "dpo.parquet", "--format", "dpo")
    assert parquet.exit_code == 0, parquet.output
    assert datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "dpo.parquet"), split="train",
        cache_dir=str(tmp_path / "hf"),
    ).to_list() == rows.to_list()  # fmt: skip
    refused = evol("export", out, "--out", tmp_path / "x.jsonl", "--format", "dpo",
                   "--system-prompt", "Be brief.")  # fmt: skip
    assert refused.exit_code == 2 and "has no system turn" in refused.output
    select = evol("select", out, "--out", tmp_path / "s.jsonl", "--format", "dpo", "--budget", "2")
    assert select.exit_code == 2 and "evol export writes dpo" in select.output


def test_the_report_draws_the_constraints(evol, tmp_path: Path) -> None:
    with FakeServer(responder=VerifiableResponder(pass_rate=0.5)) as server:
        out = verifiable_run(evol, server, tmp_path, "--generations", "1", "--constraint-ids", POOL)
    result = evol("report", out, "--out", tmp_path / "r.html", "--png", tmp_path / "png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "png" / "constraints.png").read_bytes().startswith(b"\x89PNG")
    assert "kept records carry verifiable constraints" in (tmp_path / "r.html").read_text()


def test_a_dry_run_counts_every_answer_sampling_may_draw(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "s.jsonl", SEEDS[:2])
    with FakeServer() as server:
        plain = evol(*run_args(server, seeds, tmp_path / "a", "--dry-run", "--json"))
        sampled = evol(*run_args(
            server, seeds, tmp_path / "b", "--dry-run", "--json", "--verifiable",
            "--answer-attempts", "2",
        ))  # fmt: skip
    answers = [json.loads(r.stdout)["roles"]["answer"]["calls"] for r in (plain, sampled)]
    assert answers == [2 + 2 * 4, 2 + 2 * 4 * 3]  # the seeds', then 1 + 2 per evolution


# -- durability: --batch, and a kill -9 while answers are drawn again -----------------------------


def test_a_batch_run_samples_as_a_live_run_does(evol, tmp_path: Path) -> None:
    args = ("--generations", "2", "--constraint-ids", POOL, "--model", "fake-model")
    with FakeServer(responder=VerifiableResponder(pass_rate=0.4)) as server:
        live = verifiable_run(evol, server, tmp_path, *args, name="live")
        paid = len(server.requests)
    seeds = tmp_path / "live.jsonl"
    with BatchServer(responder=VerifiableResponder(pass_rate=0.4), seed=3) as server:
        result = evol(
            "run", seeds, "--out", tmp_path / "batch", "--base-url", server.base_url, "--quiet",
            "--verifiable", "--batch", "--batch-poll-interval", "0.05", "--retry-max-wait",
            "0.05", *args,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert set(server.submitted.values()) == {1}  # no row submitted twice
        assert len(server.submitted) == paid  # each answer drawn again is a row of its own
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        assert read_jsonl(tmp_path / "batch" / name) == read_jsonl(live / name)
    assert any(r.get("attempts", 1) > 1 for r in read_jsonl(live / "dataset.jsonl"))


@pytest.mark.slow
def test_a_kill_while_answers_are_drawn_again_pays_for_nothing_twice(tmp_path: Path) -> None:
    # Seeds with their answers: the evolutions' are the only answers asked for.
    rows = [row | {"output": "Given."} for row in SEEDS[:3]]
    seeds, out = write_seeds(tmp_path / "s.jsonl", rows), tmp_path / "run"
    command = [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--quiet",
        "--generations", "1", "--verifiable", "--constraint-ids", POOL, "--concurrency", "3",
        "--retry-max-wait", "0.05",
    ]  # fmt: skip
    seen: Counter[str] = Counter()

    def second_answer(body: dict[str, Any]) -> bool:  # every evolution's answer_2 is held
        text = first_user_turn(body)
        if kind_of(body) != "answer" or "(v" not in text:
            return False
        seen[text] += 1
        return seen[text] == 2

    first = VerifiableResponder(fail_first=1)  # each first answer fails, each later one passes
    with FakeServer(responder=first, hold=second_answer) as server:
        process = subprocess.Popen([*command, "--base-url", server.base_url], env=ENV)
        try:
            server.wait_until(lambda: server.held == 3 or process.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert server.held == 3 and server.in_flight == 3  # nothing else was in flight
        before = Counter(kind_of(body) for body in server.requests)
    # Answers held by the killed run were never given: the next server goes on counting.
    second = VerifiableResponder(fail_first=1, answers=Counter(first.answers))
    with FakeServer(responder=second) as server:
        resumed = subprocess.run([*command, "--base-url", server.base_url], env=ENV)
        assert resumed.returncode == 0
        after = Counter(kind_of(body) for body in server.requests)
        again = Counter(first_user_turn(b) for b in server.requests_for("answer"))
    assert before == {"evolve": 3, "judge": 3, "answer": 3 + 3}  # the first, then the held
    assert after == {"answer": 3}  # only the three held answers, sent again
    kept = read_jsonl(out / "gen_1.jsonl")
    assert [r["attempts"] for r in kept] == [2, 2, 2]
    assert sorted(again) == sorted(compose(r["instruction"], r["input"]) for r in kept)
    for record in kept:
        assert fails(record["output"], constraints_of(record)) == []
        assert fails(record["rejected_output"], constraints_of(record))
    assert not (out / "calls.jsonl").exists()  # the journal goes once the run is complete


# -- the embedded model ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.heavy  # left out of make mutate
@pytest.mark.skipif(
    __import__("importlib").util.find_spec("llama_cpp") is None,
    reason="needs the local extra: pip install -e '.[dev]'",
)
def test_the_embedded_model_evolves_verifiable_constraints_end_to_end(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Describe a sunny day at the beach."},
        {"instruction": "Explain how to boil an egg."},
        {"instruction": "Write a short note to a friend."},
    ]
    seeds, out = write_seeds(tmp_path / "s.jsonl", rows), tmp_path / "run"
    command = [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--generations", "2",
        "--verifiable", "--max-tokens", "160", "--temperature", "0.8", "--answer-attempts", "2",
        "--json",
    ]  # fmt: skip
    result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    manifest = assert_valid_run(out)
    assert manifest["backend"]["name"] == "local" and summary["failed"] == []
    evolved = [r for r in read_jsonl(out / "dataset.jsonl") if r["generation"] > 0]
    gone = [r for r in read_jsonl(out / "eliminated.jsonl") if r["generation"] > 0]
    # Every round ended kept or eliminated; each rewrite carried its constraints.
    assert len(evolved) + len(gone) >= len(rows)
    for record in evolved + gone:
        assert record["operation"] == VERIFIABLE and record["constraints"]
    for record in evolved:  # whatever the small model wrote, a kept answer meets its constraints
        assert fails(record["output"], constraints_of(record)) == []
        assert 1 <= record["attempts"] <= 3
        assert not any(unstated(record["instruction"], x) for x in constraints_of(record))
    for record in gone:
        assert record["reason"] in set(Reason)
        if record["reason"] == "constraint_unmet":
            assert record["attempts"] == 3 and fails(record["output"], constraints_of(record))
    stats = subprocess.run(
        [sys.executable, "-m", "evol", "stats", str(out), "--json"],
        env=ENV, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    figures = json.loads(stats.stdout)["constraints"]
    assert figures["kept"] == len(evolved)
    assert figures["lost"] == sum(r["reason"] == "constraint_lost" for r in gone)
