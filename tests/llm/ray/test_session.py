"""The session Ray's HTTP stage is given (evol.llm.ray.session), without a cluster: it sends a
batch at once and never raises, reads a reply whole up to the cap, and hands each reply to the
sink as it arrives; and the reply sink itself."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from evol.llm.ray import session
from tests.support.fake_server import FakeServer, Fault, first_user_turn
from tests.support.ray_cluster import (
    needs_ray,
)


def post_through_session(
    server: FakeServer, bodies: list[dict], sink: Any = None, **limits: Any
) -> list[dict]:
    """What Ray's HTTP stage does with its session: post every row's payload, then await each
    reply in order (http_request_stage.py, ray 2.60)."""
    settings = {"cap": 1 << 20, "timeout": 30.0, "connections": 64} | limits

    async def stage() -> list[dict]:
        async with session.EnvelopeSession(**settings, sink=sink)() as http:
            pending = [
                http.post(
                    server.base_url + "/chat/completions",
                    headers={"Content-Type": "application/json"},
                    data=json.dumps(
                        session.to_payload({"key": str(i), "body": json.dumps(body)})["payload"]
                    ),
                )
                for i, body in enumerate(bodies)
            ]
            replies = []
            for request in pending:
                async with await request as response:
                    assert response.status == 200
                    replies.append(await response.json())
            return replies

    return asyncio.run(stage())


def chat(text: str, **options: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": text}], **options}


@contextmanager
def released_once(server: FakeServer, held: Callable[[], bool]) -> Iterator[None]:
    """Release the server's held requests once `held()` holds, from a watcher thread: requests
    in flight together are so because the server held them, not because the machine sent
    them within a latency (a hang guard of 600 s, never a pace: a session that sends one at a
    time is released by it and fails the count)."""

    def watch() -> None:
        try:
            server.wait_until(held)
        finally:
            server.release()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        watcher.join()


def test_the_session_sends_a_batch_at_once_and_evols_body_as_it_is() -> None:
    with FakeServer(hold=lambda _body: True) as server:
        bodies = [chat(f"say {i}") for i in range(8)]
        with released_once(server, lambda: server.held == 8):
            replies = post_through_session(server, bodies)
    assert server.peak_in_flight == 8  # the stock stage sends one at a time
    assert server.requests == bodies  # no key added, none null-filled, none dropped
    assert [r["status"] for r in replies] == [200] * 8
    assert all(json.loads(r["body"])["choices"] for r in replies)


def test_the_session_never_raises_whatever_the_server_does() -> None:
    faults = {
        "garbled": Fault("malformed"),
        "dropped": Fault("drop"),
        "limited": Fault("status", 429, retry_after=3),
    }
    plan = lambda body: faults.get(body["messages"][0]["content"])  # noqa: E731
    sizes = lambda body: "x" * (5000 if body["messages"][0]["content"] == "huge" else 10)  # noqa: E731
    with FakeServer(faults=plan, responder=sizes) as server:
        replies = post_through_session(
            server, [chat(name) for name in [*faults, "huge", "fine"]], cap=4000
        )
    garbled, dropped, limited, huge, fine = replies
    assert garbled["status"] == 200 and garbled["body"].startswith('{"id": "x"')
    assert dropped["status"] == 0 and dropped["error"]
    assert limited["status"] == 429 and limited["retry_after"] == "3"
    assert huge["body"] is None and "4,000-byte cap" in huge["error"]
    assert fine["status"] == 200 and fine["error"] is None
    assert set(fine) == set(huge)  # every envelope has every key (Arrow would fill them in)


def test_the_session_reads_a_whole_reply_longer_than_one_network_read() -> None:
    """A reply of 1 MB under the cap arrives whole (found by attack28b: a single
    `read(cap + 1)` returned what was buffered, about 128 KB, and the run failed)."""
    long_text = "word " * 200_000
    with FakeServer(responder=lambda body: long_text) as server:
        (reply,) = post_through_session(server, [chat("hi")], cap=10_000_000)
    assert reply["status"] == 200 and reply["error"] is None
    assert json.loads(reply["body"])["choices"][0]["message"]["content"] == long_text


def test_a_reply_over_the_cap_in_many_reads_is_refused() -> None:
    with FakeServer(responder=lambda body: "word " * 200_000) as server:
        (reply,) = post_through_session(server, [chat("hi")], cap=500_000)
    assert reply["body"] is None and "500,000-byte cap" in reply["error"]


@needs_ray
def test_the_session_meets_the_contract_of_rays_http_stage() -> None:
    """Ray's own HTTP stage, in this process, with our session: a garbled body and a dropped
    connection come back as rows, nothing raises, nothing is retried."""
    from ray.llm._internal.batch.stages.http_request_stage import HttpRequestUDF

    faults = {"garbled": Fault("malformed"), "dropped": Fault("drop")}
    plan = lambda body: faults.get(body["messages"][0]["content"])  # noqa: E731
    both = lambda body: first_user_turn(body) in ("a", "b")  # noqa: E731
    with (
        FakeServer(faults=plan, hold=both) as server,
        released_once(server, lambda: server.held == 2),
    ):
        udf = HttpRequestUDF(
            data_column="__data",
            expected_input_keys=["payload"],
            url=server.base_url + "/chat/completions",
            max_retries=0,
            session_factory=session.EnvelopeSession(cap=1 << 20, timeout=30, connections=8),
        )
        batch = [
            {
                udf.IDX_IN_BATCH_COLUMN: i,
                **session.to_payload({"key": str(i), "body": json.dumps(chat(text))}),
            }
            for i, text in enumerate(["garbled", "dropped", "a", "b"])
        ]

        async def rows() -> list[dict]:
            return [row async for row in udf.udf(batch)]

        out = asyncio.run(rows())
    assert [row["http_response"]["status"] for row in out] == [200, 0, 200, 200]
    assert len(server.requests) == 4 and server.peak_in_flight >= 2


class RecordingSink:
    """Stands in for the `ReplySink` actor's handle: `sink.put.remote(rows)` keeps the rows."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.messages = 0
        self.put = self

    def remote(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)
        self.messages += 1


