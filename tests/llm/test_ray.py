"""`evol run --engine ray`: each step's requests through Ray Data LLM, as durable as a live run.

The pure parts (an envelope or a vLLM row read as a reply, the sampling params, the session
the HTTP stage is given, the sink it sends each reply to) are checked without a cluster. The
rest runs on a real local Ray with 2 CPUs, started once for the module (`ray start --head` in
its own process group, killed whole at the end), against the fake server: a run through Ray
equals the same run live, record for record; a bad row fails alone; replies reach their
callers one by one, not a stage batch at a time, and without the sink still come; a driver
killed by kill -9 while requests are held unanswered (all it has out, or one row of a batch
the rest of which was answered) resumes to the same records and pays again only for those it
had not received; and one run against the embedded model behind `python -m llama_cpp.server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    GarbledReply,
    RateLimited,
    Redirected,
    TransientBackendError,
    UsageError,
)
from evol.llm import BackendSettings, GenerationParams, LLMRequest, open_backend
from evol.llm.openai_api import ReplyReader
from evol.llm.protocol import Completion
from evol.llm.ray import RayBackend, RaySettings, session
from evol.llm.ray.rows import envelope_outcome
from evol.llm.ray.vllm import sampling_params, vllm_outcome, vllm_row
from evol.secrets import Secrets
from tests.support.fake_server import FakeServer, Fault, Responder, first_user_turn, kind_of
from tests.support.real_model import SMALL_SEEDS, llama_server, needs_model  # noqa: F401 (a fixture)
from tests.support.runs import assert_valid_run, read_jsonl, write_seeds

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="needs the ray extra: pip install -e '.[dev]'"
)
READER = ReplyReader("http://server/v1", "OPENAI_API_KEY", Secrets.of("sk-secret", []))
REPLY = {
    "choices": [{"message": {"content": "an answer"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3},
}


# -- an envelope read as a live reply -----------------------------------------------------------


def envelope(status: int, body: object = None, error: str | None = None, **headers: str):
    text = body if isinstance(body, str) or body is None else json.dumps(body)
    return session.envelope(status, text, error, **headers)


def error_body(message: str) -> dict[str, Any]:
    return {"error": {"message": message}}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (envelope(200, REPLY), Completion(text="an answer", prompt_tokens=7, completion_tokens=3, finish_reason="stop")),
        (envelope(200, '{"id": "x", "choices": ['), GarbledReply),
        (envelope(200, {"choices": []}), GarbledReply),
        (envelope(200, error="a reply over the 10-byte cap (--max-response-mb)"), TransientBackendError),
        (envelope(0, error="ClientConnectorError: refused"), TransientBackendError),
        (envelope(400, error_body("maximum context length is 4096 tokens")), ContextLengthExceeded),
        (envelope(400, error_body("bad prompt")), BackendError),
        (envelope(401, error_body("no")), AuthenticationFailed),
        (envelope(429, error_body("slow down"), **{"retry-after": "7"}), RateLimited),
        (envelope(503, "<html>down</html>"), TransientBackendError),
        (envelope(307, "", location="http://elsewhere/v1"), Redirected),
    ],
)  # fmt: skip
def test_an_envelope_is_read_as_the_openai_backend_reads_that_reply(
    row: dict[str, Any], expected: object
) -> None:
    outcome = envelope_outcome(row, "fake-model", READER)
    if isinstance(expected, Completion):
        assert outcome == expected
    else:
        assert type(outcome) is expected, outcome


def test_an_envelope_keeps_retry_after_and_hides_the_key() -> None:
    limited = envelope_outcome(
        envelope(429, error_body("limit for sk-secret"), **{"retry-after": "7"}), "m", READER
    )
    assert isinstance(limited, RateLimited) and limited.retry_after == 7.0
    assert "sk-secret" not in str(limited)
    dropped = envelope_outcome(envelope(0, error="reset talking to sk-secret"), "m", READER)
    assert "sk-secret" not in str(dropped)


# -- the vLLM path's rows -------------------------------------------------------------------


SCHEMA = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": {"type": "object"}}}


@pytest.mark.parametrize(
    ("params", "sent"),
    [
        (GenerationParams(), {}),
        (GenerationParams(temperature=0.0, max_tokens=100), {"temperature": 0.0, "max_tokens": 100}),
        (GenerationParams(top_p=0.9, logprobs=True, top_logprobs=5), {"top_p": 0.9, "logprobs": 5}),
        (GenerationParams(logprobs=True), {"logprobs": 1}),
        (GenerationParams(response_format=SCHEMA), {"structured_outputs": {"json": {"type": "object"}}}),
        (GenerationParams(response_format={"type": "json_object"}), {}),
        (GenerationParams(n=3), {}),
    ],
)  # fmt: skip
def test_sampling_params_send_only_what_is_set(params: GenerationParams, sent: dict) -> None:
    assert sampling_params(params) == sent


def test_a_vllm_row_carries_json_text_and_is_grouped_by_its_options() -> None:
    request = LLMRequest([{"role": "user", "content": "hi"}], "m", GenerationParams(max_tokens=9))
    group, row = vllm_row(request)
    assert group == ("max_tokens",)
    assert json.loads(row["messages"]) == [{"role": "user", "content": "hi"}]
    assert json.loads(row["sampling"]) == {"max_tokens": 9}
    judged = LLMRequest([], "m", GenerationParams(temperature=0.0, response_format=SCHEMA))
    assert vllm_row(judged)[0] == ("structured_outputs", "temperature")
    worker_row = session.to_vllm({"key": "1", **row})
    assert worker_row == {"messages": [{"role": "user", "content": "hi"}], "sampling_params": {"max_tokens": 9}}  # fmt: skip


@pytest.mark.parametrize(
    ("row", "max_tokens", "expected"),
    [
        (
            {"generated_text": "ok", "num_input_tokens": 5, "num_generated_tokens": 2, "__inference_error__": ""},
            100,
            Completion(text="ok", prompt_tokens=5, completion_tokens=2, finish_reason="stop"),
        ),
        (  # as long as max_tokens: cut there, as OpenAI's "length"
            {"generated_text": "cut", "num_input_tokens": 5, "num_generated_tokens": 100},
            100,
            Completion(text="cut", prompt_tokens=5, completion_tokens=100, finish_reason="length"),
        ),
        (  # Arrow nulls and numpy-like integers
            {"generated_text": "", "num_input_tokens": None, "num_generated_tokens": True},
            None,
            Completion(text="", finish_reason="stop"),
        ),
        ({"__inference_error__": "prompt too long for sk-secret", "generated_text": None}, 10, TransientBackendError),
        ({"generated_text": None, "num_input_tokens": 3}, 10, TransientBackendError),
    ],
)  # fmt: skip
def test_a_vllm_row_is_read_as_a_completion(row: dict, max_tokens: int | None, expected) -> None:
    outcome = vllm_outcome(row, max_tokens, READER)
    if isinstance(expected, Completion):
        assert outcome == expected
    else:
        assert type(outcome) is expected and "sk-secret" not in str(outcome)


@needs_ray
def test_the_vllm_processor_config_is_built_from_the_options() -> None:
    from evol.llm.ray.vllm import vllm_config

    config = vllm_config("Qwen/Qwen2.5-0.5B-Instruct", tensor_parallel=2, replicas=3, batch_size=16)
    assert config.model_source == "Qwen/Qwen2.5-0.5B-Instruct"
    assert config.engine_kwargs["tensor_parallel_size"] == 2
    assert (config.concurrency, config.batch_size) == (3, 16)
    assert config.should_continue_on_error is True  # a failed row fails alone


def test_vllm_logprobs_become_openai_style_top_logprobs() -> None:
    row = {
        "generated_text": "7",
        "num_generated_tokens": 1,
        "logprobs": [
            {
                "22": {"logprob": -0.1, "rank": 1, "decoded_token": "7"},
                "23": {"logprob": -2.5, "rank": 2, "decoded_token": "8"},
            }
        ],
    }
    outcome = vllm_outcome(row, None, READER)
    assert isinstance(outcome, Completion)
    assert outcome.top_logprobs == [{"7": -0.1, "8": -2.5}]


# -- the session the HTTP stage is given ------------------------------------------------------


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


def test_the_session_sends_a_batch_at_once_and_evols_body_as_it_is() -> None:
    with FakeServer(latency=0.2) as server:
        bodies = [chat(f"say {i}") for i in range(8)]
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
    with FakeServer(faults=plan, latency=0.1) as server:
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


# -- usage ------------------------------------------------------------------------------------


@needs_ray
def test_a_submitter_that_crashes_fails_its_callers_instead_of_leaving_them_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from evol.llm.ray import RayBackend

    backend = RayBackend(BackendSettings(base_urls=["http://127.0.0.1:9/v1"]), RaySettings())

    def broken() -> list:
        raise RuntimeError("planted")

    monkeypatch.setattr(backend, "_take_wave", broken)
    request = LLMRequest([{"role": "user", "content": "hi"}], "m", GenerationParams())

    async def ask() -> None:
        try:
            with pytest.raises(TransientBackendError, match="planted"):
                await asyncio.wait_for(backend.complete(request), 30)
        finally:
            await backend.aclose()

    asyncio.run(ask())


def test_engine_ray_with_batch_or_another_backend_is_a_usage_error(tmp_path: Path) -> None:
    from evol.llm.batch import BatchSettings

    settings = BackendSettings(base_urls=["http://a/v1"])
    ray = RaySettings()
    with pytest.raises(UsageError, match="pick one"):
        open_backend(None, settings, batch=BatchSettings(state_dir=tmp_path), ray=ray)
    with pytest.raises(UsageError, match="not with --backend local"):
        open_backend("local", settings, ray=ray)
    with pytest.raises(UsageError, match="one --base-url"):
        open_backend(None, BackendSettings(base_urls=["http://a/v1", "http://b/v1"]), ray=ray)


@pytest.mark.parametrize(
    ("engine", "options", "refusal"),
    [
        ("live", {"ray_model": "m"}, "add --engine ray"),
        ("ray", {"batch": True}, "pick one"),
        ("ray", {"model_path": "m.gguf"}, "--model-path runs a GGUF"),
        ("ray", {"ray_model": "m", "requested": "openai"}, "drop --backend"),
        ("ray", {"ray_model": "m", "base_urls": ["http://a/v1"]}, "drop --base-url"),
        ("ray", {"requested": "local"}, "not with --backend local"),
        ("ray", {"base_urls": ["http://a/v1", "http://b/v1"]}, "one --base-url"),
        ("live", {"batch": True, "model_path": "m.gguf", "base_urls": ["http://a/v1", "http://b/v1"]}, None),
        ("ray", {"requested": "openai", "base_urls": ["http://a/v1"]}, None),
        ("ray", {"ray_model": "m"}, None),
    ],
)  # fmt: skip
def test_each_option_an_engine_would_not_use_is_refused(
    engine: str, options: dict[str, Any], refusal: str | None
) -> None:
    from evol.llm.registry import check_engine_options

    given = {"requested": None, "ray_model": None, "base_urls": [], "batch": False} | options
    requested = given.pop("requested")
    if refusal is None:
        check_engine_options(requested, engine=engine, **given)
    else:
        with pytest.raises(UsageError, match=refusal):
            check_engine_options(requested, engine=engine, **given)


def test_a_dry_run_names_vllm_on_ray_and_its_model(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    result = evol("run", seeds, "--out", tmp_path / "run", "--engine", "ray",
                  "--ray-model", "Qwen/Qwen2.5-0.5B-Instruct", "--dry-run")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "backend ray-vllm, model Qwen/Qwen2.5-0.5B-Instruct for every role" in result.stdout
    refused = evol("run", seeds, "--out", tmp_path / "run", "--engine", "ray", "--backend",
                   "openai", "--ray-model", "m", "--dry-run")  # fmt: skip
    assert refused.exit_code == 2 and "drop --backend" in refused.stderr


@pytest.mark.parametrize(
    ("options", "refusal"),
    [
        (["--engine", "ray", "--ray-model", "m", "--base-url", "http://x/v1"], "drop --base-url"),
        (["--engine", "ray", "--model-path", "m.gguf"], "--model-path runs a GGUF"),
        (["--engine", "ray", "--ray-model", "m", "--model-path", "m.gguf"], "--model-path"),
        (["--ray-model", "m"], "add --engine ray"),
    ],
    ids=["vllm-and-base-url", "http-and-model-path", "vllm-and-model-path", "no-engine"],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "run"])
def test_an_option_ray_would_not_use_is_refused_not_ignored(
    evol, tmp_path: Path, options: list[str], refusal: str, dry_run: bool
) -> None:
    """attack28: each of these ran, on another model than the one named (a GGUF given with
    --engine ray went to api.openai.com), or left an option unused without a word."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    result = evol("run", seeds, "--out", tmp_path / "run", *options,
                  *(["--dry-run"] if dry_run else []))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert refusal in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


