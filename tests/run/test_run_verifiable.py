"""`evol run --verifiable` end to end (#26): add_verifiable_constraint draws an IFEval constraint,
the rewrite must state it (the wording check, the judge), answers are checked by code and drawn
again until one passes, and stats, verify, --batch and a resume after kill -9 agree with what was
kept."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evol.method.contradictions import contradicts
from evol.method.elimination import Reason
from evol.method.operations import VERIFIABLE
from evol.method.wording import unstated
from evol.rundir.records import compose
from tests.support.batch_server import BatchServer
from tests.support.fake_server import (
    FakeServer,
    VerifiableResponder,
    first_user_turn,
    kind_of,
)
from tests.support.runs import assert_valid_run, read_jsonl, run_args, write_seeds
from tests.support.subprocesses import ENV
from tests.support.verifiable import (
    POOL,
    SEEDS,
    constraints_of,
    expected_attempts,
    fails,
    verifiable_run,
)

pytestmark = pytest.mark.usefixtures("private_cache")


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


def test_no_constraint_left_names_the_pool_and_what_the_lineage_carries(evol, tmp_path) -> None:
    """The detail of a lineage whose pool is spent: the ids it was drawn from, and those it
    carries, in the order they were added."""
    pool = ["punctuation:no_comma", "startend:end_checker"]
    rows = [{"instruction": "Tell a story about a fox."}]
    with FakeServer(responder=VerifiableResponder()) as server:
        out = verifiable_run(
            evol, server, tmp_path, "--generations", "3", "--constraint-ids", ",".join(pool),
            rows=rows,
        )  # fmt: skip
    [kept] = read_jsonl(out / "gen_2.jsonl")
    carried = [c["id"] for c in kept["constraints"]]
    assert sorted(carried) == pool
    [gone] = read_jsonl(out / "eliminated.jsonl")
    assert (gone["id"], gone["reason"]) == ("s1.1.2.3", "no_constraint_left")
    assert gone["detail"] == (
        "each constraint of punctuation:no_comma, startend:end_checker contradicts one the "
        f"lineage carries ({', '.join(carried)})"
    )


def test_the_constraints_drawn_follow_the_seed(evol, tmp_path) -> None:
    """Each constraint is drawn from (--seed, the record, its generation): another --seed
    draws others."""
    drawn = []
    for seed in ("1", "2"):
        with FakeServer(responder=VerifiableResponder()) as server:
            out = verifiable_run(
                evol, server, tmp_path, "--generations", "1", "--seed", seed, name=f"seed{seed}"
            )
        drawn.append({r["id"]: r["constraints"] for r in read_jsonl(out / "gen_1.jsonl")})
    assert drawn[0] != drawn[1]


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


def test_a_record_no_answer_of_which_met_its_constraints_says_which_and_how_often(
    evol, tmp_path: Path
) -> None:
    """Every answer fails its constraints: the record is eliminated as constraint_unmet, and
    its detail names the constraints unmet and how many of its answers failed each, as its
    `unmet` and `attempts` fields hold them, and no answer rule (none failed)."""
    with FakeServer(responder=VerifiableResponder(pass_rate=0.0)) as server:
        out = verifiable_run(evol, server, tmp_path, "--generations", "1", "--seed", "1")
    lost = [r for r in read_jsonl(out / "eliminated.jsonl") if r["reason"] == "constraint_unmet"]
    assert lost
    for record in lost:
        unmet, attempts = record["unmet"], record["attempts"]
        tally = ", ".join(f"{cid} {unmet[cid]} of {attempts}" for cid in sorted(unmet))
        assert record["detail"] == (
            f"no answer of {attempts} met {', '.join(sorted(unmet))} (failed: {tally})"
        )


def test_an_unmet_record_with_two_constraints_names_both_with_a_tally_each(evol, tmp_path) -> None:
    """A second-generation record carries two constraints; when no answer meets them, its
    detail names both, sorted, and how many answers failed each."""
    pool = "punctuation:no_comma,startend:end_checker,keywords:existence"
    with FakeServer(responder=VerifiableResponder(pass_rate=0.5)) as server:
        out = verifiable_run(
            evol, server, tmp_path, "--generations", "2", "--seed", "3", "--constraint-ids", pool
        )
    lost = [r for r in read_jsonl(out / "eliminated.jsonl") if r["reason"] == "constraint_unmet"]
    both = [r for r in lost if len(r["unmet"]) == 2]
    assert both
    for record in both:
        (first, a), (second, b) = sorted(record["unmet"].items())
        n = record["attempts"]
        assert record["detail"] == (
            f"no answer of {n} met {first}, {second} (failed: {first} {a} of {n}, {second} {b} of {n})"
        )


class EmptyAnswers(VerifiableResponder):
    """Every answer to an evolved instruction is empty."""

    def answer(self, instruction: str) -> str | tuple[str, str]:
        return "" if "(v" in instruction else super().answer(instruction)


def test_an_empty_answer_meets_no_constraint_even_with_the_stop_word_rule_off(
    evol, tmp_path
) -> None:
    """With --no-stopword-check an empty answer passes the answer rules, but IFEval's checks
    fail it: no record is kept with an empty answer as meeting its constraints."""
    rows = [{"instruction": "Tell a story about a fox."}]
    with FakeServer(responder=EmptyAnswers()) as server:
        out = verifiable_run(
            evol, server, tmp_path, "--generations", "1", "--no-stopword-check",
            "--constraint-ids", "punctuation:no_comma", "--answer-attempts", "1", rows=rows,
        )  # fmt: skip
    assert not (out / "gen_1.jsonl").exists() or read_jsonl(out / "gen_1.jsonl") == []
    [gone] = read_jsonl(out / "eliminated.jsonl")
    assert (gone["id"], gone["reason"]) == ("s1.1", "constraint_unmet")
    assert gone["unmet"] == {"punctuation:no_comma": 2}


class OptionsResponder(VerifiableResponder):
    """VerifiableResponder whose answers to an instruction that lists IFEval's fixed options
    give the first of them (detectable_format:constrained_response)."""

    def answer(self, instruction: str) -> str | tuple[str, str]:
        if "My answer is yes." in instruction:
            return "My answer is yes."
        return super().answer(instruction)


def test_a_lineage_holding_a_constraint_against_every_id_names_the_whole_pool(
    evol, tmp_path
) -> None:
    """With no --constraint-ids, the pool is every id evol draws: a lineage that drew
    constrained_response (an answer that is one of three fixed phrases, which every other
    constraint contradicts) ends at its next rewrite, for free, and says so in those words.
    (--seed 103 draws constrained_response for s1.1.)"""
    rows = [{"instruction": "Tell a story about a fox."}]
    with FakeServer(responder=OptionsResponder()) as server:
        out = verifiable_run(
            evol, server, tmp_path, "--generations", "2", "--seed", "103", rows=rows
        )
    [kept] = read_jsonl(out / "gen_1.jsonl")
    assert [c["id"] for c in kept["constraints"]] == ["detectable_format:constrained_response"]
    [gone] = read_jsonl(out / "eliminated.jsonl")
    assert (gone["id"], gone["reason"]) == ("s1.1.2", "no_constraint_left")
    assert gone["detail"] == (
        "each constraint of every id contradicts one the lineage carries "
        "(detectable_format:constrained_response)"
    )
