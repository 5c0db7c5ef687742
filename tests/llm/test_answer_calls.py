"""--answer-n (#26, item 3): once a record's first answer fails its constraints, the further
answers are asked for in one request with `n`, where the backend sends it. The records are
those of drawing them one call at a time; a server that returns fewer choices, and a backend
that cannot send `n` (the embedded one), fall back to one call per answer; the one request
is journalled, so a kill -9 pays for nothing twice; --batch sends it as one row. A server's
hostile choices (more than asked, null content, a refusal, a cut answer, none at all) cost
no record and no traceback."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from evol.errors import BackendError, GarbledReply, TransientBackendError
from evol.llm import BackendSettings, GenerationParams, LLMRequest
from evol.llm.batch import BatchBackend
from evol.llm.limits import RequestBudget
from evol.llm.local import LocalBackend
from evol.llm.openai_api import parse_reply
from evol.llm.openai_compatible import OpenAICompatibleBackend
from evol.llm.openai_sdk import OpenAISDKBackend
from evol.llm.protocol import Capabilities, Completion, capabilities_of
from evol.llm.registry import register_backend
from evol.llm.routing import EndpointRouter
from evol.method.constraints import check, from_record
from evol.rundir.records import compose
from evol.secrets import Secrets
from tests.support.batch_server import BatchServer
from tests.support.fake_server import (
    FakeServer,
    VerifiableResponder,
    constrained_answer,
    first_user_turn,
    kind_of,
    meets,
)
from tests.support.runs import assert_valid_run, read_jsonl, run_args, write_seeds
from tests.support.subprocesses import ENV
from tests.support.verifiable import POOL, SEEDS, constraints_of, expected_attempts, fails

pytestmark = pytest.mark.usefixtures("private_cache")

RATE, EXTRA = 0.4, 3


def without_usage(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records by id, their token usage aside (one request for K answers pays for all K)."""
    return sorted(({k: v for k, v in r.items() if k != "usage"} for r in records), key=str)


def same_records(one: Path, other: Path) -> None:
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        assert without_usage(read_jsonl(one / name)) == without_usage(read_jsonl(other / name))


def sampled_run(evol, server, tmp_path: Path, name: str, *extra: object) -> Path:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    out = tmp_path / name
    result = evol(*run_args(
        server, seeds, out, "--verifiable", "--generations", "2", "--constraint-ids", POOL,
        "--answer-attempts", str(EXTRA), "--concurrency", "4", "--seed", "5", *extra,
    ))  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def answered(out: Path) -> list[dict[str, Any]]:
    """The records whose evolution was answered and checked by code, kept or not."""
    kept = [r for r in read_jsonl(out / "dataset.jsonl") if r["generation"] > 0]
    return kept + [r for r in read_jsonl(out / "eliminated.jsonl") if r.get("attempts")]


@pytest.fixture
def sequential(evol, tmp_path: Path) -> Path:
    """The run that draws each further answer with a call of its own (the default)."""
    with FakeServer(responder=VerifiableResponder(pass_rate=RATE)) as server:
        out = sampled_run(evol, server, tmp_path, "sequential")
        assert not [body for body in server.requests if "n" in body]
    return out


# -- the fake server and the reply schema ---------------------------------------------------------


def ask(server: FakeServer, text: str, n: int | None, backend_class: Any = None) -> Completion:
    backend_class = backend_class or OpenAICompatibleBackend
    backend = backend_class(BackendSettings(base_urls=[server.base_url]))
    request = LLMRequest([{"role": "user", "content": text}], "fake-model", GenerationParams(n=n))

    async def go() -> Completion:
        try:
            return await backend.complete(request)
        finally:
            await backend.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("backend_class", [OpenAICompatibleBackend, OpenAISDKBackend])
