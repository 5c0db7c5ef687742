"""The one retry policy (evol.llm.retry) on its own: what is retried, and what comes back."""

from __future__ import annotations

import asyncio

import pytest

from evol.errors import BackendError, TransientBackendError
from evol.llm.retry import with_retries


def test_a_plain_callable_returning_a_coroutine_is_awaited_on_every_attempt() -> None:
    """tenacity awaits only coroutine functions: a lambda's coroutine must not come back
    unawaited from a retry."""
    attempts = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientBackendError("a 503")
        return "answer"

    result = asyncio.run(with_retries(lambda: flaky(), max_retries=5, max_wait=0.001))
    assert result == "answer" and len(attempts) == 3


def test_only_transient_errors_are_retried_and_the_count_is_bounded() -> None:
    attempts, retried = [], []

    async def refused() -> str:
        attempts.append(1)
        raise BackendError("a 400")

    with pytest.raises(BackendError):
        asyncio.run(with_retries(refused, max_retries=5, max_wait=0.001))
    assert len(attempts) == 1

    async def down() -> str:
        attempts.append(1)
        raise TransientBackendError("a 503", retry_after=10**9)  # bounded by max_wait

    attempts.clear()
    with pytest.raises(TransientBackendError):
        asyncio.run(with_retries(down, max_retries=3, max_wait=0.001, on_retry=retried.append))
    assert len(attempts) == 4 and len(retried) == 3