class BrokenSink(RecordingSink):
    """A sink whose actor is gone: every message fails."""

    def remote(self, rows: list[dict[str, Any]]) -> None:
        raise RuntimeError("the actor died")


def stage_with_a_held_row(
    server: FakeServer, sink: Any, early: int
) -> tuple[list[dict], list[dict]]:
    """Ray's HTTP stage with our session: rows "slow", "a" and "b" (keys 0 to 2) posted at
    once, the server holding "slow". Returns what the sink held (once it held `early` rows)
    before "slow" was released, and the stage's replies."""

    async def stage() -> tuple[list[dict], list[dict]]:
        factory = session.EnvelopeSession(cap=1 << 20, timeout=30, connections=8, sink=sink)
        async with factory() as http:
            pending = [
                http.post(
                    server.base_url + "/chat/completions",
                    headers={"Authorization": "Bearer sk-secret"},
                    data=json.dumps(
                        session.to_payload({"key": str(i), "body": json.dumps(chat(text))})[
                            "payload"
                        ]
                    ),
                )
                for i, text in enumerate(["slow", "a", "b"])
            ]
            while server.served < 3 or len(sink.rows) < early:
                await asyncio.sleep(0.01)
            held_back = list(sink.rows)
            server.release()
            return held_back, [await (await request).json() for request in pending]

    return asyncio.run(asyncio.wait_for(stage(), 120))  # a guard against a hang, not a pace


def test_the_session_sends_each_reply_to_the_sink_as_it_arrives() -> None:
    """The rows a held row keeps in its batch reach the sink without waiting for it; every
    reply reaches it once, with its row's key, and nothing of the request (the API key)."""
    sink = RecordingSink()
    with FakeServer(hold=lambda body: first_user_turn(body) == "slow") as server:
        early, replies = stage_with_a_held_row(server, sink, early=2)
    assert sorted(row["key"] for row in early) == ["1", "2"]
    assert sorted(sink.rows, key=lambda row: row["key"]) == [
        {"key": str(i), **reply} for i, reply in enumerate(replies)
    ]
    assert all(reply["status"] == 200 for reply in replies)
    assert "sk-secret" not in json.dumps(sink.rows)
    assert sink.messages <= 3  # replies of one turn of the loop go in one message