def test_the_fake_server_answers_n_choices_as_n_answers_in_a_row_would_come(backend_class):
    text = "Write a note. Your entire response should be in English, and in all lowercase letters."
    text += " No capital letters are allowed. (vabc)"
    with FakeServer(responder=VerifiableResponder(pass_rate=0.5)) as server:
        first = ask(server, text, None, backend_class)
        several = ask(server, text, 4, backend_class)
        assert [body.get("n") for body in server.requests] == [None, 4]
    assert first.choices == [] and first.every_choice() == [(first.text, "stop")]
    expected = [constrained_answer(text, meet=meets(text, k, 0.5)) for k in range(1, 6)]
    assert first.text == expected[0]
    assert several.every_choice() == [(answer, "stop") for answer in expected[1:]]
    assert several.text == expected[1]
    assert several.completion_tokens == sum(len(a.split()) for a in expected[1:])


def test_a_server_that_ignores_n_returns_one_choice() -> None:
    with FakeServer(ignore_n=True) as server:
        reply = ask(server, "Explain rain.", 3)
        assert server.requests[0]["n"] == 3
    assert reply.choices == [] and len(reply.every_choice()) == 1


def chat(*choices: dict[str, Any]) -> bytes:
    return json.dumps({"choices": list(choices), "usage": {"completion_tokens": 7}}).encode()


def choice(content: Any, finish: str | None = "stop", **message: Any) -> dict[str, Any]:
    return {"message": {"content": content, **message}, "finish_reason": finish}


def test_every_choice_of_a_reply_is_read_in_the_servers_order() -> None:
    reply = parse_reply(chat(choice("a"), choice("b", "length"), choice("")), "x", Secrets())
    assert reply.text == "a" and reply.finish_reason == "stop" and reply.completion_tokens == 7
    assert reply.choices == [("a", "stop"), ("b", "length"), ("", "stop")]
    journalled = Completion.model_validate(json.loads(json.dumps(reply.__dict__)))
    assert journalled == reply  # as the journal writes it and reads it back
    old = {"text": "a", "prompt_tokens": 1, "completion_tokens": 2, "finish_reason": "stop"}
    assert Completion.model_validate(old).every_choice() == [("a", "stop")]  # an older journal


@pytest.mark.parametrize(
    ("later", "error", "message"),
    [
        (choice(5), GarbledReply, "choices.1.message.content"),
        ({"finish_reason": "stop"}, GarbledReply, "choices.1.message"),
        (choice("b", 3), GarbledReply, "choices.1.finish_reason"),
    ],
)
def test_a_later_choice_is_untrusted_input_as_the_first_is(later, error, message) -> None:
    with pytest.raises(error) as raised:
        parse_reply(chat(choice("a"), later), "x", Secrets())
    assert type(raised.value) is error and message in str(raised.value)


@pytest.mark.parametrize("empty", [choice(None), choice(None, refusal="I will not.")])
def test_a_choice_without_text_is_a_failed_answer_while_another_has_one(empty) -> None:
    reply = parse_reply(chat(choice("a"), empty, choice("c")), "x", Secrets())
    assert reply.choices == [("a", "stop"), ("", "no_text"), ("c", "stop")]
    first_empty = parse_reply(chat(empty, choice("b")), "x", Secrets())
    assert first_empty.text == "" and first_empty.choices == [("", "no_text"), ("b", "stop")]


@pytest.mark.parametrize(
    ("empty", "error", "message"),
    [
        (choice(None), TransientBackendError, "no message content"),
        (choice(None, refusal="I will not."), BackendError, "refused the request: I will not."),
    ],
)
def test_a_reply_whose_every_choice_has_no_text_fails_as_one_choice_would(
    empty, error, message
) -> None:
    for reply in (chat(empty), chat(empty, empty)):
        with pytest.raises(error) as raised:
            parse_reply(reply, "x", Secrets())
        assert type(raised.value) is error and message in str(raised.value)


# -- which backends send n ---------------------------------------------------------------------


def test_the_http_backends_send_n_and_the_embedded_one_does_not() -> None:
    assert capabilities_of(OpenAICompatibleBackend).several_choices
    assert capabilities_of(OpenAISDKBackend).several_choices
    assert capabilities_of(BatchBackend).several_choices
    assert not capabilities_of(LocalBackend).several_choices
    assert not Capabilities().several_choices  # a plugin that declares nothing


