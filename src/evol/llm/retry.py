"""The one retry policy: transient failures back off exponentially with jitter.

A server's Retry-After is honoured up to `max_wait` (--retry-max-wait): a server that asks for
a day, forever, or a date in 2100 gets `max_wait`. Anything that is not a
`TransientBackendError` is not retried. The SDK's own retries are switched off so that the two
never multiply.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from evol.errors import TransientBackendError

if TYPE_CHECKING:
    from tenacity import RetryCallState

T = TypeVar("T")


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    max_wait: float,
    on_retry: Callable[[TransientBackendError], None] | None = None,
) -> T:
    """Run `call`, retrying transient failures up to `max_retries` times."""
    # Most calls succeed at once, and tenacity's controller costs more CPU than the request
    # itself: make the first attempt bare, and hand a failure to the policy (tenacity is
    # imported then: a run whose calls all succeed never loads it).
    try:
        return await call()
    except TransientBackendError as error:
        if max_retries == 0:
            raise
        if on_retry:
            on_retry(error)
        first_wait = (
            error.retry_after
            if error.retry_after is not None
            else random.uniform(0, min(0.5, max_wait))
        )
        await asyncio.sleep(_bounded(first_wait, max_wait))
    from tenacity import (
        AsyncRetrying,
        retry_if_exception_type,
        stop_after_attempt,
        wait_random_exponential,
    )

    backoff = wait_random_exponential(multiplier=0.5, max=max_wait)

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return _bounded(retry_after, max_wait)
        return backoff(state)

    def before_sleep(state: RetryCallState) -> None:
        if (
            on_retry
            and state.outcome
            and isinstance(error := state.outcome.exception(), TransientBackendError)
        ):
            on_retry(error)

    async def attempt() -> T:
        # A coroutine function of our own: tenacity awaits only those, and would hand back
        # the coroutine of a plain callable (a lambda) unawaited.
        return await call()

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(TransientBackendError),
        stop=stop_after_attempt(max_retries),
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retrying(attempt)


def _bounded(seconds: float, max_wait: float) -> float:
    """`seconds` within [0, max_wait]; NaN counts as no wait."""
    return min(max(seconds, 0.0), max_wait) if seconds == seconds else 0.0
