"""An output row of the HTTP stage (an envelope) read as the openai backend reads that reply
(evol.llm.ray.rows), checked without a cluster."""

from __future__ import annotations

import json
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
)
from evol.llm.protocol import Completion
from evol.llm.ray import session
from evol.llm.ray.rows import envelope_outcome
from tests.support.ray_cluster import (
    READER,
)

REPLY = {
    "choices": [{"message": {"content": "an answer"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 3},
}


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