def test_several_endpoints_send_n_only_when_each_of_them_does() -> None:
    http = OpenAICompatibleBackend(BackendSettings(base_urls=["http://127.0.0.1:9/v1"]))
    other = LocalFake(http)
    assert capabilities_of(EndpointRouter([("a", http), ("b", http)])).several_choices
    assert not capabilities_of(EndpointRouter([("a", http), ("b", other)])).several_choices
    assert capabilities_of(EndpointRouter([("a", http)])).endpoint_stats


def test_n_is_sent_only_when_set_and_never_recorded_as_an_option() -> None:
    assert "n" not in GenerationParams(temperature=0.5).to_request()
    params = GenerationParams(temperature=0.5, n=3)
    assert params.request == {"temperature": 0.5, "n": 3}
    assert params.model_dump(exclude_none=True) == {"temperature": 0.5}  # run.json's config
    with pytest.raises(ValueError):
        GenerationParams(n=0)


def test_the_token_budget_counts_every_choice_asked_for() -> None:
    budget = RequestBudget(rpm=None, tpm=1000)
    messages = [{"role": "user", "content": "x" * 40}]
    assert budget.estimate(messages, 100, 3) - budget.estimate(messages, 100) == 200
    budget.settle(0, 0, 300, 3)  # 3 answers of 100 tokens: the average answer is 100
    assert budget.estimate(messages, None, 2) - budget.estimate(messages, None) == 100


# -- runs ---------------------------------------------------------------------------------------


def test_one_request_with_n_keeps_what_drawing_one_at_a_time_keeps(evol, tmp_path, sequential):
    with FakeServer(responder=VerifiableResponder(pass_rate=RATE)) as server:
        out = sampled_run(evol, server, tmp_path, "batched", "--answer-n")
        bodies = server.requests_for("answer")
    assert_valid_run(out)
    same_records(out, sequential)
    records = answered(out)
    assert any(r["attempts"] > 1 for r in records) and any(r["attempts"] == 1 for r in records)
    assert any(r["reason"] == "constraint_unmet" for r in records if "reason" in r)
    asked: Counter[tuple[str, int | None]] = Counter(
        (first_user_turn(body), body.get("n")) for body in bodies
    )
    for record in records:
        text = compose(record["instruction"], record["input"])
        assert record["attempts"] == (expected_attempts(text, RATE, EXTRA) or EXTRA + 1)
        # The first answer, then, only where it failed, one request for the other K.
        assert asked.pop((text, None)) == 1
        assert asked.pop((text, EXTRA), 0) == (record["attempts"] > 1)
        if "reason" not in record:
            assert fails(record["output"], constraints_of(record)) == []
    assert all(n is None for _, n in asked)  # the rest: the seeds' answers
    # Usage is counted once per call: the n-request's tokens are those of its K choices.
    for record in records:
        if record["attempts"] > 1:
            text = compose(record["instruction"], record["input"])
            words = len(text.split())
            assert record["usage"]["answer"]["prompt_tokens"] == 2 * words


def test_a_server_that_ignores_n_gets_the_rest_one_call_at_a_time(evol, tmp_path, sequential):
    with FakeServer(responder=VerifiableResponder(pass_rate=RATE), ignore_n=True) as server:
        out = sampled_run(evol, server, tmp_path, "ignored", "--answer-n")
        asked = Counter(
            (first_user_turn(body), body.get("n")) for body in server.requests_for("answer")
        )
    same_records(out, sequential)
    for record in answered(out):
        text = compose(record["instruction"], record["input"])
        drawn = record["attempts"]
        assert asked[text, EXTRA] == (drawn > 1)  # one choice came back: answer 2
        assert asked[text, None] == 1 + max(0, drawn - 2)  # the first, then 3, 4... each alone


