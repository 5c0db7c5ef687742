"""`evol stats` on a real run against the fake server; expectations computed from the files."""

from __future__ import annotations

import json
import shutil
import statistics
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from evol.dataset.stats import run_stats
from evol.method.textstats import word_count
from evol.rundir.record_files import iter_records
from tests.support.fake_server import FakeServer
from tests.support.runs import read_jsonl, record, run_args, write_run, write_seeds
from tests.support.score_runs import scored_run
from tests.support.scoring import ScoringResponder, make_run, score_args
from tests.support.selection import ROWS
from tests.support.selection import scored_run as scripted_run
from tests.support.varied_runs import NGRAM, contaminated_ids, kept_of, recorded_scores, scored

__all__ = ["scored", "scored_run"]  # fixtures: a scored, checked run; the run's cost

T = TypeVar("T")

SEEDS = [
    {"instruction": "Name two"},
    {"instruction": "List four small prime numbers"},
    {"instruction": "Explain in ten words why the sea is salty today"},
    {"instruction": "[sorry] Describe a cat"},
    {"instruction": "[leak] Describe a dog"},
]


def traced(action: Callable[[], T]) -> tuple[T, int]:
    """What `action` returns, and the most memory Python held at once while it ran."""
    tracemalloc.start()
    try:
        return action(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def percentile(values: list[int], fraction: float) -> float:
    return round(
        statistics.quantiles(values, n=100, method="inclusive")[int(fraction * 100) - 1], 1
    )


def cells(table: str, but: str = "") -> list[list[str]]:
    """The cells of a plain-text table, less its rule line and any row named `but`."""
    rows = [line.split() for line in table.splitlines()]
    return [row for row in rows if not row[0].startswith("-") and row[0] != but]


def test_stats_per_generation_operation_and_role(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    with FakeServer(models=("gpt-4o-mini",)) as server:
        assert evol(*run_args(server, seeds, out, "--generations", "2")).exit_code == 0
    result = evol("stats", out, "--json")
    assert result.exit_code == 0
    stats = json.loads(result.stdout)

    kept = {g: read_jsonl(out / f"gen_{g}.jsonl") for g in (0, 1, 2)}
    eliminated = read_jsonl(out / "eliminated.jsonl")
    for g, row in enumerate(stats["generations"]):
        words = [word_count(r["instruction"]) for r in kept[g]]
        # The [sorry] seed's answer is eliminated too; every round eliminates [sorry] and [leak].
        assert row["kept"] == len(kept[g]) == 3 + (g == 0)
        assert row["instruction_words"] == {
            "mean": round(statistics.mean(words), 1),
            "p50": statistics.median(words),
            "p90": percentile(words, 0.9),
            "max": max(words),
        }
        reasons = [r["reason"] for r in eliminated if r["generation"] == g]
        assert row["eliminated"] == {reason: reasons.count(reason) for reason in set(reasons)}
    # The fake evolver appends four words a round, so each generation is 4 words longer on average.
    means = [row["instruction_words"]["mean"] for row in stats["generations"]]
    assert [round(b - a, 1) for a, b in zip(means[1:], means[2:], strict=False)] == [4.0]

    ops = stats["operations"]
    everything = [r for g in (1, 2) for r in kept[g]] + [r for r in eliminated if r["generation"]]
    for name, row in ops.items():
        mine = [r for r in everything if r["operation"] == name]
        assert row["kept"] + row["eliminated"] == len(mine)
        assert row["success_rate"] == round(row["kept"] / len(mine), 4)
    assert sum(row["eliminated"] for row in ops.values()) == 4  # the evolutions
    assert len(eliminated) == 5  # and the seed answer

    prompt = sum(r["usage"]["evolve"]["prompt_tokens"] for r in everything)
    completion = sum(r["usage"]["evolve"]["completion_tokens"] for r in everything)
    evolve = stats["roles"]["evolve"]
    assert (evolve["model"], evolve["prompt_tokens"], evolve["completion_tokens"]) == (
        "gpt-4o-mini",
        prompt,
        completion,
    )
    assert evolve["cost_usd"] == round(
        (prompt * 0.15 + completion * 0.60) / 1e6, 6
    )  # the built-in table

    priced = json.loads(evol("stats", out, "--json", "--price-in", "1", "--price-out", "2").stdout)
    assert priced["roles"]["evolve"]["cost_usd"] == round((prompt + 2 * completion) / 1e6, 6)
    assert priced["total_cost_usd"] == round(
        sum(r["cost_usd"] for r in priced["roles"].values()), 6
    )

    table = evol("stats", out)
    assert table.exit_code == 0 and "success" in table.stdout and "total cost: $" in table.stdout


def test_stats_of_a_directory_without_a_run(evol, tmp_path: Path) -> None:
    result = evol("stats", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"evol: error: {tmp_path}: no run here (run.json is missing)"


def test_stats_and_report_read_every_generation_file_even_without_gen_0(
    evol, tmp_path: Path
) -> None:
    # Every seed answer can fail after retries while evolutions succeed: gen_0.jsonl is absent.
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:3]), tmp_path / "run"
    with FakeServer() as server:
        assert evol(*run_args(server, seeds, out, "--generations", "2")).exit_code == 0
    (out / "gen_0.jsonl").unlink()
    stats = json.loads(evol("stats", out, "--json").stdout)
    assert [(g["generation"], g["kept"]) for g in stats["generations"]] == [(0, 0), (1, 3), (2, 3)]
    assert evol("report", out, "--out", tmp_path / "r.html").exit_code == 0
    assert "[gen 1]" in (tmp_path / "r.html").read_text()


def test_stats_show_scores_per_generation_and_operation(evol, tmp_path: Path) -> None:
    from tests.support.scoring import ScoringResponder, difficulty_of, kept, ranks, task

    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:3]), tmp_path / "run"
    with FakeServer() as server:
        assert evol(*run_args(server, seeds, out, "--generations", "3")).exit_code == 0
    unscored = evol("stats", out).stdout
    with FakeServer(responder=ScoringResponder()) as server:
        assert evol("score", out, "--base-url", server.base_url, "--no-metrics").exit_code == 0
    stats = json.loads(evol("stats", out, "--json").stdout)

    records = kept(out)
    difficulty = {r["id"]: difficulty_of(task(r)) for r in records}
    for row in stats["generations"]:
        mine = [difficulty[r["id"]] for r in records if r["generation"] == row["generation"]]
        assert row["difficulty_mean"] == round(statistics.mean(mine), 4)
        assert row["difficulty_sd"] == round(statistics.stdev(mine), 4)
        assert row["difficulty_scored"] == len(mine) == 3
    rank = {}
    for root in {r["root_id"] for r in records}:
        chain = [r for r in records if r["root_id"] == root]
        rank |= dict(zip([r["id"] for r in chain], ranks([task(r) for r in chain]), strict=True))
    for name, row in stats["operations"].items():
        children = [r for r in records if r["operation"] == name]
        gains = [difficulty[r["id"]] - difficulty[r["parent_id"]] for r in children]
        assert row["difficulty_gain"] == round(statistics.mean(gains), 4)
        ranked = [rank[r["id"]] - rank[r["parent_id"]] for r in children]
        assert row["complexity_gain"] == round(statistics.mean(ranked), 4)
        assert row["difficulty_mean"] == round(
            statistics.mean(difficulty[r["id"]] for r in children), 4
        )
    assert stats["scores"] == {
        "difficulty": {"model": "fake-model", "scored": 12, "missing": 0},
        "complexity": {"model": "fake-model", "scored": 12, "missing": 0},
    }
    assert stats["contamination"] is None and stats["metrics_stale"] is None

    table = evol("stats", out).stdout
    assert "difficulty gain" in table
    assert "scores: difficulty by fake-model (0 records missing)" in table
    # The tables printed before scoring are still there, whole: generations, total cost; the
    # roles table only gains a row for the scoring calls.
    blocks = unscored.split("\n\n")
    assert blocks[1] in table and blocks[4] in table
    roles = next(block for block in table.split("\n\n") if block.startswith("role"))
    assert cells(roles, but="score") == cells(blocks[3])


