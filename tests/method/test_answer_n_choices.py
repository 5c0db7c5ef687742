"""Unseen cases against --answer-n (a helper's attack, #26 item 3): hostile shapes of an n-request's choices."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from evol.method.constraints import check, from_record
from tests.support.fake_server import (
    FakeServer,
    VerifiableResponder,
    constrained_answer,
    first_user_turn,
)
from tests.support.runs import assert_valid_run, read_jsonl, run_args, write_seeds

pytestmark = pytest.mark.usefixtures("private_cache")

WORDS = "length_constraints:number_words"

# A choice as the shaping function writes it: a dict for "message" plus a finish_reason.
Choice = dict[str, Any]


def good(instruction: str) -> Choice:
    return {"message": {"role": "assistant", "content": constrained_answer(instruction, meet=True)},
            "finish_reason": "stop"}  # fmt: skip


def bad(instruction: str) -> Choice:
    return {"message": {"role": "assistant", "content": constrained_answer(instruction, meet=False)},
            "finish_reason": "stop"}  # fmt: skip


class ShapedServer(FakeServer):
    """A FakeServer whose replies to a request with n > 1 are the choices `shape` writes."""

    def __init__(self, shape: Callable[[str, int], list[Choice]], **kwargs: Any) -> None:
        # The first answer always fails its constraints, so the answer_n request is sent.
        super().__init__(responder=VerifiableResponder(fail_first=1), **kwargs)
        self.shape = shape

    async def _reply(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        n = body.get("n") or 1
        if n <= 1:
            return await super()._reply(request, body)
        choices = self.shape(first_user_turn(body), n)
        for index, choice in enumerate(choices):
            choice.setdefault("index", index)
        return web.json_response(
            {"id": "x", "object": "chat.completion", "created": int(time.time()),
             "model": body["model"], "choices": choices,
             "usage": {"prompt_tokens": 10, "completion_tokens": 7 * max(1, len(choices)),
                       "total_tokens": 10 + 7 * max(1, len(choices))}}
        )  # fmt: skip


def run(evol, tmp_path: Path, server: FakeServer, attempts: int = 3, *extra: object):
    seeds = write_seeds(tmp_path / "s.jsonl", [{"instruction": "Explain topic one."}])
    out = tmp_path / "out"
    with server:
        result = evol(
            *run_args(
                server,
                seeds,
                out,
                "--verifiable",
                "--answer-n",
                "--generations",
                "1",
                "--seed",
                "1",
                "--answer-attempts",
                str(attempts),
                "--constraint-ids",
                WORDS,
                *extra,
            )  # fmt: skip
        )
    return result, out


def gen1(out: Path) -> list[dict]:
    return read_jsonl(out / "gen_1.jsonl")


def answer_n_requests(server: FakeServer) -> list[dict]:
    return [b for b in server.requests if (b.get("n") or 1) > 1]


def assert_kept_pass(out: Path) -> None:
    for record in gen1(out):
        constraints = from_record(record["constraints"])
        assert all(v.strict for v in check(record["output"], constraints)), record


def test_more_choices_than_asked_only_the_asked_ones_count(evol, tmp_path: Path) -> None:
    """K=2, the server sends 4 choices: bad, bad, good, good. Only the 2 asked for are
    answers; none passes: constraint_unmet with attempts 3, no call after."""
    server = ShapedServer(lambda i, n: [bad(i), bad(i), good(i), good(i)])
    result, out = run(evol, tmp_path, server, 2)
    assert result.exit_code == 0, result.output
    assert_valid_run(out)
    assert gen1(out) == []
    (record,) = read_jsonl(out / "eliminated.jsonl")
    assert (record["reason"], record["attempts"]) == ("constraint_unmet", 3)


NULL: Choice = {"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}
REFUSAL: Choice = {"message": {"role": "assistant", "content": None, "refusal": "I can't."},
                   "finish_reason": "stop"}  # fmt: skip


def test_null_content_after_a_passing_choice_keeps_it(evol, tmp_path: Path) -> None:
    """Choices: good, null content, good. Drawn one at a time, answer 2 passes and is kept
    (attempts 2), as docs/verifiable.md promises of --answer-n. evol instead takes the whole
    reply as transient, resends the n-request (K answers paid each time) until retries run
    out, and the run ends failed with the record neither kept nor eliminated."""
    server = ShapedServer(lambda i, n: [good(i), dict(NULL), good(i)])
    result, out = run(evol, tmp_path, server, 3, "--max-retries", "1")
    assert "Traceback" not in result.output
    assert len(answer_n_requests(server)) == 1, f"{len(answer_n_requests(server))} n-requests"
    assert result.exit_code == 0, result.output
    assert [r["attempts"] for r in gen1(out)] == [2]


def test_null_content_choice_is_a_failed_answer_not_a_lost_reply(evol, tmp_path: Path) -> None:
    """Choices: bad, null, good. The null one is one answer with no text; the good one after
    it should still be kept (attempts 4), the reply not thrown away and paid again."""
    server = ShapedServer(lambda i, n: [bad(i), dict(NULL), good(i)])
    result, out = run(evol, tmp_path, server, 3, "--max-retries", "1")
    assert len(answer_n_requests(server)) == 1, f"{len(answer_n_requests(server))} n-requests"
    assert result.exit_code == 0, result.output
    assert_valid_run(out)
    assert_kept_pass(out)


def test_refusal_in_a_later_choice_after_a_passing_one(evol, tmp_path: Path) -> None:
    """Choices: good, then a structured refusal, then good. Drawn one at a time, answer 2
    passes and is kept and answer 3 is never asked for. evol eliminates the record as
    `rejected` (the refusal of choice 2 fails the whole reply in parse_reply)."""
    server = ShapedServer(lambda i, n: [good(i), dict(REFUSAL), good(i)])
    result, out = run(evol, tmp_path, server, 3)
    assert "Traceback" not in result.output
    assert result.exit_code == 0, result.output
    assert_valid_run(out)
    eliminated = read_jsonl(out / "eliminated.jsonl")
    assert [r["attempts"] for r in gen1(out)] == [2], [
        (r["reason"], r["detail"]) for r in eliminated
    ]


def test_non_string_content_choice_is_no_traceback(evol, tmp_path: Path) -> None:
    """A choice whose content is a number: a garbled reply (transient), no traceback; the run
    ends failed (resumable) or valid."""
    server = ShapedServer(lambda i, n: [good(i), {"message": {"content": 42}}, good(i)])
    result, out = run(evol, tmp_path, server, 3, "--max-retries", "1")
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code in (0, 1)
    assert json.loads((out / "run.json").read_text())["status"] in ("complete", "failed")


def test_empty_choices_list_is_no_traceback(evol, tmp_path: Path) -> None:
    """choices == []: a garbled reply (transient), no traceback, nothing kept that fails."""
    server = ShapedServer(lambda i, n: [])
    result, out = run(evol, tmp_path, server, 3, "--max-retries", "1")
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code in (0, 1)
    assert json.loads((out / "run.json").read_text())["status"] in ("complete", "failed")
    assert_kept_pass(out)


def test_length_cut_choice_that_would_pass_is_not_kept(evol, tmp_path: Path) -> None:
    """Choices: good but finish_reason length, then good. The cut one must not be kept; the
    second is (attempts 3)."""

    def shape(i: str, n: int) -> list[Choice]:
        cut = good(i)
        cut["finish_reason"] = "length"
        return [cut, good(i), good(i)]

    server = ShapedServer(shape)
    result, out = run(evol, tmp_path, server, 3)
    assert result.exit_code == 0, result.output
    assert_valid_run(out)
    assert [r["attempts"] for r in gen1(out)] == [3]
    assert len(answer_n_requests(server)) == 1


def test_fewer_choices_then_single_calls(evol, tmp_path: Path) -> None:
    """One choice (bad) for n=3: the rest drawn one call each (no n), the kept answer passes."""
    server = ShapedServer(lambda i, n: [bad(i)])
    result, out = run(evol, tmp_path, server, 3)
    assert result.exit_code == 0, result.output
    assert_valid_run(out)
    assert_kept_pass(out)
    assert len(answer_n_requests(server)) == 1
    # answer 1 fails, the one choice (answer 2) fails, answer_3 (a call of its own) passes.
    assert [r["attempts"] for r in gen1(out)] == [3]


def test_usage_counts_the_answer_n_call_once(evol, tmp_path: Path) -> None:
    """The answer_n call's usage (21 completion tokens for 3 choices) is counted once: the
    record's answer usage equals the sum over its answer calls in calls.jsonl, and run.json's
    answer usage equals the records' sum."""
    server = ShapedServer(lambda i, n: [bad(i), bad(i), good(i)])
    result, out = run(evol, tmp_path, server, 3)
    assert result.exit_code == 0, result.output
    manifest = assert_valid_run(out)
    (record,) = gen1(out)
    assert record["attempts"] == 4
    # Answer 1 (a plain call: the fake server counts words) and the answer_n call (21).
    instruction = record["instruction"]
    first = len(constrained_answer(instruction, meet=False).split())
    assert record["usage"]["answer"]["completion_tokens"] == first + 21
    assert record["usage"]["answer"]["prompt_tokens"] == len(instruction.split()) + 10
    seed = read_jsonl(out / "gen_0.jsonl")[0]
    total = sum(r["usage"]["answer"]["completion_tokens"] for r in (record, seed))
    assert manifest["counts"]["usage"]["answer"]["completion_tokens"] == total
