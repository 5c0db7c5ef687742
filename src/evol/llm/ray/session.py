"""What runs on Ray's workers: the HTTP stage's session (`EnvelopeSession`), the sink its
replies go to as they arrive (`ReplySink`), and the preprocess and postprocess functions of a
wave's rows.

Ray Data LLM's HTTP stage sends a batch's requests one after the other, retries 429/5xx itself,
and raises on a garbled body, which aborts the whole dataset (ray #59194). The session it is
given (`HttpRequestProcessorConfig.session_factory`) fixes all three: `post()` starts each
request at once, sends evol's own request body byte for byte, reads at most `cap` bytes of the
reply, and hands the stage an envelope, `{"status", "body", "error", "retry_after",
"location"}`, that is always a 200 JSON object, so the stage never retries and never raises.
The driver reads each envelope like a live reply (`evol.llm.ray.rows`).

Ray hands the driver a stage batch's rows only once the whole batch is done, so a reply that
waits there with a slow row would be lost, and paid again, if the driver were killed. The
session therefore also sends each envelope, with its row's key, to a `ReplySink` actor the
moment it has it; the driver takes them from there as they come. The batch's rows still
follow, and answer whatever the sink did not (a message lost, the sink gone).

This module imports only aiohttp and the standard library: it is pickled by value onto the
workers, so a cluster need not have evol installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Generator
from typing import Any

import aiohttp

# The payload key that carries evol's request body, a JSON string. A string, not an object:
# rows pass through Arrow, which gives every row the union of all rows' keys (a judge's
# `response_format` would reach an evolve call as null).
BODY_KEY = "evol_body"
# The payload key that carries the row's key, for the reply's trip through the sink.
ROW_KEY = "evol_key"
# The reply headers the driver needs to read a reply as evol's live backend does.
_HEADERS = ("retry-after", "retry-after-ms", "location")


def envelope(
    status: int, body: str | None = None, error: str | None = None, **headers: str | None
) -> dict[str, Any]:
    """What the stage gets for one request; every key always present (Arrow again)."""
    return {
        "status": status,
        "body": body,
        "error": error,
        "retry_after": headers.get("retry-after"),
        "retry_after_ms": headers.get("retry-after-ms"),
        "location": headers.get("location"),
    }


class _Reply:
    """An envelope posing as the stage's aiohttp response: status 200, the envelope as JSON."""

    status = 200
    reason = "OK"

    def __init__(self, payload: dict[str, Any]):
        self._payload = payload

    async def json(self) -> dict[str, Any]:
        return self._payload

    async def __aenter__(self) -> _Reply:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None


class _Started:
    """A request already under way: the stage awaits it when it gets to it."""

    def __init__(self, task: asyncio.Task[_Reply]):
        self.task = task

    def __await__(self) -> Generator[Any, None, _Reply]:
        return self.task.__await__()