def test_a_sink_that_fails_leaves_the_stage_its_replies() -> None:
    with FakeServer(hold=lambda body: first_user_turn(body) == "slow") as server:
        early, replies = stage_with_a_held_row(server, BrokenSink(), early=0)
    assert early == [] and [reply["status"] for reply in replies] == [200, 200, 200]


def test_the_reply_sink_hands_over_what_it_holds_and_keeps_none_of_it() -> None:
    async def scenario() -> None:
        sink = session.ReplySink()
        assert await sink.take(0.01) == []  # nothing came: an empty hand after the wait
        await sink.put([{"key": "1"}])
        await sink.put([{"key": "2"}, {"key": "3"}])
        assert await sink.take(60) == [{"key": "1"}, {"key": "2"}, {"key": "3"}]
        assert await sink.take(0.01) == []  # what it handed over is gone
        waiting = asyncio.ensure_future(sink.take(60))
        await asyncio.sleep(0)
        await sink.put([{"key": "4"}])
        assert await asyncio.wait_for(waiting, 60) == [{"key": "4"}]  # woken by the put

    asyncio.run(scenario())


class KnowingSink(RecordingSink):
    """A sink that already had the replies of `known` (a batch Ray runs again on a new worker
    after the first one died): `sink.holding.remote(keys)` says so, as the actor's would."""

    def __init__(self, known: set[str]) -> None:
        super().__init__()
        self.known, self.holding, self.asked = known, _Holding(self), []


class _Holding:
    def __init__(self, sink: KnowingSink) -> None:
        self.sink = sink

    async def remote(self, keys: list[str]) -> list[str]:
        self.sink.asked.append(sorted(keys))
        return [key for key in keys if key in self.sink.known]


def test_a_batch_run_again_sends_no_row_whose_reply_the_sink_had() -> None:
    sink = KnowingSink(known={"1"})
    with FakeServer() as server:
        texts = ["zero", "one", "two"]
        replies = post_through_session(server, [chat(text) for text in texts], sink=sink)
    assert [first_user_turn(body) for body in server.requests] == ["zero", "two"]
    assert sink.asked == [["0", "1", "2"]]  # one message for the batch
    assert replies[1]["status"] == 0 and "has this reply already" in replies[1]["error"]
    assert [replies[0]["status"], replies[2]["status"]] == [200, 200]
    assert sorted(row["key"] for row in sink.rows) == ["0", "2"]


class _NeverAnswers:
    async def remote(self, keys: list[str]) -> list[str]:
        await asyncio.Event().wait()
        return []


def test_a_sink_that_never_answers_delays_a_batch_but_does_not_stop_it() -> None:
    """The sink alive but stuck (its node cut off): the batch waits `sink_wait`, then sends
    (attack28d: every row waited for the sink's answer for ever)."""
    sink = RecordingSink()
    sink.holding = _NeverAnswers()
    with FakeServer() as server:
        replies = post_through_session(server, [chat("a"), chat("b")], sink=sink, sink_wait=0.2)
        assert len(server.requests) == 2
    assert [reply["status"] for reply in replies] == [200, 200]


def test_the_reply_sink_knows_the_keys_of_running_waves_until_they_are_forgotten() -> None:
    async def scenario() -> None:
        sink = session.ReplySink()
        await sink.put([{"key": "1"}, {"key": "2"}])
        await sink.take(60)
        assert await sink.holding(["1", "2", "3"]) == ["1", "2"]  # taken, still known
        await sink.forget(["1"])
        assert await sink.holding(["1", "2"]) == ["2"]

    asyncio.run(scenario())


def test_a_reply_put_after_its_wave_was_forgotten_is_not_kept() -> None:
    """The dataset's copy of a row can answer first and end its wave before the session's put
    reaches the sink: that late key must not stay in the sink for the rest of the run."""

    async def scenario() -> None:
        sink = session.ReplySink()
        await sink.forget(["late", "other"])
        await sink.put([{"key": "late"}, {"key": "new"}])
        assert await sink.holding(["late", "new"]) == ["new"]
        assert [row["key"] for row in await sink.take(60)] == ["new"]
        # Only the last waves forgotten are remembered, so that set stays bounded too.
        for wave in range(session.ReplySink.FORGOTTEN_WAVES):
            await sink.forget([f"wave{wave}"])
        await sink.put([{"key": "late"}])
        assert await sink.holding(["late"]) == ["late"]

    asyncio.run(scenario())
