"""The one call layer (evol.llm.dispatch): journal replay, retries, outcomes, fatal stops, counts.

The backend here is an in-process object that satisfies the Protocol and follows a script; the
HTTP backends have their own tests against fake servers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    Deferred,
    EndpointUnreachable,
    RateLimited,
    TransientBackendError,
    Unreachable,
)
from evol.llm import Completion, GenerationParams, LLMRequest
from evol.llm.dispatch import (
    CallFailed,
    CallPolicy,
    CallRefused,
    CallStats,
    CallWaiting,
    Dispatcher,
)

POLICY = CallPolicy(in_flight=4, max_retries=2, retry_max_wait=0.0)


class Scripted:
    """Answers each request with the next outcome of its text's script (the last one repeats)."""

    def __init__(self, script: dict[str, list[Any]]):
        self.script = script
        self.sent: list[str] = []

    async def complete(self, request: LLMRequest) -> Completion:
        text = request.messages[-1]["content"]
        self.sent.append(text)
        outcomes = self.script[text]
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return Completion(text=outcome, prompt_tokens=3, completion_tokens=2)

    async def default_model(self) -> str:
        return "m"

    async def aclose(self) -> None:
        pass


class Journal:
    def __init__(self, replies: dict[tuple[str, str], dict[str, Any]] | None = None):
        self.replies = dict(replies or {})
        self.remembered: list[tuple[str, str, dict[str, Any]]] = []

    def recall(self, item_id: str, role: str) -> dict[str, Any] | None:
        return self.replies.pop((item_id, role), None)

    def remember(self, item_id: str, role: str, reply: dict[str, Any]) -> None:
        self.remembered.append((item_id, role, reply))


def ask(text: str, role: str = "answer", item: str | None = "s1", key: str | None = None):
    return LLMRequest([{"role": "user", "content": text}], "m", GenerationParams(), role, item, key)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_a_reply_is_journalled_under_its_step_and_replayed_instead_of_sent_again() -> None:
    backend, journal = Scripted({"q": ["first"]}), Journal()
    calls = Dispatcher(backend, POLICY, journal=journal)
    reply = run(calls.complete(ask("q", role="judge", key="judge_again")))
    assert reply.text == "first"
    assert [(item, key, entry["text"]) for item, key, entry in journal.remembered] == [
        ("s1", "judge_again", "first")
    ]
    replaying = Journal({("s1", "judge"): Completion(text="saved").model_dump()})
    calls = Dispatcher(backend, POLICY, journal=replaying)
    assert run(calls.complete(ask("q", role="judge"))).text == "saved"
    assert backend.sent == ["q"] and calls.stats.requests == {}
    assert not replaying.remembered  # a replayed reply is journalled already


def test_a_call_without_a_step_is_neither_replayed_nor_journalled() -> None:
    journal = Journal({("s1", "score"): Completion(text="saved").model_dump()})
    calls = Dispatcher(Scripted({"q": ["live"]}), POLICY, journal=journal)
    assert run(calls.complete(ask("q", role="score", item=None))).text == "live"
    assert not journal.remembered and ("s1", "score") in journal.replies


def test_transient_failures_are_retried_and_counted_per_role_then_fail_the_call() -> None:
    down = TransientBackendError("503 from the server")
    backend = Scripted({"ok": [down, "fine"], "bad": [down]})
    stats = CallStats()
    calls = Dispatcher(backend, POLICY, stats=stats)
    assert run(calls.complete(ask("ok", role="evolve"))).text == "fine"
    with pytest.raises(CallFailed) as failed:
        run(calls.complete(ask("bad", role="answer")))
    assert failed.value.error is down
    assert stats.requests == {"evolve": 2, "answer": 3}  # every attempt is a request
    assert stats.retries == {"evolve": 1, "answer": 2}
    assert calls.stats is stats


@pytest.mark.parametrize(
    "refusal", [BackendError("400: content filter"), ContextLengthExceeded("too long")]
)
def test_a_refusal_is_not_retried_and_reaches_the_caller_as_a_refusal(refusal) -> None:
    backend = Scripted({"q": [refusal]})
    calls = Dispatcher(backend, POLICY)
    with pytest.raises(CallRefused) as refused:
        run(calls.complete(ask("q")))
    assert refused.value.error is refusal and backend.sent == ["q"]