class EnvelopeSession:
    """The stage's `session_factory`: an aiohttp session whose `post` never raises, and
    which sends each envelope to `sink` (a `ReplySink` actor's handle) as soon as it has it."""

    def __init__(
        self,
        *,
        cap: int,
        timeout: float,
        connections: int,
        sink: Any = None,
        sink_wait: float = 10.0,
    ):
        self.cap, self.timeout, self.connections, self.sink = cap, timeout, connections, sink
        self.sink_wait = sink_wait  # seconds a batch waits for the sink's answer, then sends
        self._session: aiohttp.ClientSession | None = None
        self._outbox: list[dict[str, Any]] = []
        self._asking: dict[str, asyncio.Future[bool]] = {}

    def __call__(self) -> EnvelopeSession:
        """A fresh session for one batch (the stage calls its factory once a batch)."""
        return EnvelopeSession(
            cap=self.cap,
            timeout=self.timeout,
            connections=self.connections,
            sink=self.sink,
            sink_wait=self.sink_wait,
        )

    async def __aenter__(self) -> EnvelopeSession:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=self.connections),
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._flush()
        if self._session is not None:
            await self._session.close()

    def post(self, url: str, *, headers: dict[str, str], data: str) -> Awaitable[_Reply]:
        """Start the request now; what the stage awaits later is its envelope."""
        return _Started(asyncio.ensure_future(self._send(url, headers, data)))

    async def _send(self, url: str, headers: dict[str, str], data: str) -> _Reply:
        try:
            payload = json.loads(data)
            body, key = payload[BODY_KEY].encode(), payload.get(ROW_KEY)
        except Exception as error:  # noqa: BLE001 (not evol's payload: the row's failure only)
            return _Reply(envelope(0, error=f"{type(error).__name__}: {error}"))
        if key is not None and await self._delivered(key):
            return _Reply(envelope(0, error="not sent: the driver has this reply already"))
        reply = await self._envelope(url, headers, body)
        if self.sink is not None and key is not None:
            self._forward({"key": key, **reply})
        return _Reply(reply)

    async def _delivered(self, key: str) -> bool:
        """Whether the sink already had `key`'s reply. Ray runs a dead stage worker's whole
        batch again on a new one; a row whose reply reached the driver is not paid again.
        The rows posted in one turn of the event loop (a batch) ask in one message."""
        if self.sink is None:
            return False
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()
        self._asking[key] = answer
        if len(self._asking) == 1:
            loop.call_soon(lambda: asyncio.ensure_future(self._ask()))
        return await answer

    async def _ask(self) -> None:
        asking, self._asking = self._asking, {}
        try:
            asked = self.sink.holding.remote(list(asking))
            held = set(await asyncio.wait_for(asked, self.sink_wait))
        except Exception:  # noqa: BLE001 (the sink gone or stuck: send, as without one)
            held = set()
        for key, answer in asking.items():
            if not answer.done():
                answer.set_result(key in held)

    def _forward(self, row: dict[str, Any]) -> None:
        """Queue `row` for the sink; the replies that arrive in the same turn of the event
        loop go in one message, sent without waiting for it to land."""
        self._outbox.append(row)
        if len(self._outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        rows, self._outbox = self._outbox, []
        if not rows:
            return
        # A sink that is gone costs only the head start: the batch's rows still follow.
        with contextlib.suppress(Exception):
            self.sink.put.remote(rows)

    async def _envelope(self, url: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        assert self._session is not None
        try:
            async with self._session.post(
                url, headers=headers, data=body, allow_redirects=False
            ) as response:
                found = {name: response.headers.get(name) for name in _HEADERS}
                raw = await self._capped(response.content)
                if raw is None:
                    error = f"a reply over the {self.cap:,}-byte cap (--max-response-mb)"
                    return envelope(response.status, error=error, **found)
                text = raw.decode("utf-8", errors="replace")
                return envelope(response.status, body=text, **found)
        except Exception as error:  # noqa: BLE001 (a timeout, a reset: the row's failure only)
            return envelope(0, error=f"{type(error).__name__}: {error}")

    async def _capped(self, stream: aiohttp.StreamReader) -> bytes | None:
        """The whole body, or None once it passes `cap` bytes. (`stream.read(n)` would give
        only what is buffered so far: a long reply came back cut.)"""
        parts, size = [], 0
        async for chunk in stream.iter_chunked(1 << 16):
            size += len(chunk)
            if size > self.cap:
                return None
            parts.append(chunk)
        return b"".join(parts)


class ReplySink:
    """Replies as the HTTP stage's sessions get them, until the driver takes them. The
    driver makes it an async actor (`ray.remote`). It keeps no reply the driver has taken,
    only the keys of the replies of waves still running (`holding`), until `forget`."""

    # A put can reach the sink after the driver forgot its wave (the dataset's copy of the row
    # answered first): the keys of the last waves forgotten are refused, so none stays for good.
    FORGOTTEN_WAVES = 8

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._keys: set[str] = set()
        self._forgotten: deque[frozenset[str]] = deque(maxlen=self.FORGOTTEN_WAVES)
        self._arrived = asyncio.Event()

    async def put(self, rows: list[dict[str, Any]]) -> None:
        # Each row looked up in each remembered wave: no union of them all on every put.
        rows = [row for row in rows if not any(row["key"] in wave for wave in self._forgotten)]
        if not rows:
            return
        self._rows.extend(rows)
        self._keys.update(row["key"] for row in rows)
        self._arrived.set()

    async def holding(self, keys: list[str]) -> list[str]:
        """Those of `keys` whose replies it had."""
        return [key for key in keys if key in self._keys]

    async def forget(self, keys: list[str]) -> None:
        """A wave ended: Ray runs none of its rows again."""
        self._keys.difference_update(keys)
        self._forgotten.append(frozenset(keys))

    async def take(self, wait: float) -> list[dict[str, Any]]:
        """Every row put since the last take, once there is one or `wait` seconds passed."""
        if not self._rows:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), wait)
        rows, self._rows = self._rows, []
        self._arrived.clear()
        return rows


def to_payload(row: dict[str, Any]) -> dict[str, Any]:
    """The preprocess step: the row's body, and its key, as the stage's payload."""
    return {"payload": {BODY_KEY: row["body"], ROW_KEY: row["key"]}}


def from_reply(row: dict[str, Any]) -> dict[str, Any]:
    """The postprocess step: the row's key and its envelope, nothing of the request."""
    return {"key": row["key"], **row["http_response"]}


def to_vllm(row: dict[str, Any]) -> dict[str, Any]:
    """The preprocess step of the vLLM path: the row's messages and sampling params."""
    return {"messages": json.loads(row["messages"]), "sampling_params": json.loads(row["sampling"])}


def from_vllm(row: dict[str, Any]) -> dict[str, Any]:
    """The postprocess step of the vLLM path: the key and what the stage generated."""
    return {
        "key": row["key"],
        "generated_text": row.get("generated_text"),
        "num_input_tokens": row.get("num_input_tokens"),
        "num_generated_tokens": row.get("num_generated_tokens"),
        "logprobs": row.get("logprobs"),
    }
