"""How fast a run may call its LLM: concurrency that adapts to 429s, and per-minute budgets.

`AdaptiveConcurrency` bounds the requests in flight. It starts at `--concurrency`, halves when
a server answers 429 (once per burst: a 429 for a request sent before the last cut is the same
congestion, already acted on) and grows back by a fixed step per round trip, up to the ceiling.

`RequestBudget` holds the `--rpm` and `--tpm` token buckets. A request takes its estimated
tokens before it is sent (prompt characters / 4, plus `max_tokens` or the completions seen so
far); once the server reports the real usage the difference is settled, so the bucket tracks
what the provider counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from evol.llm.protocol import Message

# Additive increase: the ceiling / RECOVERY_ROUND_TRIPS per round trip, so a run recovers from
# a cut in tens of round trips, not hundreds (classic AIMD adds 1 per round trip).
RECOVERY_ROUND_TRIPS = 32
CHARS_PER_TOKEN = 4
# Providers enforce a per-minute limit over short windows (OpenAI: "60,000 RPM may be enforced
# as 1,000 requests per second"), so a bucket holds only a fifth of a second's worth.
BURST_S = 0.2
# The completion size assumed before any reply has told us better (and max_tokens is unset).
FIRST_COMPLETION_GUESS = 256


class AdaptiveConcurrency:
    """An async context manager admitting at most `limit` requests at once; AIMD on 429."""

    def __init__(self, ceiling: int):
        self.ceiling = ceiling
        self.limit = float(ceiling)
        self.in_flight = 0
        self.cuts = 0
        self.lowest = ceiling
        self._step = max(1.0, ceiling / RECOVERY_ROUND_TRIPS)
        self._last_cut = float("-inf")
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> float:
        """Wait for a slot; returns when the request was admitted (pass it to `rate_limited`)."""
        if self.in_flight < int(self.limit) and not self._waiters:
            self.in_flight += 1
            return time.monotonic()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # `_wake` counted this request in `in_flight` before waking it
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.in_flight -= 1  # handed a slot it will not use
                self._wake()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        return time.monotonic()

    async def __aexit__(self, *_exc: object) -> None:
        self.in_flight -= 1
        self._wake()

    def succeeded(self) -> None:
        """A reply came back: grow by one step per round trip (step / limit per reply)."""
        if self.limit < self.ceiling:
            self.limit = min(float(self.ceiling), self.limit + self._step / self.limit)
            self._wake()

    def rate_limited(self, sent_at: float) -> None:
        """A 429 for a request admitted at `sent_at`: halve, unless this burst was already cut."""
        if sent_at <= self._last_cut:
            return
        self._last_cut = time.monotonic()
        self.limit = max(1.0, self.limit / 2)
        self.cuts += 1
        self.lowest = min(self.lowest, int(self.limit))

    def _wake(self) -> None:
        while self._waiters and self.in_flight < int(self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


class TokenBucket:
    """`per_minute` units a minute, refilled continuously, holding at most BURST_S worth.

    A take may drive the level below zero (one large request still goes); the next one waits
    until the debt is paid back. Takers queue in order.
    """

    def __init__(self, per_minute: float):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * BURST_S)
        self.level = self.capacity
        self._updated = time.monotonic()
        self._queue = asyncio.Lock()

    async def take(self, amount: float) -> None:
        async with self._queue:
            need = min(amount, self.capacity)
            while True:
                self._refill()
                if self.level >= need:
                    break
                await asyncio.sleep((need - self.level) / self.rate)
            self.level -= amount

    def give_back(self, amount: float) -> None:
        """Correct an estimate: positive returns unused units, negative takes more."""
        self._refill()
        self.level = min(self.capacity, self.level + amount)

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._updated) * self.rate)
        self._updated = now


class RequestBudget:
    """The --rpm and --tpm caps of a run; either may be None (no cap)."""

    def __init__(self, rpm: float | None, tpm: float | None):
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None
        self._completion_tokens = 0
        self._completions = 0

    def estimate(
        self, messages: list[Message], max_tokens: int | None = None, choices: int = 1
    ) -> int:
        """Tokens a request will cost, before it is sent (its role's max_tokens, if set), for
        `choices` answers to it (`n`)."""
        characters = sum(len(message["content"]) for message in messages)
        if max_tokens is not None:
            completion = max_tokens
        elif self._completions:
            completion = round(self._completion_tokens / self._completions)
        else:
            completion = FIRST_COMPLETION_GUESS
        return characters // CHARS_PER_TOKEN + 1 + completion * choices

    async def take(self, estimate: int) -> None:
        if self.requests:
            await self.requests.take(1)
        if self.tokens:
            await self.tokens.take(estimate)

    def settle(
        self, estimate: int, prompt_tokens: int, completion_tokens: int, choices: int = 1
    ) -> None:
        """Replace the estimate with the usage the server reported (when it reported any);
        `completion_tokens` are those of `choices` answers."""
        if completion_tokens:
            self._completion_tokens += completion_tokens
            self._completions += choices
        used = prompt_tokens + completion_tokens
        if self.tokens and used:
            self.tokens.give_back(estimate - used)