class LocalFake:
    """A backend that declares what the embedded one does (no `n`), answering through the
    fake server: the engine must draw one call per answer."""

    capabilities = LocalBackend.capabilities

    def __init__(self, inner: OpenAICompatibleBackend):
        self.inner = inner

    async def complete(self, request: LLMRequest) -> Completion:
        assert request.params.n is None, "n sent to a backend that cannot send it"
        return await self.inner.complete(request)

    async def default_model(self) -> str:
        return await self.inner.default_model()

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_backend_without_n_draws_one_call_per_answer(evol, tmp_path, sequential) -> None:
    with FakeServer(responder=VerifiableResponder(pass_rate=RATE)) as server:
        url = server.base_url
        register_backend(
            "no-n",
            lambda _settings: LocalFake(OpenAICompatibleBackend(BackendSettings(base_urls=[url]))),
        )
        out = sampled_run(evol, server, tmp_path, "local", "--answer-n", "--backend", "no-n")
        assert not [body for body in server.requests if "n" in body]
    same_records(out, sequential)
    assert read_jsonl(out / "dataset.jsonl") == read_jsonl(sequential / "dataset.jsonl")


def test_the_option_is_in_the_fingerprint_and_refused_where_it_means_nothing(evol, tmp_path):
    seeds = write_seeds(tmp_path / "s.jsonl", SEEDS[:2])
    with FakeServer(responder=VerifiableResponder()) as server:
        lone = evol(*run_args(server, seeds, tmp_path / "x", "--answer-n"))
        assert lone.exit_code == 2 and "--answer-n: only" in lone.output
        assert server.requests == []
        out = tmp_path / "run"
        first = evol(*run_args(server, seeds, out, "--verifiable", "--generations", "1"))
        assert first.exit_code == 0, first.output
        manifest = json.loads((out / "run.json").read_text())
        assert manifest["fingerprint"]["answer_n"] is None  # as a run from before the option
        assert manifest["config"]["answer_n"] is False
        grown = ("--verifiable", "--generations", "2")
        refused = evol(*run_args(server, seeds, out, *grown, "--answer-n"))
        assert refused.exit_code == 2 and "--answer-n" in refused.output
        other = tmp_path / "n"
        assert evol(*run_args(server, seeds, other, *grown[:2], "1", "--answer-n")).exit_code == 0
        assert json.loads((other / "run.json").read_text())["fingerprint"]["answer_n"] is True
        assert evol(*run_args(server, seeds, other, *grown)).exit_code == 2
        assert evol(*run_args(server, seeds, other, *grown, "--answer-n")).exit_code == 0
        assert evol(*run_args(server, seeds, out, *grown)).exit_code == 0


def test_a_dry_run_counts_two_answer_calls_and_every_answers_tokens(evol, tmp_path) -> None:
    seeds = write_seeds(tmp_path / "s.jsonl", SEEDS[:2])
    plans = []
    with FakeServer() as server:
        for extra in ([], ["--answer-n"], ["--answer-n", "--answer-attempts", "1"]):
            result = evol(*run_args(
                server, seeds, tmp_path / "p", "--dry-run", "--json", "--verifiable",
                "--answer-attempts", "3", "--max-tokens", "100", *extra,
            ))  # fmt: skip
            assert result.exit_code == 0, result.output
            plans.append(json.loads(result.stdout)["roles"]["answer"])
    one_by_one, batched, single = plans
    evolutions = 2 * 4
    assert one_by_one["calls"] == 2 + evolutions * 4
    assert batched["calls"] == 2 + evolutions * 2  # the first answer, and one request for 3
    assert batched["completion_tokens"] == one_by_one["completion_tokens"]  # 4 answers each
    assert batched["prompt_tokens"] < one_by_one["prompt_tokens"]
    assert single["calls"] == 2 + evolutions * 2  # 1 + 1 answers: two calls either way
    local = evol("run", seeds, "--out", tmp_path / "l", "--dry-run", "--json", "--verifiable",
                 "--answer-n", "--backend", "local", "--model-path", seeds)  # fmt: skip
    assert json.loads(local.stdout)["roles"]["answer"]["calls"] == 2 + evolutions * 4