def test_an_error_the_user_must_fix_stops_every_later_call_before_it_is_sent() -> None:
    bad_key = AuthenticationFailed("401: bad key")
    backend = Scripted({"first": [bad_key], "later": ["never"]})
    calls = Dispatcher(backend, POLICY)
    with pytest.raises(AuthenticationFailed):
        run(calls.complete(ask("first")))
    with pytest.raises(AuthenticationFailed) as later:
        run(calls.complete(ask("later")))
    assert later.value is bad_key and backend.sent == ["first"]


def test_an_endpoint_that_stops_answering_stops_the_work_naming_the_tries() -> None:
    backend = Scripted({"q": [Unreachable("connection refused")], "next": ["never"]})
    calls = Dispatcher(backend, POLICY)
    with pytest.raises(EndpointUnreachable, match=r"connection refused \(3 tries\)"):
        run(calls.complete(ask("q")))
    with pytest.raises(EndpointUnreachable):
        run(calls.complete(ask("next")))
    assert backend.sent == ["q", "q", "q"]


def test_a_reply_that_waits_in_a_batch_is_counted_and_not_journalled() -> None:
    journal = Journal()
    calls = Dispatcher(Scripted({"q": [Deferred("in batch_1")]}), POLICY, journal=journal)
    with pytest.raises(CallWaiting):
        run(calls.complete(ask("q")))
    assert calls.stats.deferred == 1 and not journal.remembered


def test_a_429_halves_the_limit_and_a_cancelled_call_is_counted_as_cut_off() -> None:
    backend = Scripted({"busy": [RateLimited("429", retry_after=0.0), "ok"]})
    calls = Dispatcher(backend, CallPolicy(in_flight=8, max_retries=1, retry_max_wait=0.0))
    assert run(calls.complete(ask("busy"))).text == "ok"
    assert (calls.slots.cuts, calls.slots.lowest) == (1, 4)

    class Hanging(Scripted):
        async def complete(self, request: LLMRequest) -> Completion:
            await asyncio.Event().wait()
            raise AssertionError

    async def cancelled() -> Dispatcher:
        hanging = Dispatcher(Hanging({}), POLICY)
        task = asyncio.ensure_future(hanging.complete(ask("q")))
        while not hanging.stats.requests:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return hanging

    assert run(cancelled()).stats.cut_off == 1


OUTCOMES = st.sampled_from(["ok", "transient", "refused", "waiting"])


@settings(max_examples=60, deadline=None)
@given(
    scripts=st.lists(st.lists(OUTCOMES, min_size=1, max_size=4), min_size=1, max_size=6),
    journalled=st.sets(st.integers(0, 5)),
)
def test_each_request_is_sent_at_most_retries_plus_one_times_and_a_journalled_one_never(
    scripts: list[list[str]], journalled: set[int]
) -> None:
    make = {
        "ok": lambda: "reply",
        "transient": lambda: TransientBackendError("503"),
        "refused": lambda: BackendError("400"),
        "waiting": lambda: Deferred("batch"),
    }
    backend = Scripted({f"q{i}": [make[o]() for o in script] for i, script in enumerate(scripts)})
    saved = {(f"s{i}", "answer"): Completion(text="saved").model_dump() for i in journalled}
    calls = Dispatcher(backend, POLICY, journal=Journal(saved))

    async def main() -> list[Any]:
        requests = [ask(f"q{i}", item=f"s{i}") for i in range(len(scripts))]
        return await asyncio.gather(*map(calls.complete, requests), return_exceptions=True)

    results = run(main())
    for i, result in enumerate(results):
        sent = backend.sent.count(f"q{i}")
        if i in journalled:
            assert sent == 0 and result.text == "saved"
            continue
        assert 1 <= sent <= POLICY.max_retries + 1
        assert isinstance(result, Completion | CallFailed | CallRefused | CallWaiting)
    assert sum(calls.stats.requests.values()) == len(backend.sent)
