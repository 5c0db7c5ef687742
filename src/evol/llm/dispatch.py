"""Every LLM call of `evol run` and `evol score` goes through one `Dispatcher`.

It owns what a call needs beyond the backend: the journal (a reply paid for before a crash is
replayed, not paid again), the adaptive limit on requests in flight (halved on 429, see
`evol.llm.limits`), the --rpm/--tpm budget, the one retry policy (`evol.llm.retry`), and the
counts of requests, retries and calls cut off. A failure reaches the caller as one of three
outcomes it can act on, whatever the backend:

- `CallFailed`: still failing after every retry; the step is tried again by the next run;
- `CallRefused`: refused for good (a 4xx, a prompt over the context): the step is eliminated;
- `CallWaiting`: the reply waits in a batch for a later process (--batch-no-wait).

An error the user must fix (credentials, a missing model, a redirect, an endpoint that stopped
answering) stops the dispatcher: it is raised to this caller and to every later one, and no
other request is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol

from evol.errors import (
    BackendError,
    Deferred,
    EndpointUnreachable,
    EvolError,
    RateLimited,
    TransientBackendError,
    Unreachable,
)
from evol.llm.limits import AdaptiveConcurrency, RequestBudget
from evol.llm.protocol import ChatBackend, Completion, LLMRequest
from evol.llm.retry import with_retries


@dataclass(frozen=True)
class CallPolicy:
    """How calls are made: concurrency, retries, and the per-minute budgets (None: none)."""

    in_flight: int
    max_retries: int
    retry_max_wait: float
    rpm: float | None = None
    tpm: float | None = None


@dataclass
class CallStats:
    """What the calls of this process did, per role."""

    requests: Counter[str] = field(default_factory=Counter)
    retries: Counter[str] = field(default_factory=Counter)
    cut_off: int = 0  # requests in flight when the work was stopped: the next run sends them again
    deferred: int = 0  # calls whose reply waits in a batch for a later process
    paced: int = 0  # requests the --rpm/--tpm budget let through (0: no budget)


class CallFailed(Exception):
    """The call still failed after every retry (`error` says how)."""

    def __init__(self, error: TransientBackendError):
        super().__init__(str(error))
        self.error = error


class CallRefused(Exception):
    """The server refused the request for good (`error`: a 4xx, the context exceeded...)."""

    def __init__(self, error: BackendError):
        super().__init__(str(error))
        self.error = error


class CallWaiting(Exception):
    """The reply waits in a batch; a later process collects it."""


class ReplyJournal(Protocol):
    """Where replies are kept until their step is recorded (`evol.rundir.journal.CallJournal`)."""

    def recall(self, item_id: str, role: str) -> dict[str, Any] | None: ...

    def remember(self, item_id: str, role: str, reply: dict[str, Any]) -> None: ...


class Dispatcher:
    """Sends requests to one backend under one policy; see the module's docstring."""

    def __init__(
        self,
        backend: ChatBackend,
        policy: CallPolicy,
        *,
        journal: ReplyJournal | None = None,
        stats: CallStats | None = None,
    ):
        self.backend, self.policy, self.journal = backend, policy, journal
        self.stats = stats if stats is not None else CallStats()
        self.slots = AdaptiveConcurrency(policy.in_flight)
        self._budget = RequestBudget(policy.rpm, policy.tpm) if policy.rpm or policy.tpm else None
        self._fatal: EvolError | None = None

    async def complete(self, request: LLMRequest) -> Completion:
        """The reply to `request`: replayed from the journal, or asked for under the policy."""
        if request.item is None or self.journal is None:
            return await self._attempts(request)
        key = request.key or request.role
        if (replayed := self.journal.recall(request.item, key)) is not None:
            return Completion.model_validate(replayed)
        completion = await self._attempts(request)
        reply = completion.__dict__  # its fields, no dump
        if not completion.choices:  # one choice: journalled as before there were several
            reply = reply.copy()
            del reply["choices"]
        self.journal.remember(request.item, key, reply)
        return completion

    def stop(self, error: EvolError) -> EvolError:
        """Send nothing more: every request after this one raises the first such error."""
        self._fatal = self._fatal or error
        return self._fatal

    async def _attempts(self, request: LLMRequest) -> Completion:
        role = request.role

        def on_retry(_error: TransientBackendError) -> None:
            self.stats.retries[role] += 1

        try:
            return await with_retries(
                lambda: self._send(request),
                max_retries=self.policy.max_retries,
                max_wait=self.policy.retry_max_wait,
                on_retry=on_retry,
            )
        except Deferred:
            self.stats.deferred += 1
            raise CallWaiting from None
        except Unreachable as error:  # it answered before, and no retry reached it since
            tries = self.policy.max_retries + 1
            raise self.stop(EndpointUnreachable(f"{error} ({tries} tries)")) from None
        except TransientBackendError as error:
            raise CallFailed(error) from None
        except BackendError as error:
            if error.exit_code != 1:  # credentials, model, redirect, endpoint: the user's to fix
                raise self.stop(error) from None
            raise CallRefused(error) from None

    async def _send(self, request: LLMRequest) -> Completion:
        async with self.slots:
            if self._fatal:  # stopping: send nothing more
                raise self._fatal
            choices = request.params.n or 1
            if budget := self._budget:
                estimate = budget.estimate(request.messages, request.params.max_tokens, choices)
                await budget.take(estimate)
                self.stats.paced += 1
            sent_at = time.monotonic()
            self.stats.requests[request.role] += 1
            try:
                completion = await self.backend.complete(request)
            except RateLimited:
                self.slots.rate_limited(sent_at)
                raise
            except asyncio.CancelledError:
                self.stats.cut_off += 1
                raise
            self.slots.succeeded()
            if budget:
                used = completion.prompt_tokens, completion.completion_tokens
                budget.settle(estimate, *used, len(completion.every_choice()))
            return completion
