"""No barriers between rounds or lineages, and output files in seed order all the same."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from conftest import assert_valid_run, read_jsonl, run_args, write_seeds
from fake_server import FakeServer, kind_of


def content(body: dict[str, Any]) -> str:
    return body["messages"][-1]["content"]


def test_a_slow_lineage_holds_no_other_back(evol, tmp_path: Path) -> None:
    rows = [{"id": "slow", "instruction": "Plan a trip [slow]"}]
    rows += [{"id": f"f{i}", "instruction": f"Explain idea {i}"} for i in range(6)]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)

    def delay(body: dict[str, Any]) -> float:
        return 0.6 if "[slow]" in content(body) else 0.01

    with FakeServer(delay=delay) as server:
        result = evol(
            *run_args(server, seeds, tmp_path / "run", "--generations", "3", "--concurrency", "8")
        )
    assert result.exit_code == 0, result.output
    assert_valid_run(tmp_path / "run")
    calls = list(zip(server.requests, server.arrivals, server.finishes, strict=True))
    slow = [(arrived, finished) for body, arrived, finished in calls if "[slow]" in content(body)]
    fast = [
        (arrived, finished) for body, arrived, finished in calls if "[slow]" not in content(body)
    ]
    assert len(fast) == 6 * (1 + 3 * 3)
    first_slow_reply = min(finished for _arrived, finished in slow)
    # Every fast lineage ran all three rounds while the slow one waited for its first reply:
    # no round, batch or generation waits for the slowest item.
    assert max(finished for _arrived, finished in fast) < first_slow_reply


def test_an_items_answer_and_judge_are_in_flight_together(evol, tmp_path: Path) -> None:
    seeds = write_seeds(
        tmp_path / "seeds.jsonl", [{"instruction": f"Explain idea {i}"} for i in range(4)]
    )
    with FakeServer(latency=0.2) as server:
        result = evol(
            *run_args(
                server,
                seeds,
                tmp_path / "run",
                "--generations",
                "1",
                "--concurrency",
                "16",
                "--no-answer-seeds",
            )
        )
    assert result.exit_code == 0, result.output
    calls = list(zip(server.requests, server.arrivals, server.finishes, strict=True))
    answers = {content(b): (a, f) for b, a, f in calls if kind_of(b) == "answer"}
    judges = [(b, a, f) for b, a, f in calls if kind_of(b) == "judge"]
    assert len(answers) == len(judges) == 4
    for body, arrived, finished in judges:
        second = content(body).partition("<second>\n")[2].partition("\n</second>")[0]
        answer_arrived, answer_finished = answers[second]
        assert answer_arrived < finished and arrived < answer_finished  # the intervals overlap


def test_output_files_are_in_seed_order_whatever_order_lineages_finish(
    evol, tmp_path: Path
) -> None:
    rows = [{"id": f"seed-{i:02d}", "instruction": f"Explain idea {i}"} for i in range(30)]
    rows[3]["instruction"] += " [equal]"  # eliminated every round: several lines per lineage
    rows[17]["instruction"] += " [leak-once]"
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    jitter = random.Random(7)

    with FakeServer(delay=lambda _body: jitter.uniform(0, 0.05)) as server:
        result = evol(
            *run_args(server, seeds, tmp_path / "run", "--generations", "3", "--concurrency", "32")
        )
    assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    assert_valid_run(out)
    order = {row["id"]: place for place, row in enumerate(rows)}
    arrival_order = [content(b) for b in server.requests if kind_of(b) == "answer"]
    assert arrival_order != sorted(arrival_order, key=lambda text: int(text.split()[2]))
    for generation in range(4):
        records = read_jsonl(out / f"gen_{generation}.jsonl")
        assert records, generation
        places = [order[r["root_id"]] for r in records]
        assert places == sorted(places), generation
    eliminated = read_jsonl(out / "eliminated.jsonl")
    keys = [(order[r["root_id"]], r["round"]) for r in eliminated]
    assert len(keys) >= 4 and keys == sorted(keys)