@needs_ray
def test_a_cluster_nothing_answers_at_stops_the_run_at_once(
    evol, server: FakeServer, tmp_path: Path
) -> None:
    from tests.support.runs import refused_url

    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    address = refused_url().removeprefix("http://").removesuffix("/v1")
    result = evol("run", seeds, "--out", tmp_path / "run", "--base-url", server.base_url,
                  "--engine", "ray", "--ray-address", address, "--quiet")  # fmt: skip
    assert result.exit_code == 2
    assert f"cannot start or join {address}" in result.stderr and "nothing answers" in result.stderr
    assert server.requests == []


def test_a_live_runs_run_json_has_no_engine_fields(
    evol, server: FakeServer, tmp_path: Path
) -> None:
    """run.json as before there was a choice of engine; a run through Ray records its own
    (test_a_run_through_ray_equals_the_same_run_live)."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    result = evol("run", seeds, "--out", tmp_path / "run", "--base-url", server.base_url,
                  "--generations", "0", "--quiet")  # fmt: skip
    assert result.exit_code == 0
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert not {name for name in config if name == "engine" or name.startswith("ray_")}


def test_the_cli_refuses_engine_ray_with_batch(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    result = evol("run", seeds, "--out", tmp_path / "run", "--base-url", "http://127.0.0.1:9/v1",
                  "--engine", "ray", "--batch", "--quiet")  # fmt: skip
    assert result.exit_code == 2 and "--batch and --engine ray" in result.stderr


# -- on a real local Ray ----------------------------------------------------------------------

# No telemetry; no token auth (Ray 2.60 turns it on for a new local cluster, with a token in
# ~/.ray that the test would share with whatever else runs Ray on this machine).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The `ray start` process of each cluster the fixture below started, by address: its workers
# are its descendants.
HEAD_PIDS: dict[str, int] = {}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local Ray head with 2 CPUs in a process group of its own; yields its address. Every
    process of it (raylet, GCS, workers, the agents that outlive `ray.shutdown`) is killed with
    the group at the end."""
    os.environ.update(RAY_ENV)
    port = free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    process = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    HEAD_PIDS[address] = process.pid
    try:
        deadline = time.monotonic() + 120
        while not _accepts(port):
            assert process.poll() is None, "ray start exited"
            assert time.monotonic() < deadline, "ray start did not listen within 120 s"
            time.sleep(0.2)
        yield address
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        forget_cluster(port)


