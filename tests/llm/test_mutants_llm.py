"""Promises of the LLM layer that planted bugs broke unseen (issue #22): each test states one.

- A batch row is paid at most once, a batch the server did create is never paid again, and a
  request is submitted in at most --max-retries + 1 batches, counted across processes
  (tests/support/batch_server.py counts what a user pays for).
- A custom_id names everything a request is: its step, model, messages and options.
- A server's retry hint is read in its unit, whatever shape it comes in (Retry-After in
  seconds or as an HTTP date, retry-after-ms), through real HTTP (tests/support/hostile_server.py).
- A reply is read by its schema: the first choice, tokens in range, log-probabilities of the
  chosen token and its alternatives; an error body's message, whatever shape it has.
- A body is capped at exactly --max-response-mb, plain or compressed.
- The call journal outlives a run that failed: its resume pays only for what failed.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import gzip
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    EndpointUnreachable,
    GarbledReply,
    RateLimited,
    TransientBackendError,
    Unreachable,
)
from evol.llm import BackendSettings, Completion, GenerationParams, LLMRequest
from evol.llm.batch import STATE_FILE, request_line
from evol.llm.openai_compatible import OpenAICompatibleBackend
from evol.llm.transport import JsonTransport
from tests.support.batch_backend import (
    MODEL,
    PARAMS,
    ask,
    ask_all,
    complete_all,
    custom_id,
    events,
    expected,
    make_backend,
    texts_of,
    until,
)
from tests.support.batch_server import BatchServer, Fate, content_of
from tests.support.fake_server import FakeServer, Fault, kind_of
from tests.support.hostile_server import (
    HostileServer,
    Request,
    answer_normally,
    completion_body,
    response,
)
from tests.support.runs import read_jsonl, run_args, write_seeds

KEY = "sk-test-MUTANTS-0123456789abcdef"


# -- the batch backend: what is paid, and how often ------------------------------------------


# These tests submit a batch 0.02 s after its last request (the batch tests wait 0.05 s).
batch_backend = functools.partial(make_backend, quiet_period=0.02)
one_process = functools.partial(ask_all, quiet_period=0.02)


def intent(texts: list[str], token: str = "0" * 32) -> dict[str, Any]:
    return {
        "event": "intent",
        "token": token,
        "model": MODEL,
        "input_file_id": "file-never-used",
        "custom_ids": [custom_id(text) for text in texts],
        "at": 0,
    }


def fails_first(text_marker: str) -> Callable[[dict[str, Any], int], str]:
    """A row fate: rows whose question holds the marker fail (HTTP 500) the first time."""
    return lambda line, times: (
        "error:500" if text_marker in content_of(line) and not times else "ok"
    )


def test_a_batch_given_up_before_it_was_made_is_not_counted_against_the_retries(tmp_path) -> None:
    """batches.jsonl says a batch was given up (the server never made it): its requests were
    never paid, so with --max-retries 0 they still get their one submission."""
    lines = [intent(["a", "b"]), {"event": "abandoned", "token": "0" * 32}]
    (tmp_path / STATE_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    with BatchServer() as server:
        replies = one_process(server, tmp_path, ["a", "b"], max_retries=0)
    assert texts_of(replies) == [expected("a"), expected("b")]
    assert server.submitted == {custom_id("a"): 1, custom_id("b"): 1}


def test_an_intent_the_server_never_saw_leaves_every_retry_to_its_requests(tmp_path) -> None:
    """An intent with no batch behind it is given up and its requests submitted anew: that
    first real submission is the first one counted, so a failed row still gets its retry."""
    (tmp_path / STATE_FILE).write_text(json.dumps(intent(["a [flaky]", "b"])) + "\n")
    with BatchServer(row_fate=fails_first("[flaky]")) as server:
        replies = one_process(server, tmp_path, ["a [flaky]", "b"], retries=1, max_retries=1)
    assert texts_of(replies) == [expected("a [flaky]"), expected("b")]
    assert server.submitted == {custom_id("a [flaky]"): 2, custom_id("b"): 1}
    assert set(server.answered.values()) == {1}


def test_a_request_is_submitted_in_at_most_max_retries_plus_one_batches(tmp_path) -> None:
    """In one process too: the engine may ask more often, the backend submits no more."""
    doomed = lambda line, _times: "error:500" if "[doomed]" in content_of(line) else "ok"  # noqa: E731
    with BatchServer(row_fate=doomed) as server:
        fine, lost = one_process(
            server, tmp_path, ["fine", "lost [doomed]"], retries=4, max_retries=1
        )
    assert isinstance(fine, Completion)
    assert isinstance(lost, TransientBackendError) and "raise --max-retries" in str(lost)
    assert "in the 2 batches" in str(lost)
    assert server.submitted[custom_id("lost [doomed]")] == 2


def test_submissions_are_counted_across_processes(tmp_path) -> None:
    """One submission in a first process, then a process that may retry four times: two more
    at most with --max-retries 2."""
    doomed = lambda line, _times: "error:500" if "[doomed]" in content_of(line) else "ok"  # noqa: E731
    with BatchServer(row_fate=doomed) as server:
        (first,) = one_process(server, tmp_path, ["q [doomed]"], max_retries=2)
        (second,) = one_process(server, tmp_path, ["q [doomed]"], retries=4, max_retries=2)
    assert isinstance(first, TransientBackendError) and isinstance(second, TransientBackendError)
    assert "in the 3 batches" in str(second)
    assert server.submitted[custom_id("q [doomed]")] == 3


def test_a_request_waiting_in_a_running_batch_is_not_refused_by_the_count(tmp_path) -> None:
    """With --max-retries 0 a restarted process waits for the batch that holds its request:
    that one submission is not a reason to refuse it."""
    with BatchServer(hold=True) as server:

        async def main() -> list[Completion | BaseException]:
            first = batch_backend(server, tmp_path, max_retries=0)
            asked = asyncio.ensure_future(complete_all(first, ["a", "b"]))
            await until(lambda: "created" in events(tmp_path))
            await first.aclose()  # the process ends with its batch in progress
            asked.cancel()
            again = batch_backend(server, tmp_path, max_retries=0)
            try:
                waiting = asyncio.ensure_future(complete_all(again, ["a", "b"]))
                await until(lambda: server.requests.count("GET /v1/batches/batch_1") >= 2)
                server.release()
                return await waiting
            finally:
                await again.aclose()

        replies = asyncio.run(main())
    assert texts_of(replies) == [expected("a"), expected("b")]
    assert server.batch_sizes() == [2]


def test_a_create_call_whose_answer_was_lost_is_found_not_paid_again(tmp_path) -> None:
    """The server made the batch but its answer was a 500, and no retry is left: the batch may
    exist, so it stays open; the poller finds it by its token and the retry waits for it."""
    with BatchServer(create_faults=["after"]) as server:
        replies = one_process(server, tmp_path, ["a", "b"], retries=1, max_retries=0)
    assert texts_of(replies) == [expected("a"), expected("b")]
    assert server.batch_sizes() == [2]
    assert set(server.submitted.values()) == {1}
    assert events(tmp_path) == ["intent", "created", "ended"]


def test_an_answered_request_asked_again_in_the_same_process_is_not_sent(tmp_path) -> None:
    with BatchServer() as server:

        async def main() -> tuple[list[Any], list[Any]]:
            backend = batch_backend(server, tmp_path)
            try:
                return await complete_all(backend, ["a"]), await complete_all(backend, ["a", "b"])
            finally:
                await backend.aclose()

        first, again = asyncio.run(main())
    assert texts_of(first) + texts_of(again) == [expected("a"), expected("a"), expected("b")]
    assert server.batch_sizes() == [1, 1]  # only "b" went in the second batch
    assert set(server.answered.values()) == {1}


def test_an_error_row_that_echoes_the_key_is_kept_without_it(tmp_path) -> None:
    """A 400 row is the request's answer for good, kept in results.jsonl: the server's words
    in it may hold the key, which is written nowhere."""
    rejected = lambda line, _times: "output:400" if "[rejected]" in content_of(line) else "ok"  # noqa: E731
    echo = lambda line: f"Invalid request for key {KEY}: bad parameter"  # noqa: E731
    with BatchServer(row_fate=rejected, error_text=echo, api_key=KEY) as server:
        refused, fine = one_process(server, tmp_path, ["q [rejected]", "fine"], api_key=KEY)
    assert type(refused) is BackendError and "bad parameter" in str(refused)
    assert KEY not in str(refused) and isinstance(fine, Completion)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


# A process of a batch run: which rows fail the first time they run, how their batch ends,
# what the create call meets, and where the process stops before a second one resumes.
ROW_FATES = st.sampled_from(["ok", "ok", "error:500", "unfinished", "missing", "garbled"])
STOPS = ["never", "create unanswered", "batch in progress"]


@pytest.mark.parametrize("create_fault", [None, "after", "before"])
@pytest.mark.parametrize("stop", STOPS)
@settings(max_examples=3, deadline=None, derandomize=True)
@given(
    fates=st.lists(ROW_FATES, min_size=1, max_size=5),
    ending=st.sampled_from(["completed", "expired", "cancelled"]),
)
def test_a_batch_run_stopped_anywhere_and_resumed_pays_each_row_at_most_once(
    tmp_path_factory, create_fault, stop, fates, ending
) -> None:
    state = tmp_path_factory.mktemp("state")
    texts = [f"question {i}" for i in range(len(fates))]
    fate_of = {custom_id(text): fate for text, fate in zip(texts, fates, strict=True)}

    def row_fate(line: dict[str, Any], times: int) -> str:
        return fate_of[line["custom_id"]] if times == 0 else "ok"

    first_batch = lambda n: Fate(status=ending) if n == 0 else Fate()  # noqa: E731
    server = BatchServer(
        row_fate=row_fate,
        batch_fate=first_batch,
        create_faults=[create_fault] if create_fault else [],
        hold=stop == "batch in progress",
        hold_create=stop == "create unanswered",
    )
    with server:

        async def main() -> list[Completion | BaseException]:
            if stop != "never":
                first = batch_backend(server, state)
                asked = asyncio.ensure_future(complete_all(first, texts, retries=3))
                await until(lambda: bool(server.batches))
                await first.aclose()
                asked.cancel()
                server.release()
            again = batch_backend(server, state)
            try:
                return await complete_all(again, texts, retries=3)
            finally:
                await again.aclose()

        replies = asyncio.run(main())
    assert texts_of(replies) == [expected(text) for text in texts]
    assert set(server.answered.values()) == {1}  # each row paid once
    # In one batch each; a row that got no answer the first time in exactly one more.
    assert server.submitted == {c: 1 if fate == "ok" else 2 for c, fate in fate_of.items()}
    assert sum(server.batch_sizes()) == sum(server.submitted.values())


# -- custom_id --------------------------------------------------------------------------------

REQUESTS = st.tuples(
    st.lists(st.sampled_from(["q", "q ", "Q", "r"]), min_size=1, max_size=2),
    st.sampled_from(["fake-model", "other-model"]),
    st.sampled_from([None, 0.0, 0.5]),
    st.sampled_from([None, 16]),
    st.sampled_from([None, "s1.1/evolve", "s1.2/evolve", "s1.1/answer"]),
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(first=REQUESTS, second=REQUESTS)
def test_a_custom_id_names_the_step_model_messages_and_options(first, second) -> None:
    """Two requests share a row exactly when every part of them is the same."""

    def line(request: tuple[Any, ...]) -> tuple[str, bytes]:
        texts, model, temperature, max_tokens, step = request
        params = GenerationParams(temperature=temperature, max_tokens=max_tokens)
        return request_line([ask(text)[0] for text in texts], model, params, step)

    (first_id, first_line), (second_id, _) = line(first), line(second)
    assert (first_id == second_id) == (first == second)
    assert json.loads(first_line)["custom_id"] == first_id
    assert json.loads(first_line)["body"]["model"] == first[1]


# -- retry hints, through real HTTP -----------------------------------------------------------


def http_date(offset: timedelta) -> str:
    return email.utils.format_datetime(datetime.now(UTC) + offset, usegmt=True)


# (headers the server sends, the seconds the hint means: a number, a (low, high] range, None)
HINTS: dict[str, tuple[tuple[str, ...], Any]] = {
    "seconds": (("Retry-After: 7",), 7.0),
    "fractional seconds": (("Retry-After: 1.5",), 1.5),
    "lower-case name": (("retry-after: 3",), 3.0),
    "milliseconds": (("retry-after-ms: 250",), 0.25),
    "milliseconds, capitalised": (("Retry-After-Ms: 1500",), 1.5),
    "milliseconds before seconds": (("retry-after-ms: 20", "Retry-After: 9"), 0.02),
    "unreadable milliseconds": (("retry-after-ms: soon", "Retry-After: 2"), 2.0),
    "a date an hour ahead": (("Retry-After: {in an hour}",), (3300.0, 3600.0)),
    "a date gone by": (("Retry-After: {an hour ago}",), 0.0),
    "negative": (("Retry-After: -3",), 0.0),
    "negative milliseconds": (("retry-after-ms: -5",), 0.0),
    "infinite": (("Retry-After: inf",), math.inf),
    "not a number": (("Retry-After: nan",), None),
    "words": (("Retry-After: soon",), None),
    "none": ((), None),
}


def hint_headers(headers: tuple[str, ...]) -> tuple[str, ...]:
    """The header lines, with the date placeholders filled in now."""
    dates = {
        "{in an hour}": http_date(timedelta(hours=1)),
        "{an hour ago}": http_date(-timedelta(hours=1)),
    }
    sent = []
    for header in headers:
        name, _, value = header.partition(": ")
        sent.append(f"{name}: {dates.get(value, value)}")
    return tuple(sent)


def openai_backend(url: str, **settings: Any) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(BackendSettings(base_urls=[url], **settings))


async def outcome(url: str, text: str, **settings: Any) -> Completion | BaseException:
    backend = openai_backend(url, **settings)
    try:
        return await backend.complete(LLMRequest(ask(text), MODEL, PARAMS))
    except Exception as error:  # the outcome is what the test looks at
        return error
    finally:
        await backend.aclose()


@pytest.mark.parametrize("status", ["429 Too Many Requests", "503 Service Unavailable"])
@pytest.mark.parametrize("case", sorted(HINTS))
def test_a_retry_hint_is_read_in_its_own_unit(status: str, case: str) -> None:
    headers, seconds = HINTS[case]
    sent = hint_headers(headers)

    async def busy(request: Request, writer: asyncio.StreamWriter) -> bool:
        body = json.dumps({"error": {"message": "busy, try later"}}).encode()
        writer.write(response(status, body, *sent))
        return True

    with HostileServer(busy) as server:
        error = asyncio.run(outcome(server.base_url, "question"))
    assert type(error) is (RateLimited if status.startswith("429") else TransientBackendError)
    assert "busy, try later" in str(error)
    if isinstance(seconds, tuple):
        low, high = seconds
        assert low < error.retry_after <= high
    elif seconds is None:
        assert error.retry_after is None
    else:
        assert error.retry_after == pytest.approx(seconds)


# -- the reply's schema, and what an error body says -------------------------------------------


def chat_reply(request: Request, **overrides: Any) -> bytes:
    return completion_body(request, **overrides)


def choice(content: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
        **extra,
    }


LOGPROBS = {
    "content": [
        {
            "token": "4",
            "logprob": 0,
            "top_logprobs": [{"token": "4", "logprob": 0}, {"token": "5", "logprob": -2.5}],
        },
        {"token": ".", "logprob": -0.25, "top_logprobs": [{"token": "!", "logprob": -3}]},
    ]
}
# Replies a server may send with status 200, by the question that asks for them.
REPLIES: dict[str, dict[str, Any]] = {
    "two choices": {"choices": [choice("the first"), choice("the second")]},
    "no usage": {"usage": None},
    "negative prompt tokens": {"usage": {"prompt_tokens": -1, "completion_tokens": 3}},
    "negative completion tokens": {"usage": {"prompt_tokens": 1, "completion_tokens": -3}},
    "tokens at the limit": {"usage": {"prompt_tokens": 2**53, "completion_tokens": 2**53}},
    "tokens past the limit": {"usage": {"prompt_tokens": 1, "completion_tokens": 2**53 + 1}},
    "logprobs": {"choices": [choice("4.", logprobs=LOGPROBS)]},
    "refusal": {
        "choices": [choice(None) | {"message": {"content": None, "refusal": "I can't help"}}]
    },
    "no content": {"choices": [choice(None)]},
}


def read_as(case: str) -> tuple[type, Any]:
    """What each reply is: (the outcome's type, the text or the token counts it carries)."""
    return {
        "two choices": (Completion, "the first"),
        "no usage": (Completion, (0, 0)),
        "negative prompt tokens": (GarbledReply, "usage.prompt_tokens"),
        "negative completion tokens": (GarbledReply, "usage.completion_tokens"),
        "tokens at the limit": (Completion, (2**53, 2**53)),
        "tokens past the limit": (GarbledReply, "usage.completion_tokens"),
        "logprobs": (Completion, [{"4": 0.0, "5": -2.5}, {".": -0.25, "!": -3.0}]),
        "refusal": (BackendError, "refused the request: I can't help"),
        "no content": (TransientBackendError, "no message content"),
    }[case]


# Error replies, by the question that asks for them: (status line, body).
ERRORS: dict[str, tuple[str, Any]] = {
    "403": ("403 Forbidden", {"error": {"message": "not for you"}}),
    "408": ("408 Request Timeout", {"error": {"message": "too slow"}}),
    "409": ("409 Conflict", {"error": {"message": "busy with another request"}}),
    "425": ("425 Too Early", {"error": {"message": "too early"}}),
    "message at the top": ("400 Bad Request", {"message": "temperature is out of range"}),
    "error as text": ("400 Bad Request", {"error": "temperature is out of range"}),
    "plain text": ("400 Bad Request", "temperature is out of range"),
    "text not in UTF-8": ("400 Bad Request", b"temperature \xff is out of range"),
    "context, capitalised": (
        "400 Bad Request",
        {"error": {"message": "Maximum Context Length is 8 tokens"}},
    ),
    "context size": (
        "400 Bad Request",
        {"error": {"message": "the request exceeds the available context size"}},
    ),
}
ERROR_OUTCOMES = {
    "403": AuthenticationFailed,
    "408": TransientBackendError,
    "409": TransientBackendError,
    "425": TransientBackendError,
    "message at the top": BackendError,
    "error as text": BackendError,
    "plain text": BackendError,
    "text not in UTF-8": BackendError,
    "context, capitalised": ContextLengthExceeded,
    "context size": ContextLengthExceeded,
}


async def scripted_reply(request: Request, writer: asyncio.StreamWriter) -> bool:
    """Answer each question with the reply or error it names."""
    if request.path.endswith("/models"):
        return await answer_normally(request, writer)
    case = request.json["messages"][0]["content"]
    if case in ERRORS:
        status, body = ERRORS[case]
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        raw = body.encode() if isinstance(body, str) else raw
        writer.write(response(status, raw))
    else:
        writer.write(response("200 OK", chat_reply(request, **REPLIES[case])))
    return True


@pytest.fixture(scope="module")
def replies_server():
    with HostileServer(scripted_reply) as server:
        yield server


@pytest.mark.parametrize("case", sorted(REPLIES))
def test_a_reply_is_read_by_its_schema(replies_server: HostileServer, case: str) -> None:
    kind, carried = read_as(case)
    result = asyncio.run(outcome(replies_server.base_url, case))
    assert type(result) is kind, result
    if isinstance(result, Exception):
        assert carried in str(result)
    elif isinstance(carried, tuple):
        assert (result.prompt_tokens, result.completion_tokens) == carried
    elif isinstance(carried, list):
        assert result.text == "4." and result.top_logprobs == carried
    else:
        assert result.text == carried


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_an_error_reply_is_read_by_its_status_and_says_the_servers_words(
    replies_server: HostileServer, case: str
) -> None:
    result = asyncio.run(outcome(replies_server.base_url, case))
    assert type(result) is ERROR_OUTCOMES[case], result
    if ERROR_OUTCOMES[case] is AuthenticationFailed:
        assert "check OPENAI_API_KEY" in str(result)
        return
    status, body = ERRORS[case]
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    words = body if isinstance(body, str) else body.get("message") or body["error"]
    words = words if isinstance(words, str) else words["message"]
    assert words in str(result) and "{" not in str(result)  # the words, not the JSON around them


# -- the body cap, plain and compressed -----------------------------------------------------------


def padded_reply(request: Request, size: int) -> bytes:
    """A chat completion of exactly `size` bytes."""
    body = chat_reply(request, choices=[choice("")])
    return chat_reply(request, choices=[choice("x" * (size - len(body)))])


def capped_server(size: int, *, compressed: bool) -> HostileServer:
    async def behaviour(request: Request, writer: asyncio.StreamWriter) -> bool:
        body = padded_reply(request, size)
        assert len(body) == size
        if compressed:
            writer.write(response("200 OK", gzip.compress(body), "Content-Encoding: gzip"))
        else:
            writer.write(response("200 OK", body))
        return True

    return HostileServer(behaviour)


SIZE = 50_000


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(("cap", "kept"), [(SIZE, True), (SIZE - 1, False)])
def test_a_reply_is_kept_up_to_the_cap_exactly(compressed: bool, cap: int, kept: bool) -> None:
    """The cap counts the bytes as they come out, a gzip body's inflated bytes included."""
    with capped_server(SIZE, compressed=compressed) as server:
        result = asyncio.run(outcome(server.base_url, "question", max_response_bytes=cap))
    if kept:
        assert isinstance(result, Completion) and len(result.text) > SIZE - 300
    else:
        assert type(result) is TransientBackendError and "--max-response-mb" in str(result)


def test_a_small_gzip_body_that_inflates_past_the_cap_is_refused() -> None:
    with capped_server(20 * SIZE, compressed=True) as server:
        result = asyncio.run(outcome(server.base_url, "question", max_response_bytes=SIZE))
    assert type(result) is TransientBackendError and f"over {SIZE:,} bytes" in str(result)


# -- where a request goes, and what an unreachable server means --------------------------------


def test_the_base_urls_query_goes_with_every_request() -> None:
    with HostileServer(answer_normally) as server:
        url = server.base_url + "?api-version=2024-06-01"
        result = asyncio.run(outcome(url, "question"))
        paths = [request.path for request in server.requests]
    assert isinstance(result, Completion)
    assert paths == ["/v1/chat/completions?api-version=2024-06-01"]


def test_a_server_gone_after_answering_is_unreachable_not_misconfigured() -> None:
    """Never reached: --base-url is wrong (EndpointUnreachable). Gone after answering: it
    may be restarting (Unreachable), and the message does not blame --base-url."""

    async def close_after(request: Request, writer: asyncio.StreamWriter) -> bool:
        await answer_normally(request, writer)
        return False

    async def main() -> tuple[int, BaseException, BaseException]:
        with HostileServer(close_after) as server:
            url = server.base_url
            answered_once = JsonTransport(url, {}, timeout=10)
            first = await answered_once.request("GET", "/models", None)
        # The server is gone now, its port closed.
        errors = []
        for transport in (answered_once, JsonTransport(url, {}, timeout=10)):
            try:
                await transport.request("GET", "/models", None)
            except Exception as error:  # what the test looks at
                errors.append(error)
            finally:
                await transport.close()
        return first.status, errors[0], errors[1]

    status, again, never = asyncio.run(main())
    assert status == 200
    assert type(again) is Unreachable and "--base-url" not in str(again)
    assert type(never) is EndpointUnreachable and "check --base-url" in str(never)


# -- the call journal at the end of a run ---------------------------------------------------------

JOURNAL_SEEDS = [
    {"id": "s0", "instruction": "Explain photosynthesis to a child"},
    {"id": "s1", "instruction": "Describe a lighthouse at night [doomed]"},
    {"id": "s2", "instruction": "Compare TCP and UDP"},
]


def doomed_answers(body: dict[str, Any]) -> Fault | None:
    """The answer to s1's rewrite fails every time; everything else is answered."""
    text = body["messages"][-1]["content"]
    if kind_of(body) == "answer" and "[doomed]" in text and "Also consider case" in text:
        return Fault("status", 500)
    return None


def test_a_failed_runs_journal_is_kept_and_its_resume_pays_only_what_failed(evol, tmp_path) -> None:
    """The step whose answer failed had its rewrite paid for: the journal keeps that reply, so
    the resume asks only for the answer (and what follows it), and ends where a run without
    the failure ends; the journal goes once the run is complete."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", JOURNAL_SEEDS)
    options = ("--generations", "1", "--model", MODEL, "--max-retries", "0", "--seed", "5")
    with FakeServer() as server:
        straight = evol(*run_args(server, seeds, tmp_path / "straight", *options))
        assert straight.exit_code == 0, straight.stderr
    out = tmp_path / "run"
    with FakeServer(faults=doomed_answers) as server:
        failed = evol(*run_args(server, seeds, out, *options, "--json"))
        evolved = len(server.requests_for("evolve"))
    assert failed.exit_code == 1, failed.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    journalled = {(entry["item"], entry["role"]) for entry in read_jsonl(out / "calls.jsonl")}
    assert ("s1.1", "evolve") in journalled
    # Failed again: nothing paid twice, and the journal keeps only the step not recorded.
    with FakeServer(faults=doomed_answers) as server:
        assert evol(*run_args(server, seeds, out, *options)).exit_code == 1
        assert [kind_of(body) for body in server.requests] == ["answer"]
    kept = sorted((e["item"], e["role"]) for e in read_jsonl(out / "calls.jsonl"))
    assert kept == [("s1.1", "evolve"), ("s1.1", "judge")]
    with FakeServer() as server:
        resumed = evol(*run_args(server, seeds, out, *options))
        asked = [kind_of(body) for body in server.requests]
    assert resumed.exit_code == 0, resumed.stderr
    assert evolved == len(JOURNAL_SEEDS) and "evolve" not in asked
    assert asked.count("answer") == 1
    assert not (out / "calls.jsonl").exists()
    for name in ("gen_0.jsonl", "gen_1.jsonl", "eliminated.jsonl", "dataset.jsonl"):
        assert read_jsonl(out / name) == read_jsonl(tmp_path / "straight" / name), name