def test_a_run_without_scores_prints_as_before(evol, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:3]), tmp_path / "run"
    with FakeServer() as server:
        assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    table = evol("stats", out).stdout
    for word in ("difficulty", "distinct", "contaminated", "scores:"):
        assert word not in table
    stats = json.loads(evol("stats", out, "--json").stdout)
    assert stats["scores"] is None and stats["contamination"] is None
    assert {row["difficulty_mean"] for row in stats["generations"]} == {None}
    assert {row["difficulty_gain"] for row in stats["operations"].values()} == {None}


def test_absurd_numbers_in_a_run_cost_nothing(evol, tmp_path: Path) -> None:
    # Records claiming generation 100,000,000 (round 10**18) or -3, one of them 15 MB (in 15,000
    # words): stats lists the generations that hold records, never a range up to the largest.
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    with FakeServer() as server:
        assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    child = read_jsonl(out / "gen_1.jsonl")[0]
    far = {**child, "id": "s1.9", "generation": 100_000_000, "round": 10**18, "reason": "unchanged"}
    before = {**child, "id": "s1.8", "generation": -3, "instruction": ("x" * 999 + " ") * 15_000}
    with (out / "eliminated.jsonl").open("a", encoding="utf-8") as fp:
        fp.write(json.dumps(far) + "\n")
    with (out / "gen_1.jsonl").open("a", encoding="utf-8") as fp:
        fp.write(json.dumps(before) + "\n")

    _count, reading = traced(lambda: sum(1 for _ in iter_records(out)))
    stats, peak = traced(lambda: run_stats(out))
    # What stats adds to reading the records (orjson's peak for the 15 MB line) is small.
    assert peak < reading + 20_000_000

    kept = Counter(r["generation"] for g in (0, 1) for r in read_jsonl(out / f"gen_{g}.jsonl"))
    eliminated = read_jsonl(out / "eliminated.jsonl")
    assert [row.generation for row in stats.generations] == [-3, 0, 1, 100_000_000]
    for row in stats.generations:
        reasons = Counter(r["reason"] for r in eliminated if r["generation"] == row.generation)
        assert (row.kept, row.eliminated) == (kept[row.generation], dict(sorted(reasons.items())))
    assert stats.generations[0].instruction_words.max == 15_000
    table = evol("stats", out)
    assert table.exit_code == 0 and "\n100000000 " in table.stdout and "\n-3 " in table.stdout