def forget_cluster(port: int) -> None:
    """Remove the address `ray start` left for later `ray.init()` calls, if it is this
    cluster's: killed, the cluster cannot remove it (`ray stop` would), and a `ray.init()`
    with no address would try to join the dead cluster."""
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_command(server: FakeServer, seeds: Path, out: Path, *extra: object) -> list[str]:
    return [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out),
        "--base-url", server.base_url, "--quiet", "--retry-max-wait", "0.05", *map(str, extra),
    ]  # fmt: skip


def run_content(out: Path) -> list[str]:
    """Every record a run kept or eliminated, as sorted canonical JSON."""
    rows = read_jsonl(out / "dataset.jsonl") + read_jsonl(out / "eliminated.jsonl")
    for row in rows:  # the server's URL, in the messages of eliminated records
        row["detail"] = re.sub(r"127\.0\.0\.1:\d+", "SERVER", row.get("detail") or "")
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


def run_files(out: Path, server: FakeServer) -> dict[str, str]:
    """Every file a run wrote but run.json (it records the times and the engine), the
    server's URL (in the messages of eliminated records) as SERVER."""
    return {
        path.name: path.read_text(encoding="utf-8").replace(server.base_url, "SERVER")
        for path in sorted(out.iterdir())
        if path.is_file() and path.name != "run.json"
    }


