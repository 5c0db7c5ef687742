"""Calling evol's HTTP transport directly: one request's outcome (ask, outcome), a server that
greets every connection with fixed bytes (PlainGreeter), httpx2's own choice of proxy to compare
with (theirs), and an autouse fixture that keeps the environment's proxies out of a test module
that imports it."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest

from evol.llm.transport import HttpResponse, JsonTransport

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies come from the environment: only the ones a test sets."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


async def ask(
    transport: JsonTransport, method: str = "GET", path: str = "/models", body: bytes | None = None
) -> HttpResponse | Exception:
    """One request's outcome, the response or the error it raised; the transport is closed."""
    try:
        return await transport.request(method, path, body)
    except Exception as error:  # the outcome is what the test looks at
        return error
    finally:
        await transport.close()


def outcome(url: str, **options: Any) -> HttpResponse | Exception:
    """One GET /models to `url` through a new transport."""
    headers = options.pop("headers", {})
    options.setdefault("timeout", 20)
    return asyncio.run(ask(JsonTransport(url, headers, **options)))


class PlainGreeter:
    """A TCP server on 127.0.0.1 that answers every connection at once with `greeting` and
    closes it: plain HTTP, the way a plain-HTTP port answers a client that speaks TLS to it, or
    nothing, the way a TLS server hangs up on a client whose versions it does not take."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                connection.sendall(self.greeting)

    def __enter__(self) -> PlainGreeter:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() waiting in the thread
        self.listener.close()
        self.thread.join(10)


def theirs(proxies: dict[str, str], url: str) -> str | None:
    """httpx2's choice, through its (private) choice of transport, as tests/llm/test_transport_hostile.py
    reads it."""
    httpx2_utils = pytest.importorskip("httpx2._utils")
    import httpx2

    original = httpx2_utils.getproxies
    httpx2_utils.getproxies = lambda: dict(proxies)
    try:
        environment = httpx2_utils.get_environment_proxies()
    finally:
        httpx2_utils.getproxies = original
    mounts = {httpx2_utils.URLPattern(key): value for key, value in environment.items()}
    for pattern in sorted(mounts):
        if pattern.matches(httpx2.URL(url)):
            return mounts[pattern]
    return None
