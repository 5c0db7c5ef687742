"""The OpenAI-compatible backend against real HTTP servers on 127.0.0.1 (tests/support/hostile_server.py):
a server's retry hint read in its unit, whatever shape it comes in (Retry-After in seconds or as
an HTTP date, retry-after-ms); a reply read by its schema (the first choice, tokens in range,
log-probabilities of the chosen token and its alternatives); an error body's message, whatever
shape it has; a body capped at exactly --max-response-mb, plain or compressed; the base URL's
query sent with every request. (Issue #22's mutation testing found these unguarded.)
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    GarbledReply,
    RateLimited,
    TransientBackendError,
)
from evol.llm import BackendSettings, Completion, LLMRequest
from evol.llm.openai_compatible import OpenAICompatibleBackend
from tests.support.batch_backend import MODEL, PARAMS, ask
from tests.support.hostile_server import (
    HostileServer,
    Request,
    answer_normally,
    completion_body,
    response,
)

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