# Lineages that differ: kept, eliminated at each rule, cut, retried with its parent.
VARIED = [
    {"instruction": "Explain topic 0 in two sentences."},
    {"instruction": "[leak-once] Describe a river.", "output": "A river flows."},
    {"instruction": "[equal] Name a colour."},
    {"instruction": "[sorry] Solve the riddle."},
    {"instruction": "Summarize the sentence.", "input": "The cat slept all day."},
    {"instruction": "[too-long] Write an essay."},
]
RAY_OPTIONS = ("--engine", "ray", "--ray-batch-size", "4")


@pytest.mark.slow
@needs_ray
def test_a_run_through_ray_equals_the_same_run_live(ray_cluster: str, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", VARIED)
    options = ("--generations", "2", "--seed", "5", "--concurrency", "16")
    env = os.environ | RAY_ENV
    with FakeServer() as server:
        live = subprocess.run(run_command(server, seeds, tmp_path / "live", *options), env=env)
        assert live.returncode == 0
        live_bodies = sorted(json.dumps(body, sort_keys=True) for body in server.requests)
        live_files = run_files(tmp_path / "live", server)
    with FakeServer() as server:
        through_ray = subprocess.run(
            run_command(server, seeds, tmp_path / "ray", *options, *RAY_OPTIONS,
                        "--ray-address", ray_cluster),
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert through_ray.returncode == 0, through_ray.stderr[-3000:]
        ray_bodies = sorted(json.dumps(body, sort_keys=True) for body in server.requests)
        ray_files = run_files(tmp_path / "ray", server)
    # Each file as the live run wrote it, line for line (their order included).
    assert ray_files == live_files
    assert ray_bodies == live_bodies  # the same requests, byte for byte once parsed
    manifest = assert_valid_run(tmp_path / "ray")
    assert manifest["backend"]["name"] == "openai" and manifest["config"]["engine"] == "ray"
    assert manifest["config"]["ray_address"] == ray_cluster


@pytest.mark.slow
@needs_ray
def test_a_run_on_a_local_ray_that_evol_starts_itself_completes(tmp_path: Path) -> None:
    """No --ray-address: evol starts a local Ray, on the thread that lives as long as the run
    (a local Ray's head dies with the thread that started it: started on a wave's thread, it
    was gone after the first wave and the run never ended)."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", VARIED[:2])
    # A temp dir of its own: with no address, ray.init joins the cluster named in
    # $TMPDIR/ray/ray_current_cluster (the module's, another test's) if there is one.
    # Short: Ray's socket paths under it must fit in 107 bytes.
    alone = tempfile.mkdtemp(prefix="evol-ray-", dir="/tmp")
    env = os.environ | RAY_ENV | {"TMPDIR": alone}
    with FakeServer() as server:
        child = subprocess.Popen(
            run_command(server, seeds, tmp_path / "out", "--generations", "2", *RAY_OPTIONS),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            _, stderr = child.communicate(timeout=400)
        finally:  # the Ray agents that outlive ray.shutdown, killed with the session
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            shutil.rmtree(alone, ignore_errors=True)
    assert child.returncode == 0, stderr[-3000:]
    manifest = assert_valid_run(tmp_path / "out")
    assert manifest["status"] == "complete"
    assert len(read_jsonl(tmp_path / "out" / "dataset.jsonl")) >= 2


def first_time_faults(faults: dict[str, Fault]) -> Any:
    """A fault for the first request whose seed text holds one of `faults`' markers."""
    seen: set[str] = set()
    lock = threading.Lock()

    def plan(body: dict[str, Any]) -> Fault | None:
        text = json.dumps(body["messages"])
        for marker, fault in faults.items():
            if marker in text:
                with lock:
                    if (marker, kind_of(body)) in seen:
                        return None
                    seen.add((marker, kind_of(body)))
                return fault
        return None

    return plan


class HugeOnce(Responder):
    """The default script, but the first answer to a `[huge]` seed is over any small cap."""

    def answer(self, instruction: str) -> str | tuple[str, str]:
        if "[huge]" in instruction and not getattr(self, "sent_huge", False):
            self.sent_huge = True
            return "word " * 20_000
        return super().answer(instruction)


@pytest.mark.slow
@needs_ray
def test_a_bad_row_fails_alone_and_is_retried_alone(ray_cluster: str, tmp_path: Path) -> None:
    """A garbled body, a dropped connection and a reply over the cap, each once, in waves with
    other rows: those rows are retried by evol (Ray retries nothing), a prompt over the
    context is eliminated, and the run ends as the live one does under the same faults."""
    rows = [
        {"instruction": "[garbled] Name a tree."},
        {"instruction": "[dropped] Name a fish."},
        {"instruction": "[huge] Name a bird."},
        {"instruction": "[too-long] Write an essay."},
        {"instruction": "Name a mountain."},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    faults = {"[garbled]": Fault("malformed"), "[dropped]": Fault("drop")}
    options = ("--generations", "1", "--concurrency", "16", "--max-response-mb", "0.05")
    outcomes = {}
    for engine, extra in (("live", ()), ("ray", (*RAY_OPTIONS, "--ray-address", ray_cluster))):
        with FakeServer(faults=first_time_faults(faults), responder=HugeOnce()) as server:
            done = subprocess.run(
                run_command(server, seeds, tmp_path / engine, *options, *extra, "--json"),
                env=os.environ | RAY_ENV, capture_output=True, text=True,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr[-3000:]
            outcomes[engine] = json.loads(done.stdout), len(server.requests)
    (ray_summary, ray_calls), (live_summary, live_calls) = outcomes["ray"], outcomes["live"]
    assert ray_summary["status"] == "complete" and ray_summary["failed"] == []
    assert ray_summary["retries"] == live_summary["retries"] >= 3  # each fault, retried once
    assert ray_calls == live_calls
    assert run_content(tmp_path / "ray") == run_content(tmp_path / "live")
    eliminated = read_jsonl(tmp_path / "ray" / "eliminated.jsonl")
    assert [r["root_id"] for r in eliminated if r["reason"] == "too_long"] == ["s4"]


def kind_or_seed_answer(body: dict, seed_texts: set[str]) -> str:
    if kind_of(body) == "answer" and body["messages"][-1]["content"] in seed_texts:
        return "seed answer"
    return kind_of(body)


KILL_CONCURRENCY = 3


@pytest.mark.slow
@needs_ray
def test_a_killed_driver_resumes_and_repays_only_what_it_had_not_received(
    ray_cluster: str, tmp_path: Path
) -> None:
    """kill -9 of the driver while every request it has out is held unanswered by the server:
    what it had received is in the journal, so the resumed run pays again only for the held
    ones, and its records equal an uninterrupted run's.

    The bound in general: a killed driver pays again at most for the requests it had out
    (--concurrency at most), those whose reply had not reached it; a reply it held is never
    paid twice. Holding every slot makes that count exact on any machine."""
    rows = [{"instruction": f"Task {i}: explain topic {i}"} for i in range(5)]
    seeds, seed_texts = (
        write_seeds(tmp_path / "seeds.jsonl", rows),
        {r["instruction"] for r in rows},
    )
    options = ("--generations", "1", "--concurrency", str(KILL_CONCURRENCY), "--seed", "3")
    through_ray = (*options, *RAY_OPTIONS, "--ray-address", ray_cluster)
    env = os.environ | RAY_ENV
    with FakeServer() as server:  # uninterrupted, live: the same records, as the test above shows
        straight = tmp_path / "straight"
        assert (
            subprocess.run(run_command(server, seeds, straight, *options), env=env).returncode == 0
        )
        straight_calls = len(server.requests)

    out = tmp_path / "killed"
    hold = lambda body: kind_or_seed_answer(body, seed_texts) == "answer"  # noqa: E731
    with FakeServer(hold=hold) as server:
        process = subprocess.Popen(run_command(server, seeds, out, *through_ray), env=env)
        try:
            server.wait_until(lambda: server.held == KILL_CONCURRENCY or process.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        assert server.held == KILL_CONCURRENCY
        journalled = len(read_jsonl(out / "calls.jsonl"))
        sent = len(server.requests)
        server.release()
    assert journalled > 0  # evolve and judge replies of the held steps, at least

    with FakeServer() as server:
        resumed = subprocess.run(run_command(server, seeds, out, *through_ray), env=env)
        assert resumed.returncode == 0
        paid_twice = sent + len(server.requests) - straight_calls
    assert paid_twice == KILL_CONCURRENCY
    assert run_content(out) == run_content(straight)
    assert_valid_run(out)
    assert not (out / "calls.jsonl").exists()


def ask(text: str) -> LLMRequest:
    return LLMRequest([{"role": "user", "content": text}], "fake-model", GenerationParams())


@pytest.mark.slow
@needs_ray
def test_replies_come_one_by_one_and_without_the_sink_a_batch_at_a_time(ray_cluster: str) -> None:
    """In one process, on the cluster: two replies answer their callers while a third row of
    their batch is held; the sink killed, the held row and a later wave still answer (through
    the batches' rows), and aclose ends the sink and its thread."""
    import ray

    ray.init(address=ray_cluster, log_to_driver=False, logging_level="ERROR")
    try:
        with FakeServer(hold=lambda body: first_user_turn(body) == "slow") as server:
            settings = BackendSettings(base_urls=[server.base_url])
            backend = RayBackend(settings, RaySettings(address=ray_cluster, batch_size=8))

            async def scenario() -> tuple[list[str], Any]:
                asks = [asyncio.ensure_future(backend.complete(ask(t))) for t in ("slow", "a", "b")]
                try:
                    done, _ = await asyncio.wait(asks[1:], timeout=300)  # a hang guard
                    assert len(done) == 2 and not asks[0].done()
                    sink = backend._replies.actor
                    ray.kill(sink)
                    server.release()
                    held = await asyncio.wait_for(asks[0], 300)
                    later = await asyncio.wait_for(backend.complete(ask("c")), 300)
                    return [held.text, later.text], sink
                finally:
                    await asyncio.wait_for(backend.aclose(), 60)

            texts, sink = asyncio.run(scenario())
        drainer = backend._replies.thread
        assert all(texts) and drainer is not None and not drainer.is_alive()

        with FakeServer() as server:  # a sink that lives until aclose, which ends it
            settings = BackendSettings(base_urls=[server.base_url])
            backend = RayBackend(settings, RaySettings(address=ray_cluster))

            async def one() -> Any:
                try:
                    await asyncio.wait_for(backend.complete(ask("d")), 300)
                    return backend._replies.actor
                finally:
                    await asyncio.wait_for(backend.aclose(), 60)

            sink = asyncio.run(one())
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(sink.take.remote(0), timeout=60)
    finally:
        ray.shutdown()


def journal_lines(out: Path) -> int:
    """Replies in the call journal (a run only appends to it); a torn last line not counted."""
    path = out / "calls.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


HELD_SEEDS = [{"instruction": f"Explain topic {i} in two sentences."} for i in range(5)] + [
    {"instruction": "[hold] Describe a lake."}
]


@pytest.mark.slow
@needs_ray
def test_a_reply_is_journaled_as_it_arrives_not_when_its_batch_ends(
    ray_cluster: str, tmp_path: Path
) -> None:
    """The server answers every request but one, the last of the [hold] lineage, which waits
    in one stage batch with the other lineages' answered ones (--ray-batch-size above
    --concurrency). Ray yields the batch only once that row is done, yet every answered reply
    must reach the journal: the driver, killed then, pays again only for the held request."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", HELD_SEEDS)
    seed_texts = {row["instruction"] for row in HELD_SEEDS}
    options = ("--generations", "1", "--concurrency", str(len(HELD_SEEDS)), "--seed", "3")
    # No timeout while the test waits: a held request that timed out would end its batch.
    through_ray = (*options, "--engine", "ray", "--ray-batch-size", "16", "--timeout", "3600",
                   "--ray-address", ray_cluster)  # fmt: skip
    env = os.environ | RAY_ENV
    with FakeServer() as server:
        straight = tmp_path / "straight"
        done = subprocess.run(run_command(server, seeds, straight, *options), env=env)
        assert done.returncode == 0
        straight_calls = len(server.requests)

    def held(body: dict[str, Any]) -> bool:  # the lineage's last request: its answer
        marked = "[hold]" in json.dumps(body["messages"])
        return marked and kind_or_seed_answer(body, seed_texts) == "answer"

    out = tmp_path / "killed"
    with FakeServer(hold=held) as server:
        process = subprocess.Popen(run_command(server, seeds, out, *through_ray), env=env)

        def all_but_the_held_journaled() -> bool:
            sent = len(server.requests) == straight_calls and server.held == 1
            return sent and journal_lines(out) == straight_calls - 1

        try:
            # Every request is out then and nothing else is to come: the state is still.
            server.wait_until(
                lambda: all_but_the_held_journaled() or process.poll() is not None, limit=180
            )
        except TimeoutError:
            pass  # what was not journaled is told below
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
        journaled, answered = journal_lines(out), len(server.requests) - server.held
        assert server.held == 1 and journaled == answered == straight_calls - 1, (
            f"{journaled} of the {answered} answered replies journaled, {server.held} held"
        )
        sent = len(server.requests)
        server.release()

    with FakeServer() as server:
        resumed = subprocess.run(run_command(server, seeds, out, *through_ray), env=env)
        assert resumed.returncode == 0
        paid_again = list(server.requests)
    assert sent + len(paid_again) - straight_calls == 1
    assert [held(body) for body in paid_again] == [True]  # the held request, and nothing else
    assert run_content(out) == run_content(straight)
    assert_valid_run(out)


def stage_workers(head: int) -> list[int]:
    """The pids of the HTTP stage's workers (`ray::MapWorker(...)`) under the Ray head `head`."""
    listing = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True)
    parent, command = {}, {}
    for line in listing.stdout.splitlines():
        pid, ppid, args = (line.split(None, 2) + [""])[:3]
        parent[int(pid)], command[int(pid)] = int(ppid), args

    def under_head(pid: int) -> bool:
        while pid > 1 and pid != head:
            pid = parent.get(pid, 1)
        return pid == head

    return [pid for pid, args in command.items() if args.startswith("ray::Map") and under_head(pid)]


@pytest.mark.slow
@needs_ray
def test_a_stage_worker_that_dies_pays_again_for_no_journaled_reply(
    ray_cluster: str, tmp_path: Path
) -> None:
    """kill -9 of the HTTP stage's worker while it holds one request and the rest of its batch
    is answered and journaled. Ray Data would restart the worker and run the whole batch again,
    paying again for every answered row (found by attack28c); with no restart the wave fails,
    and evol asks again only for the held request."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", HELD_SEEDS)
    seed_texts = {row["instruction"] for row in HELD_SEEDS}
    options = ("--generations", "1", "--concurrency", "16", "--seed", "3")
    through_ray = (*options, "--engine", "ray", "--ray-batch-size", "64", "--timeout", "3600",
                   "--max-retries", "3", "--ray-address", ray_cluster)  # fmt: skip

    def marked(body: dict[str, Any]) -> bool:
        return "[hold]" in json.dumps(body["messages"])

    def held(body: dict[str, Any]) -> bool:  # the [hold] lineage's rewrite
        return kind_of(body) == "evolve" and marked(body)

    with FakeServer() as server:  # the same run, live: how many calls wait for the held one
        done = subprocess.run(run_command(server, seeds, tmp_path / "live", *options))
        assert done.returncode == 0
        waiting = [
            body
            for body in server.requests
            if marked(body) and kind_or_seed_answer(body, seed_texts) in ("answer", "judge")
        ]
        still = len(server.requests) - len(waiting)  # calls out once all else is done

    out = tmp_path / "run"
    with FakeServer(hold=held) as server:
        process = subprocess.Popen(
            run_command(server, seeds, out, *through_ray),
            env=os.environ | RAY_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip
        try:
            # Every call but the held one and those that wait for it is answered and
            # journaled: nothing else is to come, the state is still.
            server.wait_until(
                lambda: (
                    process.poll() is not None
                    or (
                        server.held == 1
                        and len(server.requests) == still
                        and journal_lines(out) == still - 1
                    )
                ),
                limit=300,
            )
            assert process.poll() is None, "the run ended before the kill"
            workers = stage_workers(HEAD_PIDS[ray_cluster])
            assert workers, "no HTTP stage worker found"
            answered = [
                json.dumps(body, sort_keys=True)
                for body, finished in zip(server.requests, server.finishes, strict=True)
                if finished is not None
            ]
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            server.release()
            _, stderr = process.communicate(timeout=400)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        sent = [json.dumps(body, sort_keys=True) for body in server.requests]
    assert process.returncode == 0, stderr[-3000:]
    paid_twice = [body for body in answered if sent.count(body) > 1]
    assert paid_twice == [], f"{len(paid_twice)} of {len(answered)} answered rows sent again"
    assert_valid_run(out)


@pytest.mark.slow
@needs_ray
@needs_model
def test_real_model_behind_llama_cpp_server_through_ray(
    ray_cluster: str,
    llama_server: str,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SMALL_SEEDS[:3]), tmp_path / "run"
    command = [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--generations", "1",
        "--base-url", llama_server, "--max-tokens", "64", "--temperature", "0.7",
        "--concurrency", "4", "--json", *RAY_OPTIONS, "--ray-address", ray_cluster,
    ]  # fmt: skip
    result = subprocess.run(
        command, env=os.environ | RAY_ENV, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    manifest = assert_valid_run(out)
    assert manifest["config"]["engine"] == "ray" and summary["failed"] == []
    gen0 = read_jsonl(out / "gen_0.jsonl")
    failed_seeds = [r for r in read_jsonl(out / "eliminated.jsonl") if r["generation"] == 0]
    assert sorted(r["id"] for r in gen0 + failed_seeds) == ["s1", "s2", "s3"]
    assert summary["usage"]["evolve"]["completion_tokens"] > 0
    # The judge's json_schema is refused by llama-cpp-python's server and asked again as
    # json_object, row by row, as the live backend does.
    read = manifest["judging"]["replies_read_as"].get("judge", {})
    assert "prose" not in read
