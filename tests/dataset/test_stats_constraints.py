"""`evol stats` on the verifiable constraints (evol.dataset.stats_constraints): the pass rate
counts every answer checked by code, as the record files show them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.fake_server import FakeServer, VerifiableResponder
from tests.support.runs import read_jsonl, record, run_args, write_run, write_seeds
from tests.support.verifiable import WORDS, SecondAnswerBad

pytestmark = pytest.mark.usefixtures("private_cache")


def test_stats_count_the_failed_answers_of_a_record_lost_to_an_answer_rule(
    evol, tmp_path: Path
) -> None:
    """Answers 1 and 2 fail (answer 1 the constraint, answer 2 is a refusal), answer 3 meets
    it, then the answer check finds it asks for information: every answer checked by code
    counts in the pass rate, as the record's file shows them (attempts 3, its unmet).

    (attack26b's version had the refusal end the record; since a further answer that fails an
    answer rule is one more attempt, the record is now lost to the answer check instead.)"""
    seeds = write_seeds(tmp_path / "s.jsonl", [{"instruction": "Explain topic one [asks]."}])
    out = tmp_path / "out"
    with FakeServer(responder=SecondAnswerBad()) as server:
        assert (
            evol(
                *run_args(
                    server,
                    seeds,
                    out,
                    "--verifiable",
                    "--generations",
                    "1",
                    "--seed",
                    "1",
                    "--answer-attempts",
                    "3",
                    "--constraint-ids",
                    WORDS,
                    "--answer-check",
                )  # fmt: skip
            ).exit_code
            == 0
        )
    # The seed's own answer is checked too (and eliminated): the evolution is the one sampled.
    (record,) = [r for r in read_jsonl(out / "eliminated.jsonl") if r["id"] == "s1.1"]
    assert (record["reason"], record["attempts"]) == ("asks_for_information", 3)
    assert record["unmet"][WORDS] >= 1
    stats = json.loads(evol("stats", out, "--json").output)["constraints"]
    rate = stats["pass_rate"][WORDS]
    assert (rate["answers"], rate["met"]) == (3, 3 - record["unmet"][WORDS])


@pytest.mark.parametrize("pass_rate", [0.5, 0.0])
def test_the_text_table_says_the_attempts_the_json_holds(
    evol, tmp_path: Path, pass_rate: float
) -> None:
    """The line under the constraint tables: the mean attempts of a kept record, how many
    records took each number, and the records lost to a constraint, as --json has them; "-"
    and "none kept" where every record with constraints was eliminated."""
    seeds = write_seeds(
        tmp_path / "s.jsonl", [{"instruction": f"Explain topic {n}."} for n in range(8)]
    )
    out = tmp_path / "out"
    options = ["--verifiable", "--generations", "1", "--seed", "1", "--answer-attempts", "3"]
    with FakeServer(responder=VerifiableResponder(pass_rate=pass_rate)) as server:
        result = evol(*run_args(server, seeds, out, *options, "--constraint-ids", WORDS))
    assert result.exit_code == 0, result.output
    found = json.loads(evol("stats", out, "--json").output)["constraints"]
    if pass_rate:
        assert found["attempts_mean"] is not None and len(found["attempts"]) > 1
        mean = f"{found['attempts_mean']:.2f}"
        tally = ", ".join(f"{n}: {count}" for n, count in found["attempts"].items())
    else:
        assert found["attempts_mean"] is None and found["unmet"] > 0
        mean, tally = "-", "none kept"
    text = evol("stats", out).output.splitlines()
    assert (
        f"attempts per kept record: mean {mean} ({tally}); eliminated: {found['lost']} "
        f"constraint_lost, {found['unmet']} constraint_unmet"
    ) in text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A text table as `evol stats` lays it out: the first column to the left, the others to
    the right, two spaces between, a rule of dashes under the header."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header), line(["-" * width for width in widths]), *map(line, rows)]


def test_the_text_tables_of_constraints_say_what_the_json_holds(evol, tmp_path: Path) -> None:
    """`evol stats`' constraint section, each figure under the column that names it: per
    generation the records with constraints, their mean and max count and the mean attempts;
    per constraint the answers checked, those that met it and the pass rate; then the
    attempts line, each part after a blank line."""
    seeds = write_seeds(
        tmp_path / "s.jsonl", [{"instruction": f"Explain topic {n}."} for n in range(8)]
    )
    out = tmp_path / "out"
    options = ["--verifiable", "--generations", "2", "--seed", "1", "--answer-attempts", "3"]
    with FakeServer(responder=VerifiableResponder(pass_rate=0.5)) as server:
        result = evol(*run_args(server, seeds, out, *options))
    assert result.exit_code == 0, result.output
    found = json.loads(evol("stats", out, "--json").output)["constraints"]
    assert found["per_generation"] and found["pass_rate"]
    per_generation = [
        [
            g,
            str(row["records"]),
            f"{row['constraints_mean']:.2f}",
            str(row["constraints_max"]),
            f"{row['attempts_mean']:.2f}",
        ]
        for g, row in found["per_generation"].items()
    ]
    pass_rate = [
        [cid, str(rate["answers"]), str(rate["met"]), f"{rate['rate']:.0%}"]
        for cid, rate in found["pass_rate"].items()
    ]
    tally = ", ".join(f"{n}: {count}" for n, count in found["attempts"].items())
    expected = [
        "",
        *_table(
            ["generation", "with constraints", "constraints mean", "max", "attempts mean"],
            per_generation,
        ),
        "",
        *_table(["constraint", "answers", "met", "pass rate"], pass_rate),
        "",
        f"attempts per kept record: mean {found['attempts_mean']:.2f} ({tally}); eliminated: "
        f"{found['lost']} constraint_lost, {found['unmet']} constraint_unmet",
    ]
    text = evol("stats", out).output.splitlines()
    start = text.index(expected[1]) - 1
    assert text[start : start + len(expected)] == expected


def test_the_constraint_figures_are_a_recount_of_the_records_to_four_decimals(
    evol, tmp_path: Path
) -> None:
    """Each mean and pass rate --json gives is the recount from the records, rounded to 4
    decimals: 1/3 is 0.3333, not 0 or 0.33333."""
    a, b = "punctuation:no_comma", "startend:end_checker"

    def carrying(rid: str, ids: list[str], attempts: int, unmet: dict[str, int]) -> dict:
        constraints = [
            {"id": cid, "kwargs": {"end_phrase": "Bye."} if cid == b else {}} for cid in ids
        ]
        return record(rid, f"Task {rid}", constraints=constraints, attempts=attempts, unmet=unmet)

    records = [
        record("s1", "Task s1"), record("s2", "Task s2"), record("s3", "Task s3"),
        carrying("s1.1", [a], 1, {}),
        carrying("s2.1", [a, b], 2, {a: 1}),
        carrying("s3.1", [a], 4, {a: 3}),
    ]  # fmt: skip
    run = write_run(tmp_path / "run", records)
    result = evol("stats", run, "--json")
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)["constraints"]
    assert figures["per_generation"]["1"] == {
        "records": 3,
        "constraints_mean": 1.3333,  # 4 constraints over 3 records
        "constraints_max": 2,
        "attempts_mean": 2.3333,  # 7 answers over 3 records
    }
    assert figures["attempts_mean"] == 2.3333
    assert figures["pass_rate"] == {
        a: {"answers": 7, "met": 3, "rate": 0.4286},
        b: {"answers": 2, "met": 2, "rate": 1.0},
    }


def test_an_id_with_no_answer_checked_has_no_pass_rate_to_claim(evol, tmp_path: Path) -> None:
    """A record that says no answer was drawn (attempts 0, as a file edited by hand or written
    by another tool may): its ids count 0 answers, none met, a rate of 0, not 1, and the other
    figures stand."""
    a, b = "punctuation:no_comma", "detectable_format:title"
    records = [
        record("s1", "Task s1"), record("s2", "Task s2"),
        record("s1.1", "Task s1.1", constraints=[{"id": a, "kwargs": {}}], attempts=0, unmet={}),
        record("s2.1", "Task s2.1", constraints=[{"id": b, "kwargs": {}}], attempts=2, unmet={}),
    ]  # fmt: skip
    result = evol("stats", write_run(tmp_path / "run", records), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["constraints"]["pass_rate"] == {
        a: {"answers": 0, "met": 0, "rate": 0.0},
        b: {"answers": 2, "met": 2, "rate": 1.0},
    }


def test_rewrites_lost_to_their_constraint_are_counted_and_answer_nothing(
    evol, tmp_path: Path
) -> None:
    """Rewrites eliminated as constraint_lost carry their constraints but no answer (no
    attempts): each counts once in `lost`, none in the pass rates, and records of other
    reasons, or with `constraints: []`, count in neither."""
    a = "punctuation:no_comma"
    held = [{"id": a, "kwargs": {}}]

    def gone(rid: str, reason: str, **fields: object) -> dict:
        return record(rid, f"Task {rid}", output=None, reason=reason, detail="-", **fields)

    records = [
        record("s1", "Task s1"), record("s2", "Task s2"), record("s3", "Task s3"),
        record("s1.1", "Task s1.1", constraints=held, attempts=2, unmet={a: 1}),
        record("s3.1", "Task s3.1", constraints=[]),
    ]  # fmt: skip
    eliminated = [
        gone("s2.1", "constraint_lost", constraints=held),
        gone("s2.2", "constraint_lost", constraints=held),
        gone("s1.2", "constraint_lost", constraints=held),
        gone("s3.2", "unchanged", constraints=held, attempts=1, unmet={}),
        gone("s2.3", "constraint_lost", constraints=[]),
        gone("s3.3", "unchanged"),
    ]
    result = evol("stats", write_run(tmp_path / "run", records, eliminated), "--json")
    assert result.exit_code == 0, result.stderr
    figures = json.loads(result.stdout)["constraints"]
    assert (figures["lost"], figures["unmet"], figures["kept"]) == (3, 0, 1)
    assert figures["pass_rate"] == {a: {"answers": 3, "met": 2, "rate": 0.6667}}
    assert figures["per_generation"]["1"]["records"] == 1


def test_a_run_whose_records_carry_no_constraint_has_no_constraint_figures(
    evol, tmp_path: Path
) -> None:
    """`constraints: []` (a record written by another tool) is no constraint: stats shows no
    constraint figures for such a run."""
    records = [record("s1", "Task s1"), record("s1.1", "Task s1.1", constraints=[])]
    result = evol("stats", write_run(tmp_path / "run", records), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout).get("constraints") is None
