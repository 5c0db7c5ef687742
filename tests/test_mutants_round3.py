"""Promises that the third round of mutation survivors (checks 2,700 on, #22) found unpinned:
what `evol score` asks and reports, what `evol merge` writes, refuses and leaves behind, and
what `evol stats` says about contamination.

Each test goes through the CLI (the `evol` fixture, in this process, where mutation testing
sees it), so that it runs on 4f7dc9e's tree, where the mutants were found, as on `main`.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import Evol, read_jsonl, run_args, write_seeds
from fake_server import FakeServer, Fault, Responder, scripted

# -- evol score: what it asks, and the figures it reports --------------------------------------

UNREADABLE = "Hard to say: it depends on the reader."
SINGLE_AGAIN = "Reply with the number only: one whole number from 1 to 10."
RANKING_AGAIN = 'Reply with the scores only, one line per version from #1 to #{}, like "#1: 2".'


class Scores(Responder):
    """A score by length; a task marked [mute] gets no number on the first ask."""

    def __call__(self, body: dict[str, Any]) -> str:
        first, again = body["messages"][0]["content"], len(body["messages"]) > 1
        if "[mute]" in first and not again:
            return UNREADABLE
        if '<version id="' in first:
            versions = re.findall(r'<version id="\d+">\n(.*?)\n</version>', first, re.S)
            return "\n".join(f"#{k}: {k}" for k in range(1, len(versions) + 1))
        if "<task>" in first:
            return str(len(first.split()) % 10 + 1)
        return super().__call__(body)


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of two lineages of three records, one of them [mute]."""
    base = tmp_path_factory.mktemp("score")
    seeds = write_seeds(
        base / "seeds.jsonl",
        [{"instruction": "Name a primary colour"}, {"instruction": "[mute] Name a river"}],
    )
    with FakeServer() as server:
        result = Evol()(*run_args(server, seeds, base / "run", "--generations", "2"))
    assert result.exit_code == 0, result.output
    return base / "run"


def test_a_scoring_asks_as_the_user_and_reports_every_attempt_and_token(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """The summary's requests, retries and usage are what the server saw and billed; every
    request is a well-formed chat (a real server refuses a message without its role); a reply
    without a number is asked again in the words of its scorer."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    faults = scripted(Fault("status", 500), None, Fault("status", 503))
    with FakeServer(responder=Scores(), faults=faults) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--json", "--concurrency", "1",
            "--max-retries", "2", "--retry-max-wait", "0.01", "--no-metrics",
        )  # fmt: skip
        sent = list(server.requests)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["requests"] == len(sent) and summary["retries"] == 2

    answered = [body for place, body in enumerate(sent) if place not in (0, 2)]
    prompt = sum(words(m["content"]) for body in answered for m in body["messages"])
    completion = sum(words(Scores()(body)) for body in answered)
    assert summary["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion}

    asked_again = []
    for body in sent:
        roles = [message["role"] for message in body["messages"]]
        assert roles in (["user"], ["user", "assistant", "user"]), roles
        if len(roles) == 3:
            assert body["messages"][1]["content"] == UNREADABLE
            asked_again.append(body["messages"][2]["content"].strip())
    # The [mute] lineage: its difficulty of each of 3 records, and its ranking of 3 versions.
    assert Counter(asked_again) == {SINGLE_AGAIN: 3, RANKING_AGAIN.format(3): 1}


class Overflows(Scores):
    def __call__(self, body: dict[str, Any]) -> str:
        from fake_server import ContextOverflow

        if "primary" in body["messages"][0]["content"]:
            raise ContextOverflow
        return super().__call__(body)


def test_a_prompt_over_the_context_is_recorded_as_asked_once_and_unscored(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    with FakeServer(responder=Overflows()) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics"
        )
    assert result.exit_code == 0, result.output
    lines = [line for line in read_jsonl(run / "scores.jsonl") if line.get("error")]
    assert len(lines) == 3 and all("maximum context length" in line["error"] for line in lines)
    for line in lines:
        assert (line["score"], line["asked"], line["reply"], line["usage"]) == (None, 1, "", {})
