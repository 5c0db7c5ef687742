"""No barriers between rounds or lineages, and output files in seed order all the same.

Each test holds some requests unanswered until the others have done what the promise says
they can do without them; a barrier in the engine would leave the condition unmet, and the
release would come from the time limit instead, which the test reports as a failure.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_server import FakeServer, kind_of
from tests.support.runs import assert_valid_run, read_jsonl, run_args, write_seeds


def content(body: dict[str, Any]) -> str:
    return body["messages"][-1]["content"]


class ReleaseWhen:
    """Release the server's held requests once `condition` holds, from a watcher thread."""

    def __init__(self, server: FakeServer, condition: Callable[[], bool], limit: float = 600.0):
        self.met = False

        def watch() -> None:
            try:
                server.wait_until(condition, limit)
                self.met = True
            except TimeoutError:
                pass
            server.release()

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()

    def __enter__(self) -> ReleaseWhen:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.thread.join()


def finished(server: FakeServer, which: Callable[[dict[str, Any]], bool]) -> int:
    return sum(
        1
        for body, done in zip(list(server.requests), list(server.finishes), strict=False)
        if done is not None and which(body)
    )


def test_a_slow_lineage_holds_no_other_back(evol, tmp_path: Path) -> None:
    rows = [{"id": "slow", "instruction": "Plan a trip [slow]"}]
    rows += [{"id": f"f{i}", "instruction": f"Explain idea {i}"} for i in range(6)]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)

    def slow(body: dict[str, Any]) -> bool:
        return "[slow]" in content(body)

    fast_calls = 6 * (1 + 3 * 3)
    with FakeServer(hold=slow) as server:
        # The slow lineage's first calls stay unanswered until every fast lineage has run
        # all three rounds: no round, batch or generation may wait for the slowest item.
        gate = ReleaseWhen(server, lambda: finished(server, lambda b: not slow(b)) == fast_calls)
        with gate:
            result = evol(
                *run_args(
                    server, seeds, tmp_path / "run", "--generations", "3", "--concurrency", "8"
                )
            )
    assert gate.met
    assert result.exit_code == 0, result.output
    assert_valid_run(tmp_path / "run")


def one_round_of_four(evol, server: FakeServer, tmp_path: Path, *flags: str):
    """Four seeds, one round, seeds not answered: each item's evolve, judge and answer."""
    rows = [{"instruction": f"Explain idea {i}"} for i in range(4)]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    return evol(
        *run_args(
            server,
            seeds,
            tmp_path / "run",
            "--generations",
            "1",
            "--concurrency",
            "16",
            "--no-answer-seeds",
            *flags,
        )  # fmt: skip
    )


def test_with_parallel_judge_an_items_answer_and_judge_are_in_flight_together(
    evol, tmp_path: Path
) -> None:
    with FakeServer(hold=lambda body: kind_of(body) == "judge") as server:
        # Judges are held until every item's answer has arrived: they are sent together.
        answers = lambda: len(server.requests_for("answer")) == 4  # noqa: E731
        with ReleaseWhen(server, lambda: server.held == 4 and answers()) as gate:
            result = one_round_of_four(evol, server, tmp_path, "--parallel-judge")
    assert gate.met
    assert result.exit_code == 0, result.output


def test_by_default_no_answer_is_asked_before_the_judge_has_spoken(evol, tmp_path: Path) -> None:
    # Every judge is held until all four have arrived; an answer asked in parallel would
    # arrive before them.
    with (
        FakeServer(hold=lambda body: kind_of(body) == "judge") as server,
        ReleaseWhen(server, lambda: server.held == 4) as gate,
    ):
        result = one_round_of_four(evol, server, tmp_path)
    assert gate.met
    assert result.exit_code == 0, result.output
    first_answer = min(i for i, body in enumerate(server.requests) if kind_of(body) == "answer")
    judges = [i for i, body in enumerate(server.requests) if kind_of(body) == "judge"]
    assert len(judges) == 4 and max(judges) < first_answer


