"""A raw HTTP server on 127.0.0.1 that misbehaves on purpose, for tests/llm/test_transport_hostile.py.

Unlike tests/support/fake_server.py it writes the bytes of every response itself, so a test can send
what real proxies, gateways and overloaded servers send: interim 1xx responses, bombs, endless
bodies, endless headers, a body that drips, redirects, replies that do not fit the schema.
A `Behaviour` is a coroutine given the parsed request and the writer; it answers however it
likes and returns whether the connection may be reused. Requests are recorded. Every endless
behaviour stops by itself once the client is gone or after a bounded amount of data.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from tests.support.background_server import BackgroundServer
from tests.support.fake_server import Responder


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


Behaviour = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]

_RESPONDER = Responder()


def completion_body(request: Request, **overrides: Any) -> bytes:
    """The fake server's deterministic chat completion for `request`, as JSON bytes."""
    body = request.json
    reply = _RESPONDER(body)
    text = reply[0] if isinstance(reply, tuple) else reply
    reply: dict[str, Any] = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": len(text.split())},
    }
    reply.update(overrides)
    return json.dumps(reply).encode()


def models_body() -> bytes:
    return json.dumps({"object": "list", "data": [{"id": "fake-model"}]}).encode()


def response(status: str, body: bytes, *headers: str) -> bytes:
    """A whole HTTP/1.1 response with a Content-Length."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    if not any(h.lower().startswith("content-type") for h in headers):
        head.append("Content-Type: application/json")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def answer_normally(request: Request, writer: asyncio.StreamWriter) -> bool:
    """What a well-behaved server does: the model list, or a completion."""
    body = models_body() if request.path.endswith("/models") else completion_body(request)
    writer.write(response("200 OK", body))
    return True


class HostileServer(BackgroundServer):
    """Serve `behaviour` on 127.0.0.1 (TLS with `tls`) from a background thread."""

    kind = "hostile"

    def __init__(self, behaviour: Behaviour, *, tls: ssl.SSLContext | None = None):
        self.behaviour = behaviour
        self.tls = tls
        self.requests: list[Request] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/v1"

    def chat_requests(self) -> list[Request]:
        return [r for r in list(self.requests) if r.path.endswith("/chat/completions")]

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=self.tls)
        return self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        """Stop listening; the connections still being served (endless ones too) end after."""
        assert self._server is not None
        self._server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    break
                self.requests.append(request)
                keep_open = await self.behaviour(request, writer)
                await writer.drain()
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


@cache
def certificate(host: str) -> tuple[Path, Path]:
    """A self-signed certificate for `host`, and its key (made once per process)."""
    folder = Path(tempfile.mkdtemp(prefix="evol-tls-"))
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def tls_context(host: str) -> ssl.SSLContext:
    """A server-side TLS context that presents `certificate(host)`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate(host))
    return context