# -- durability ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_kill_after_the_n_request_pays_for_nothing_twice(tmp_path: Path) -> None:
    """The n-request's reply is journalled; the kill comes while the answer checks that follow
    it are held. The resumed run sends those checks again, and no answer."""
    rows = [row | {"output": "Given."} for row in SEEDS[:3]]
    seeds, out = write_seeds(tmp_path / "s.jsonl", rows), tmp_path / "run"
    command = [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--quiet",
        "--generations", "1", "--verifiable", "--constraint-ids", POOL, "--concurrency", "3",
        "--retry-max-wait", "0.05", "--answer-n", "--answer-check", "--answer-attempts", "3",
    ]  # fmt: skip
    first = VerifiableResponder(fail_first=2)  # answers 1 and 2 fail, 3 and 4 pass

    def check(body: dict[str, Any]) -> bool:
        return kind_of(body) == "answer_check"

    with FakeServer(responder=first, hold=check) as server:
        process = subprocess.Popen([*command, "--base-url", server.base_url], env=ENV)
        try:
            server.wait_until(lambda: server.held == 3 or process.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert server.held == 3 and server.in_flight == 3
        before = Counter((kind_of(body), body.get("n")) for body in server.requests)
    second = VerifiableResponder(fail_first=2, answers=Counter(first.answers))
    with FakeServer(responder=second) as server:
        resumed = subprocess.run([*command, "--base-url", server.base_url], env=ENV)
        assert resumed.returncode == 0
        after = Counter(kind_of(body) for body in server.requests)
    assert before == {
        ("evolve", None): 3, ("judge", None): 3, ("answer", None): 3, ("answer", 3): 3,
        ("answer_check", None): 3,
    }  # fmt: skip
    assert after == {"answer_check": 3}  # the answers come from the journal
    assert second.answers == first.answers  # no answer drawn again
    kept = read_jsonl(out / "gen_1.jsonl")
    assert [r["attempts"] for r in kept] == [3, 3, 3]
    for record in kept:
        assert fails(record["output"], constraints_of(record)) == []
        assert record["unmet"] == dict.fromkeys(sorted(c.id for c in constraints_of(record)), 2)
    assert not (out / "calls.jsonl").exists()


def test_a_batch_run_sends_the_n_request_as_one_row(evol, tmp_path: Path) -> None:
    args = ("--generations", "2", "--constraint-ids", POOL, "--model", "fake-model",
            "--answer-n", "--seed", "5")  # fmt: skip
    with FakeServer(responder=VerifiableResponder(pass_rate=RATE)) as server:
        seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
        live = tmp_path / "live"
        result = evol(*run_args(server, seeds, live, "--verifiable", *args))
        assert result.exit_code == 0, result.output
        paid = Counter(body.get("n") for body in server.requests)
    with BatchServer(responder=VerifiableResponder(pass_rate=RATE), seed=3) as server:
        result = evol(
            "run", seeds, "--out", tmp_path / "batch", "--base-url", server.base_url, "--quiet",
            "--verifiable", "--batch", "--batch-poll-interval", "0.05", "--retry-max-wait",
            "0.05", *args,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert set(server.submitted.values()) == {1}  # no row submitted twice
        assert len(server.submitted) == sum(paid.values())
    assert paid[3] > 0  # some rows asked for 3 answers
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        assert read_jsonl(tmp_path / "batch" / name) == read_jsonl(live / name)


WORDS = "length_constraints:number_words"


# A choice as the shaping function writes it: a dict for "message" plus a finish_reason.
Choice = dict[str, Any]


def good(instruction: str) -> Choice:
    return {"message": {"role": "assistant", "content": constrained_answer(instruction, meet=True)},
            "finish_reason": "stop"}  # fmt: skip


def bad(instruction: str) -> Choice:
    return {"message": {"role": "assistant", "content": constrained_answer(instruction, meet=False)},
            "finish_reason": "stop"}  # fmt: skip


NULL: Choice = {"message": {"role": "assistant", "content": None}, "finish_reason": "stop"}
REFUSAL: Choice = {"message": {"role": "assistant", "content": None, "refusal": "I can't."},
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