def test_output_files_are_in_seed_order_whatever_order_lineages_finish(
    evol, tmp_path: Path
) -> None:
    rows = [{"id": f"seed-{i:02d}", "instruction": f"Explain idea {i}"} for i in range(30)]
    rows[3]["instruction"] += " [equal]"  # eliminated every round: several lines per lineage
    rows[17]["instruction"] += " [leak-once]"
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)

    def first_ten(body: dict[str, Any]) -> bool:
        number = re.search(r"Explain idea (\d+)", content(body))
        return number is not None and int(number.group(1)) < 10

    # Lineages 10 to 29 finish before the first ten send a second request, so records are
    # appended far from seed order. 19 of them make 10 calls; the leak-once one makes 8.
    later_calls = 19 * 10 + 8
    with FakeServer(hold=first_ten) as server:
        done = lambda: finished(server, lambda b: not first_ten(b)) == later_calls  # noqa: E731
        with ReleaseWhen(server, done) as gate:
            result = evol(
                *run_args(
                    server, seeds, tmp_path / "run", "--generations", "3", "--concurrency", "32"
                )
            )
    assert gate.met
    assert result.exit_code == 0, result.output
    out = tmp_path / "run"
    assert_valid_run(out)
    order = {row["id"]: place for place, row in enumerate(rows)}
    for generation in range(4):
        records = read_jsonl(out / f"gen_{generation}.jsonl")
        assert records, generation
        places = [order[r["root_id"]] for r in records]
        assert places == sorted(places), generation
    eliminated = read_jsonl(out / "eliminated.jsonl")
    keys = [(order[r["root_id"]], r["round"]) for r in eliminated]
    assert len(keys) >= 4 and keys == sorted(keys)


@pytest.mark.parametrize(("flags", "answers"), [((), 2), (("--parallel-judge",), 4)])
def test_the_judge_first_pays_no_answer_for_a_rewrite_it_rejects(
    evol, tmp_path: Path, flags: tuple[str, ...], answers: int
) -> None:
    rows = [{"instruction": f"Explain idea {i}" + (" [equal]" if i % 2 else "")} for i in range(4)]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    with FakeServer() as server:
        result = evol(
            *run_args(
                server, seeds, tmp_path / "run", "--generations", "1", "--no-answer-seeds", *flags
            )
        )
        assert result.exit_code == 0, result.output
        assert len(server.requests_for("judge")) == 4
        assert len(server.requests_for("answer")) == answers
    eliminated = read_jsonl(tmp_path / "run" / "eliminated.jsonl")
    assert sorted(r["reason"] for r in eliminated) == ["no_information_gain"] * 2
    kept = read_jsonl(tmp_path / "run" / "dataset.jsonl")
    assert [r["id"] for r in kept if r["generation"] == 1] == ["s1.1", "s3.1"]


@pytest.mark.parametrize("flags", [(), ("--parallel-judge",)])
def test_either_order_eliminates_for_the_same_reason(
    evol, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    """A rewrite the judge finds equal is eliminated for that, even when its answer also fails
    a rule (with --parallel-judge both came back); one the judge lets through is eliminated
    for its answer."""
    rows = [
        {"instruction": "Explain idea one [sorry] [equal]"},
        {"instruction": "Explain idea two [sorry]"},
        {"instruction": "Explain idea three [cut-answer] [equal]"},
        {"instruction": "Explain idea four [cut-answer]"},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    with FakeServer() as server:
        run = run_args(server, seeds, tmp_path / "run", "--generations", "1", "--no-answer-seeds")
        result = evol(*run, *flags)
        assert result.exit_code == 0, result.output
    eliminated = read_jsonl(tmp_path / "run" / "eliminated.jsonl")
    assert {r["id"]: r["reason"] for r in eliminated} == {
        "s1.1": "no_information_gain",
        "s2.1": "sorry",
        "s3.1": "no_information_gain",
        "s4.1": "truncated",
    }
