"""What the judge model is asked (evol.judge_calls), checked against the fake server (#22)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.fake_server import FakeServer
from tests.support.runs import run_args, write_seeds


def test_the_answer_check_is_shown_an_empty_answer_as_it_is(evol, tmp_path: Path) -> None:
    """With the stop-word rule off, an empty answer passes the answer rules; the answer check
    then sees the task and an empty reply, nothing made up in its place."""
    seeds = write_seeds(
        tmp_path / "seeds.jsonl", [{"instruction": "Describe the sea. [empty-answer]"}]
    )
    extra = ["--generations", "0", "--no-stopword-check", "--answer-check"]
    with FakeServer() as server:
        result = evol(*run_args(server, seeds, tmp_path / "run", *extra))
    assert result.exit_code == 0, result.stderr
    (asked,) = server.requests_for("answer_check")
    prompt = asked["messages"][-1]["content"]
    assert "<task>\nDescribe the sea. [empty-answer]\n</task>" in prompt
    assert "<reply>\n\n</reply>" in prompt
    (kept,) = [json.loads(line) for line in (tmp_path / "run" / "gen_0.jsonl").open()]
    assert kept["output"] == ""
