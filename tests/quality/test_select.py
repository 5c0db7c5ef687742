"""`evol select`: complexity x quality, the budget, the similarity skip, contamination."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from evol.method.textstats import rouge_l, tokens
from tests.support.runs import read_jsonl, record, write_run, write_seeds
from tests.support.selection import ROWS, SCRIPT, scored_run
from tests.support.varied_runs import NGRAM, contaminated_ids, kept_of, recorded_scores, scored

__all__ = ["scored"]  # a fixture: a scored, checked run

pytestmark = pytest.mark.usefixtures("scripted_backend")


def select(evol, run: Path, out: Path, *options: object) -> dict[str, Any]:
    result = evol("select", run, "--out", out, "--json", *options)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def picked(path: Path) -> list[str]:
    return [json.loads(line)["instruction"] for line in path.read_text().splitlines()]


def test_best_products_first_near_repeats_skipped_budget_kept(evol, tmp_path: Path) -> None:
    run, out = scored_run(evol, tmp_path, ROWS), tmp_path / "picked.jsonl"
    summary = select(evol, run, out, "--budget", "3")
    assert picked(out) == [
        "Explain recursion with an example",
        "Sort a list of names in Python",
        "Write a haiku about autumn rain",
    ]
    assert summary | {"out": None} == {
        "out": None,
        "picked": 3,
        "records": 6,
        "scores_used": ["difficulty", "quality"],
        "models": {"difficulty": "script", "quality": "script"},
        "dropped": {"too_similar": 1},
        "not_reached": 2,
        "picked_without_all_scores": 0,
        "picked_contaminated": 0,
        "contamination_stale": False,
    }
    assert json.loads(out.read_text().splitlines()[0]).keys() == {"instruction", "input", "output"}

    # A budget above what is left: the record without a difficulty score comes last.
    summary = select(evol, run, out, "--budget", "10")
    assert picked(out)[-2:] == [
        "Translate hello into French",
        "Prove that the square root of two is irrational",
    ]
    assert summary["picked_without_all_scores"] == 1 and summary["not_reached"] == 0
    text = evol("select", run, "--out", out, "--budget", "10").stdout
    assert "ranked by difficulty (script) x quality (script)" in text
    assert "passed over: too_similar 1; not reached: 0" in text


@pytest.mark.parametrize(("similarity", "both"), [("0.75", False), ("0.76", True)])
def test_similarity_is_passed_over_at_the_threshold_and_not_below(
    evol, tmp_path: Path, similarity: str, both: bool
) -> None:
    # 3 of 4 words in order: ROUGE-L F1 = 2 * 3 / (4 + 4) = 0.75 exactly.
    rows = {"alpha beta gamma delta": (9, 9), "alpha beta gamma omega": (5, 5)}
    run, out = scored_run(evol, tmp_path, rows), tmp_path / "picked.jsonl"
    summary = select(evol, run, out, "--budget", "5", "--similarity", similarity)
    assert picked(out) == (list(rows) if both else ["alpha beta gamma delta"])
    assert summary["dropped"] == ({} if both else {"too_similar": 1})


def test_contaminated_records_are_dropped_on_request(evol, tmp_path: Path) -> None:
    run, out = scored_run(evol, tmp_path, ROWS), tmp_path / "picked.json"
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "Sort a list of names in Python"}) + "\n")
    checked = evol(
        "score", run, "--no-difficulty", "--no-complexity", "--against", bench, "--ngram", "5"
    )
    assert checked.exit_code == 0 and "s3 (instruction)" in checked.stdout

    kept = select(evol, run, out, "--budget", "2", "--format", "sharegpt")
    assert kept["picked_contaminated"] == 1
    rows = json.loads(out.read_text())  # a .json file holds one array
    assert rows[1]["conversations"][0] == {
        "from": "human",
        "value": "Sort a list of names in Python",
    }
    assert (
        "--drop-contaminated leaves them out"
        in evol("select", run, "--out", out, "--budget", "2").stdout
    )

    dropped = select(evol, run, out, "--budget", "2", "--drop-contaminated")
    assert dropped["dropped"] == {"contaminated": 1, "too_similar": 1}
    assert [r["instruction"] for r in json.loads(out.read_text())] == [
        "Explain recursion with an example",
        "Write a haiku about autumn rain",
    ]


def test_records_without_an_answer_are_passed_over(evol, tmp_path: Path) -> None:
    SCRIPT.clear()
    SCRIPT.update({"Name a river": (3, None), "Name a mountain": (4, None)})
    run = write_run(
        tmp_path / "run",
        [record("s1", "Name a river"), record("s2", "Name a mountain", output=None)],
    )
    assert evol("score", run, "--backend", "scripted", "--no-complexity").exit_code == 0
    summary = select(evol, run, tmp_path / "out.jsonl", "--budget", "5")
    assert summary["scores_used"] == ["difficulty"] and summary["dropped"] == {"no_output": 1}


@pytest.mark.usefixtures("logprob_backend")
def test_complexity_ranks_when_there_is_no_difficulty(evol, tmp_path: Path) -> None:
    records = [
        record("s1", "Add two numbers"),
        record("s1.1", "Add two numbers given as words, not digits"),
    ]
    run = write_run(tmp_path / "run", records)
    assert evol("score", run, "--backend", "logprob-fake", "--no-difficulty").exit_code == 0
    out = tmp_path / "out.jsonl"
    summary = select(evol, run, out, "--budget", "1", "--similarity", "1")
    assert summary["scores_used"] == ["complexity"]
    assert picked(out) == ["Add two numbers given as words, not digits"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ((), "has no scores: run evol score"),
        (("--drop-contaminated",), "never checked for contamination"),
    ],
)
def test_what_cannot_be_selected_is_one_line(
    evol, tmp_path: Path, options: tuple[str, ...], message: str
) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river")])
    if options:
        SCRIPT.clear()
        SCRIPT.update({"Name a river": (3, 3)})
        assert evol("score", run, "--backend", "scripted", "--no-complexity").exit_code == 0
    result = evol("select", run, "--out", tmp_path / "o.jsonl", "--budget", "1", *options)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["gen_0.jsonl", "run.json", "scores.jsonl", None])
def test_select_never_writes_over_the_run_nor_into_a_directory(
    evol, tmp_path: Path, name: str | None
) -> None:
    run = scored_run(evol, tmp_path, {"Name a river": (3, 3), "Name a lake": (4, 4)})
    out = run / name if name else tmp_path / "a-directory"
    if name is None:
        out.mkdir()
    before = {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()}
    result = evol("select", run, "--out", out, "--budget", "1")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.is_file()} == before
    assert not list(tmp_path.glob("*.tmp"))


def test_select_writes_evols_own_records_as_parquet(evol, tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    run = scored_run(evol, tmp_path, {"Name a river": (3, 3), "Name a lake": (4, 4)})
    out = tmp_path / "picked.parquet"
    select(evol, run, out, "--budget", "2", "--format", "jsonl")
    rows = pq.read_table(out).to_pylist()
    assert [row["instruction"] for row in rows] == ["Name a lake", "Name a river"]
    assert all(json.loads(row["metadata"]) == {} for row in rows)  # an empty object, as JSON text


def greedy(
    records: list[dict[str, Any]],
    book: dict[str, dict[str, float | None]],
    budget: int,
    similarity: float,
    flagged: set[str],
) -> list[str]:
    """The ids `evol select` should pick, by the rule its docs give, computed plainly."""

    def rank(candidate: dict[str, Any]) -> tuple[int, float]:
        values = [book[name].get(candidate["id"]) for name in ("difficulty", "quality")]
        if None in values:
            return 1, 0.0
        return 0, -(values[0] * values[1])

    picks: list[dict[str, Any]] = []
    for candidate in sorted(records, key=rank):
        if len(picks) == budget:
            break
        words = tokens(candidate["instruction"])
        if candidate["output"] is None or candidate["id"] in flagged:
            continue
        if any(rouge_l(words, tokens(p["instruction"])) >= similarity for p in picks):
            continue
        picks.append(candidate)
    return [p["id"] for p in picks]


@pytest.mark.parametrize(
    ("budget", "similarity", "drop"),
    [(2, "0.7", False), (100, "0.7", False), (100, "0.7", True), (6, "1", True), (100, "1", False)],
)
def test_select_picks_what_a_plain_greedy_pick_does(
    evol, scored: dict[str, Any], tmp_path: Path, budget: int, similarity: str, drop: bool
) -> None:
    run, out = scored["run"], tmp_path / "picked.jsonl"
    flagged = contaminated_ids(run, scored["items"], NGRAM)
    options = ["--drop-contaminated"] if drop else []
    result = evol("select", run, "--out", out, "--json", "--format", "jsonl", "--budget", budget,
                  "--similarity", similarity, *options)  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    records = kept_of(run)
    expected = greedy(
        records, recorded_scores(run), budget, float(similarity), flagged if drop else set()
    )
    assert [r["id"] for r in read_jsonl(out)] == expected
    assert summary["scores_used"] == ["difficulty", "quality"]
    assert summary["picked"] == len(expected)
    assert summary["picked_contaminated"] == sum(i in flagged for i in expected)
    unscored = {i for i, v in recorded_scores(run)["difficulty"].items() if v is None}
    assert summary["picked_without_all_scores"] == len(unscored & set(expected))
    assert summary["contamination_stale"] is False
    passed_over = sum(summary["dropped"].values())
    assert summary["not_reached"] == len(records) - len(expected) - passed_over
    if drop:
        assert not flagged & set(expected) and summary["dropped"]["contaminated"] > 0


def test_a_run_grown_after_its_check_says_so(evol, scored: dict[str, Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(scored["run"], run)
    last = read_jsonl(run / "gen_3.jsonl")[-1]
    with (run / "gen_3.jsonl").open("a", encoding="utf-8") as fp:
        fp.write(json.dumps(last | {"id": last["id"] + ".9", "instruction": "Name a lake"}) + "\n")
    stats = json.loads(evol("stats", run, "--json").stdout)
    assert stats["contamination"]["stale"] is True
    assert "the run grew after this check" in evol("stats", run).stdout
    result = evol("select", run, "--out", tmp_path / "p.jsonl", "--budget", "2", "--json")
    assert json.loads(result.stdout)["contamination_stale"] is True


def test_the_product_ranks_and_equal_products_keep_run_order(evol, tmp_path: Path) -> None:
    # By the sum of the scores (11, 10, 12, 10) the order would differ from the product's.
    rows = {
        "Name every planet of the solar system": (10, 1),  # 10
        "Write a sonnet about a lighthouse keeper": (5, 5),  # 25
        "Prove that there are infinitely many primes": (3, 9),  # 27
        "Describe the taste of fresh bread to a robot": (1, 9),  # 9
        "Explain why the sky looks blue at noon": (9, 1),  # 9: after the one before it
    }
    run, out = scored_run(evol, tmp_path, rows), tmp_path / "picked.jsonl"
    result = evol("select", run, "--out", out, "--budget", "5", "--json")
    assert result.exit_code == 0, result.output
    order = sorted(rows, key=lambda text: -(rows[text][0] * rows[text][1]))
    assert [r["instruction"] for r in read_jsonl(out)] == order


def test_a_near_copy_of_a_picked_seed_in_its_own_lineage_is_passed_over(
    evol, tmp_path: Path
) -> None:
    """And equal products keep run order (s9 before s10), a record without an answer is
    passed over whatever its rank."""
    from tests.support.selection import SCRIPT

    seed, child, grandchild = (
        "Explain recursion with an example",
        "Explain recursion with an example please",
        "Explain recursion with an example, please, now",
    )
    SCRIPT.clear()
    SCRIPT.update(
        {
            seed: (9, 9),
            child: (8, 8),
            grandchild: (7, 7),
            "Name a river": (2, 2),
            "Name a desert in Asia": (2, 2),
            "Name a mountain": (10, None),
        }
    )
    records = [
        record("s1", seed, output="Answer 1."),
        record("s9", "Name a river", output="Answer 2."),
        record("s10", "Name a desert in Asia", output="Answer 3."),
        record("s3", "Name a mountain", output=None),
        record("s1.2", child, output="Answer 4."),  # round 1 was eliminated
        record("s1.2.3", grandchild, output="Answer 5."),
    ]
    run = write_run(tmp_path / "run", records)
    scoring = evol("score", run, "--backend", "scripted", "--answers", "--no-complexity")
    assert scoring.exit_code == 0, scoring.output
    out = tmp_path / "picked.jsonl"
    result = evol("select", run, "--out", out, "--budget", "4", "--json", "--format", "jsonl")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_jsonl(out)] == ["s1", "s9", "s10"]
    assert json.loads(result.stdout)["dropped"] == {"no_output": 1, "too_similar": 2}


def select_lines(evol, run: Path, out: Path, *options: str) -> list[str]:
    result = evol("select", run, "--out", out, *options)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_select_says_what_it_picked_passed_over_and_what_to_run_next(evol, tmp_path: Path) -> None:
    """The haiku is in the evaluation set; the proof has no difficulty score; the second
    recursion prompt is too similar to the first."""
    run = scored_run(evol, tmp_path, ROWS)
    evaluation = write_seeds(
        tmp_path / "eval.jsonl", [{"instruction": "A haiku about autumn rain"}]
    )
    checked = evol("score", run, "--backend", "scripted", "--against", evaluation, "--ngram", "3")
    assert checked.exit_code == 0, checked.output
    ranked = "ranked by difficulty (script) x quality (script)"
    out = tmp_path / "picked.jsonl"

    assert select_lines(evol, run, out, "--budget", "1") == [
        f"{out}: 1 of 6 records, {ranked}",
        "passed over: none; not reached: 5",
    ]
    assert select_lines(evol, run, out, "--budget", "6") == [
        f"{out}: 5 of 6 records, {ranked}",
        "passed over: too_similar 1; not reached: 0",
        "1 picked records lack a score (ranked last); evol score --retry-missing asks again",
        "1 picked records are flagged as contaminated; --drop-contaminated leaves them out",
    ]
    grown = tmp_path / "grown"
    shutil.copytree(run, grown)
    with (grown / "gen_0.jsonl").open("a", encoding="utf-8") as fp:
        fp.write(json.dumps(record("s9", "Name a lake in Finland")) + "\n")
    assert select_lines(evol, grown, out, "--budget", "9", "--drop-contaminated") == [
        f"{out}: 5 of 7 records, {ranked}",
        "passed over: contaminated 1, too_similar 1; not reached: 0",
        "2 picked records lack a score (ranked last); evol score --retry-missing asks again",
        "the run grew after its contamination check: run evol score --against again",
    ]


def test_select_writes_the_same_rows_to_parquet_and_to_jsonl_without_pyarrow(
    evol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyarrow = pytest.importorskip("pyarrow.parquet")
    run = scored_run(evol, tmp_path, ROWS)
    select_lines(evol, run, tmp_path / "picked.parquet", "--budget", "3")
    with monkeypatch.context() as blocked:
        blocked.setitem(sys.modules, "pyarrow", None)  # pyarrow is optional: jsonl needs none
        select_lines(evol, run, tmp_path / "picked.jsonl", "--budget", "3")
    rows = read_jsonl(tmp_path / "picked.jsonl")
    assert len(rows) == 3 and set(rows[0]) == {"instruction", "input", "output"}
    assert pyarrow.read_table(tmp_path / "picked.parquet").to_pylist() == rows