# -- the scoring calls' cost and the generation rows (found by mutation testing) ---------------


def scores_line(model: str, record_id: str, prompt: int, completion: int) -> str:
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    line = {"scorer": "difficulty", "model": model, "id": record_id, "digest": "0" * 16}
    return json.dumps(line | {"score": 5.0, "usage": usage}) + "\n"


def stats_of(evol, run: Path, *args: str) -> dict:
    result = evol("stats", run, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_scoring_calls_are_priced_by_the_table_per_model_and_unknown_with_one_unpriced(
    evol, tmp_path: Path
) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river."), record("s2", "Name two.")])
    scores = run / "scores.jsonl"
    scores.write_text(
        scores_line("gpt-4o-mini", "s1", 1000, 100) + scores_line("gpt-4o-mini", "s2", 3000, 100)
    )
    stats = stats_of(evol, run)
    assert stats["run"] == str(run)
    # gpt-4o-mini: $0.15 and $0.60 per million tokens in, out.
    assert stats["roles"]["score"] == {
        "model": "gpt-4o-mini",
        "prompt_tokens": 4000,
        "completion_tokens": 200,
        "cost_usd": round((4000 * 0.15 + 200 * 0.60) / 1e6, 6),
    }

    with scores.open("a") as out:  # scored again by a model the table does not price
        out.write(scores_line("fake-model", "s1", 10, 1))
    stats = stats_of(evol, run)
    assert stats["roles"]["score"] == {
        "model": "fake-model, gpt-4o-mini",
        "prompt_tokens": 4010,
        "completion_tokens": 201,
        "cost_usd": None,
    }
    assert stats["total_cost_usd"] is None
    priced = stats_of(evol, run, "--price-in", "1", "--price-out", "2")["roles"]["score"]
    assert priced["cost_usd"] == round((4010 + 2 * 201) / 1e6, 6)


def test_a_run_json_that_names_no_backend_still_has_its_stats(evol, tmp_path: Path) -> None:
    """A run.json of an evol before the backend was recorded, or written by another tool: the
    models of its roles are unknown, the scoring calls are priced by their own model."""
    run = write_run(tmp_path / "run", [record("s1", "Name a river."), record("s1.1", "Name two.")])
    manifest = json.loads((run / "run.json").read_text())
    del manifest["backend"]
    (run / "run.json").write_text(json.dumps(manifest))
    (run / "scores.jsonl").write_text(scores_line("gpt-4o-mini", "s1", 1000, 100))
    stats = stats_of(evol, run)
    assert [row["kept"] for row in stats["generations"]] == [1, 1]
    assert stats["roles"]["score"]["cost_usd"] == round((1000 * 0.15 + 100 * 0.60) / 1e6, 6)


def test_the_table_has_a_row_for_every_generation_up_to_the_last_with_records(
    evol, tmp_path: Path
) -> None:
    """Generations 1 and 2 lost every record (eliminated, then the file removed): their rows
    are there, empty, between gen 0 and gen 3."""
    run = write_run(
        tmp_path / "run", [record("s1", "Name a river."), record("s1.1.1.1", "Name four.")]
    )
    rows = stats_of(evol, run)["generations"]
    assert [(row["generation"], row["kept"]) for row in rows] == [(0, 1), (1, 0), (2, 0), (3, 1)]


def test_a_record_of_the_last_generation_a_run_can_make_has_every_row_before_it(
    evol, tmp_path: Path
) -> None:
    run = write_run(
        tmp_path / "run", [record("s1", "Name a river."), record("s1.1", "Far.", generation=100)]
    )
    rows = stats_of(evol, run)["generations"]
    assert [row["generation"] for row in rows] == list(range(101))
    assert [row["kept"] for row in rows] == [1] + [0] * 99 + [1]


def test_a_run_without_records_has_one_empty_row_for_its_seeds(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river.")])
    (run / "gen_0.jsonl").unlink()
    rows = stats_of(evol, run)["generations"]
    assert [(row["generation"], row["kept"]) for row in rows] == [(0, 0)]


# -- found by the third mutation round ---------------------------------------------------------


# -- evol stats: the contamination it reports ----------------------------------------------------


def test_stats_lists_each_contaminated_record_with_every_place_it_matched(
    evol, tmp_path: Path
) -> None:
    from tests.support.contamination import NO_LLM, WORDS, write_bench
    from tests.support.runs import record, write_run

    copied = " ".join(WORDS)
    run = write_run(
        tmp_path / "run",
        [record("s1", copied), record("s2", "Name a river."), record("s3", f"Say: {copied}")],
    )
    first = write_bench(tmp_path / "a.jsonl", ["Nothing alike here.", copied])
    second = write_bench(tmp_path / "b.jsonl", [copied] * 6)
    scored = evol("score", run, *NO_LLM, "--against", first, "--against", second)
    assert scored.exit_code == 0, scored.output
    said = scored.stdout.splitlines()
    assert f"  {first}: 2 items, 1 shorter than 13 words" in said
    assert f"  {second}: 6 items" in said
    assert said[-1] == "  s3: 2 more items" and "  s1: 2 more items" in said
    with (run / "gen_0.jsonl").open("a") as grown:
        grown.write(json.dumps(record("s4", "Name a lake.")) + "\n")
    result = evol("stats", run)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("contaminated:"))
    assert lines[start - 1] == ""
    assert lines[start].endswith(f" share 13 words in a row with {first}, {second}"), lines[start]
    kept = ", ".join([f"{first}:2", *(f"{second}:{line}" for line in range(1, 5))])
    assert lines[start + 1 : start + 4] == [
        f"  s1: {kept}",
        f"  s3: {kept}",
        "  the run grew after this check: run evol score --against again",
    ]


# -- evol stats: what the run cost --------------------------------------------------------------


@pytest.mark.parametrize(("price_in", "price_out"), [(1_000_000, 2_000_000), (0.3, 0.7)])
def test_a_runs_cost_is_its_tokens_at_the_prices_per_million_to_the_micro_dollar(
    evol, scored_run: Path, price_in: float, price_out: float
) -> None:
    result = evol("stats", scored_run, "--price-in", price_in, "--price-out", price_out, "--json")
    assert result.exit_code == 0, result.output
    roles = json.loads(result.stdout)["roles"]
    for name, role in roles.items():
        paid = role["prompt_tokens"] * price_in + role["completion_tokens"] * price_out
        assert role["cost_usd"] == round(paid / 1_000_000, 6), name


def test_with_one_price_of_two_for_a_model_without_a_price_the_cost_is_unknown(
    evol, scored_run: Path
) -> None:
    result = evol("stats", scored_run, "--price-in", "3", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total_cost_usd"] is None
    assert all(role["cost_usd"] is None for role in summary["roles"].values())


def lengths(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    if len(values) == 1:
        return {"mean": float(values[0]), "p50": values[0], "p90": values[0], "max": values[0]}
    p90 = statistics.quantiles(values, n=10, method="inclusive")[8]
    return {
        "mean": round(statistics.mean(values), 1),
        "p50": statistics.median(values),
        "p90": round(p90, 1),
        "max": max(values),
    }


def present(scores: dict[str, float | None], records: list[dict[str, Any]]) -> list[float]:
    """The scores of these records, those that have one (a score is never guessed)."""
    return [v for r in records if (v := scores.get(r["id"])) is not None]


def mean(values: list[float]) -> float | None:
    return round(statistics.mean(values), 4) if values else None


def test_the_scored_run_is_as_varied_as_a_real_one(scored: dict[str, Any]) -> None:
    kept = kept_of(scored["run"])
    assert Counter(r["generation"] for r in kept) == {0: 5, 1: 4, 2: 4, 3: 3}
    assert any(r["round"] != r["generation"] for r in kept)
    assert len({word_count(r["output"]) for r in kept}) > 3
    book = recorded_scores(scored["run"])
    never = {r["id"] for r in kept if r["root_id"] == "s6"}
    for name in ("difficulty", "quality"):
        assert {i for i, v in book[name].items() if v is None} == never
    # E's lineage is its seed alone: nothing to rank, so no complexity score at all.
    assert {r["id"] for r in kept if book["complexity"].get(r["id"]) is None} == never | {"s5"}


def test_stats_per_generation_and_operation_equal_a_recount(evol, scored: dict[str, Any]) -> None:
    run = scored["run"]
    stats = json.loads(evol("stats", run, "--json").stdout)
    kept, eliminated = kept_of(run), read_jsonl(run / "eliminated.jsonl")
    book = recorded_scores(run)
    flagged = contaminated_ids(run, scored["items"], NGRAM)
    assert [row["generation"] for row in stats["generations"]] == [0, 1, 2, 3]
    for row in stats["generations"]:
        mine = [r for r in kept if r["generation"] == row["generation"]]
        gone = Counter(r["reason"] for r in eliminated if r["generation"] == row["generation"])
        difficulty = present(book["difficulty"], mine)  # two in generation 3
        assert row == {
            "generation": row["generation"],
            "kept": len(mine),
            "eliminated": dict(sorted(gone.items())),
            "instruction_words": lengths([word_count(r["instruction"]) for r in mine]),
            "answer_words": lengths([word_count(r["output"]) for r in mine]),
            "difficulty_mean": mean(difficulty),
            "difficulty_sd": round(statistics.stdev(difficulty), 4),
            "difficulty_scored": len(difficulty),
            "complexity_mean": mean(present(book["complexity"], mine)),
            "quality_mean": mean(present(book["quality"], mine)),
            "distinct_1": None,
            "distinct_2": None,
            "drift_rouge_l": None,
            "nearest_rouge_l": None,
            "near_duplicates": None,
            "contaminated": sum(r["id"] in flagged for r in mine),
        }
    everything = [r for r in kept + eliminated if r["operation"]]
    assert set(stats["operations"]) == {r["operation"] for r in everything}
    for name, row in stats["operations"].items():
        children = [r for r in kept if r["operation"] == name]
        failed = [r for r in eliminated if r["operation"] == name]
        gain = {
            scorer: mean(
                [
                    book[scorer][r["id"]] - book[scorer][r["parent_id"]]
                    for r in children
                    if None not in (book[scorer].get(r["id"]), book[scorer].get(r["parent_id"]))
                ]
            )
            for scorer in ("difficulty", "complexity")
        }
        assert row == {
            "kept": len(children),
            "eliminated": len(failed),
            "success_rate": round(len(children) / (len(children) + len(failed)), 4),
            "difficulty_mean": mean(present(book["difficulty"], children)),
            "difficulty_gain": gain["difficulty"],
            "complexity_gain": gain["complexity"],
        }
    assert stats["scores"] == {
        name: {
            "model": "fake-model",
            "scored": sum(v is not None for v in values.values()),
            "missing": sum(v is None for v in values.values()),
        }
        for name, values in book.items()
    }


@pytest.mark.usefixtures("scripted_backend")
def test_the_stats_table_shows_the_figures_the_json_holds(evol, tmp_path: Path) -> None:
    """Generation 1 was never scored: its means show as -; counts show whole, means to two
    places."""
    run = scripted_run(evol, tmp_path, ROWS)
    (run / "gen_1.jsonl").write_text(json.dumps(record("s1.1", "Explain recursion twice")) + "\n")
    figures = json.loads(evol("stats", run, "--json").stdout)["generations"]
    assert [(row["difficulty_mean"], row["difficulty_sd"]) for row in figures] == [
        (6.4, 2.881),
        (None, None),
    ]
    assert figures[0]["difficulty_scored"] == 5
    text = evol("stats", run).stdout.splitlines()
    header = text.index(
        next(line for line in text if line.split()[:2] == ["generation", "difficulty"])
    )
    assert text[header].split()[:4] == ["generation", "difficulty", "sd", "scored"]
    assert [row.split()[:4] for row in text[header + 2 : header + 4]] == [
        ["0", "6.40", "2.88", "5"],
        ["1", "-", "-", str(figures[1]["difficulty_scored"])],
    ]


@pytest.mark.parametrize("prices", [("--price-in", "3", "--price-out", "15"), ()])
def test_the_cost_table_shows_each_role_s_cost_and_the_total_the_json_holds(
    evol, scored_run: Path, prices: tuple[str, ...]
) -> None:
    """Priced, each role's row ends in its cost and the total line says it; unpriced, they
    show "-" and the total line says how to price them."""
    summary = json.loads(evol("stats", scored_run, "--json", *prices).stdout)
    text = evol("stats", scored_run, *prices).stdout.splitlines()
    shown = lambda value: "-" if value is None else f"${value:.4f}"  # noqa: E731
    header = next(i for i, line in enumerate(text) if line.split()[:2] == ["role", "model"])
    rows = {line.split()[0]: line.split() for line in text[header + 2 :][: len(summary["roles"])]}
    assert {role: row[-1] for role, row in rows.items()} == {
        role: shown(figures["cost_usd"]) for role, figures in summary["roles"].items()
    }
    total = summary["total_cost_usd"]
    assert (total is None) == (not prices)
    (line,) = [line for line in text if line.startswith("total cost: ")]
    assert line == f"total cost: {shown(total)}" + (
        " (no price known: pass --price-in and --price-out)" if total is None else ""
    )


RUN_V1 = Path(__file__).parents[1] / "fixtures" / "run_v1"


def _in_v1_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the format-1 fixture runs as the working directory (they record relative
    paths)."""
    shutil.copytree(RUN_V1, tmp_path / "run_v1")
    monkeypatch.chdir(tmp_path / "run_v1")


def test_a_generation_that_kept_nothing_shows_no_lengths(
    evol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interrupted run's generation 1 kept nothing: "-" under each length column, not a
    figure and not any other mark."""
    _in_v1_runs(tmp_path, monkeypatch)
    text = evol("stats", "interrupted").stdout.splitlines()
    header = next(i for i, line in enumerate(text) if line.startswith("generation  kept"))
    lengths = ["instr", "mean", "p50", "p90", "answer", "mean", "p50", "p90"]
    assert text[header].split()[-8:] == lengths
    row = next(line.split() for line in text[header + 2 :] if line.split()[:1] == ["1"])
    assert row[:2] == ["1", "0"] and row[-6:] == ["-"] * 6


def test_a_batch_run_s_total_cost_says_it_is_at_the_batch_rate(
    evol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Priced, a run made with --batch says its total is at half price, in those words."""
    _in_v1_runs(tmp_path, monkeypatch)
    prices = ("--price-in", "3", "--price-out", "15")
    total = json.loads(evol("stats", "batch_pending", "--json", *prices).stdout)["total_cost_usd"]
    text = evol("stats", "batch_pending", *prices).stdout.splitlines()
    (line,) = [line for line in text if line.startswith("total cost: ")]
    assert line == f"total cost: ${total:.4f} at the Batch API rate (half price)"


def test_a_role_whose_model_run_json_does_not_record_shows_a_dash(evol, tmp_path: Path) -> None:
    """A run.json without its backend (a run stopped before asking it): the role's tokens are
    counted, its model and cost shown as "-" in the text, null in --json."""
    usage = {"evolve": {"prompt_tokens": 10, "completion_tokens": 4}}
    run = write_run(
        tmp_path / "run",
        [record("s1", "Add two numbers"), record("s1.1", "Add three numbers", usage=usage)],
    )
    manifest = json.loads((run / "run.json").read_text())
    del manifest["backend"]
    (run / "run.json").write_text(json.dumps(manifest))
    roles = json.loads(evol("stats", run, "--json").stdout)["roles"]
    assert (roles["evolve"]["model"], roles["evolve"]["cost_usd"]) == (None, None)
    text = evol("stats", run)
    assert text.exit_code == 0, text.stderr
    [row] = [line.split() for line in text.stdout.splitlines() if line.startswith("evolve ")]
    assert row == ["evolve", "-", "10", "4", "-"]


def test_a_run_scored_without_difficulty_has_no_difficulty_count(evol, tmp_path: Path) -> None:
    """Scored for complexity and quality only: each generation's difficulty count is null (not
    asked), not 0 (asked and none scored)."""
    run = make_run(evol, tmp_path)
    with FakeServer(responder=ScoringResponder()) as server:
        scored = evol(*score_args(run, server.base_url, "--no-difficulty"))
        assert scored.exit_code == 0, scored.stderr
    rows = json.loads(evol("stats", run, "--json").stdout)["generations"]
    assert [row["difficulty_scored"] for row in rows] == [None] * len(rows)
    assert all(row["quality_mean"] is not None for row in rows)
