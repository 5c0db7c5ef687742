"""Several endpoints of one backend as one: `--base-url` given more than once.

Each request goes to the endpoint with the fewest requests in flight, so a faster server gets
more of them; ties go round the endpoints in turn. An endpoint whose request fails in a way
worth retrying (refused connection, timeout, 5xx, 429) rests: it gets no requests for a while,
doubling on each failure in a row up to LONGEST_REST_S (or as long as its Retry-After says,
within the same bound). After a rest it takes one request at a time until one succeeds. The
engine's retry of the failed request goes to another endpoint, so a server that stops mid-run
costs only the requests it had in flight. An endpoint that cannot be reached at all (a wrong
URL) rests for LONGEST_REST_S at a time; only when none of them can be reached does the run
stop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from evol.errors import EndpointUnreachable, TransientBackendError
from evol.llm.protocol import Capabilities, ChatBackend, Completion, LLMRequest, capabilities_of
from evol.secrets import display_url

FIRST_REST_S = 0.5
LONGEST_REST_S = 30.0
_DOUBLINGS_TO_LONGEST = math.ceil(math.log2(LONGEST_REST_S / FIRST_REST_S))


@dataclass
class Endpoint:
    """One server and what the router knows of it."""

    url: str
    backend: ChatBackend
    in_flight: int = 0
    requests: int = 0
    failures: int = 0
    failures_in_a_row: int = 0
    resting_until: float = 0.0
    unreachable: bool = False  # never answered: no connection could be made to it

    def failed(self, retry_after: float | None) -> None:
        self.failures += 1
        self.failures_in_a_row += 1
        # The exponent stops growing once the rest is at its longest: 2 ** n overflows a float
        # after about a thousand failures in a row.
        doublings = min(self.failures_in_a_row - 1, _DOUBLINGS_TO_LONGEST)
        rest = FIRST_REST_S * 2**doublings if retry_after is None else retry_after
        self.resting_until = time.monotonic() + min(max(rest, 0.0), LONGEST_REST_S)

    @property
    def on_probation(self) -> bool:
        """Back from a rest and not yet answered: one request at a time."""
        return self.failures_in_a_row > 0

    def stats(self) -> dict[str, object]:
        return {"url": display_url(self.url), "requests": self.requests, "failures": self.failures}


class EndpointRouter:
    """A `ChatBackend` that spreads requests over the backends of several endpoints."""

    capabilities = Capabilities(endpoint_stats=True)

    def __init__(self, endpoints: list[tuple[str, ChatBackend]]):
        self.endpoints = [Endpoint(url, backend) for url, backend in endpoints]
        # Several choices per request where every endpoint's backend returns them.
        several = all(capabilities_of(backend).several_choices for _, backend in endpoints)
        self.capabilities = Capabilities(endpoint_stats=True, several_choices=several)
        self._turn = 0  # where the search for the least busy endpoint starts

    async def complete(self, request: LLMRequest) -> Completion:
        endpoint = self._pick()
        endpoint.in_flight += 1
        endpoint.requests += 1
        try:
            completion = await endpoint.backend.complete(request)
        except TransientBackendError as error:
            endpoint.failed(error.retry_after)
            raise
        except EndpointUnreachable as error:
            endpoint.unreachable = True
            endpoint.failed(LONGEST_REST_S)
            if all(other.unreachable for other in self.endpoints):
                raise
            raise TransientBackendError(str(error)) from None
        finally:
            endpoint.in_flight -= 1
        endpoint.failures_in_a_row = 0
        endpoint.unreachable = False
        return completion

    async def default_model(self) -> str:
        """The first answering endpoint's model."""
        last_error: Exception | None = None
        for endpoint in self.endpoints:
            try:
                return await endpoint.backend.default_model()
            except (TransientBackendError, EndpointUnreachable) as error:
                endpoint.failed(getattr(error, "retry_after", None))
                last_error = error
        assert last_error is not None
        raise last_error

    async def aclose(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.backend.aclose()

    def endpoint_stats(self) -> list[dict[str, object]]:
        """Requests and failures per endpoint, for run.json."""
        return [endpoint.stats() for endpoint in self.endpoints]

    def _pick(self) -> Endpoint:
        now = time.monotonic()
        count = len(self.endpoints)
        self._turn = (self._turn + 1) % count
        in_turn = [self.endpoints[(self._turn + i) % count] for i in range(count)]
        ready = [
            endpoint
            for endpoint in in_turn
            if endpoint.resting_until <= now and not (endpoint.on_probation and endpoint.in_flight)
        ]
        if not ready:  # all resting or probing: the one back soonest
            return min(in_turn, key=lambda endpoint: endpoint.resting_until)
        return min(ready, key=lambda endpoint: endpoint.in_flight)
