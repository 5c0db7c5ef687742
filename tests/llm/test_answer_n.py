"""--answer-n (#26, item 3): once a record's first answer fails its constraints, the further
answers are asked for in one request with `n`, where the backend sends it. The records are
those of drawing them one call at a time; a server that returns fewer choices, and a backend
that cannot send `n` (the embedded one), fall back to one call per answer; the one request
is journalled, so a kill -9 pays for nothing twice; --batch sends it as one row."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

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
