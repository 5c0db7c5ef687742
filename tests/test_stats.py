"""`evol stats` on a real run against the fake server; expectations computed from the files."""

from __future__ import annotations

import json
import statistics
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from conftest import read_jsonl, run_args, write_seeds
from fake_server import FakeServer

from evol.dataset.stats import run_stats
from evol.method.textstats import word_count
from evol.rundir.record_files import iter_records

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
    from test_scoring import ScoringResponder, difficulty_of, kept, ranks, task

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
