"""The HTTP/1.1 client of the `openai` backend: keep-alive connections on asyncio, parsed by httptools.

An LLM call is one small JSON POST, and a run makes hundreds of thousands of them. aiohttp's
general-purpose client (cookies, redirects, tracing, middlewares) spends about 0.19 ms of CPU
on each; this one does only what a JSON API needs and spends about 0.06 ms:

- plain HTTP and TLS (the system's trusted certificates, as the SDK uses);
- bodies by Content-Length, chunked, or up to the close; gzip and deflate are undone;
- a pool of idle connections. A GET whose reused connection turns out to have been closed by
  the server before it answered is sent again once on a new one, as aiohttp does; a POST is
  not (the server may have processed it): it fails, and the engine's retry policy counts it.

The HTTP parsing itself is llhttp's, through httptools. Proxies are not handled here: when the
environment names one for a URL, `connect` returns aiohttp's client instead.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit

import httptools

from evol import __version__


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class ConnectionFailed(Exception):
    """The request could not be sent or no whole response came back."""


class JsonClient(Protocol):
    """What the openai backend needs from HTTP."""

    async def request(self, method: str, path: str, body: bytes | None) -> HttpResponse: ...

    async def close(self) -> None: ...


def connect(base_url: str, headers: Mapping[str, str]) -> JsonClient:
    """A client for `base_url` (scheme://host[:port][/prefix]) sending `headers` every time."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http:// or https:// URL")
    proxies = urllib.request.getproxies()
    if parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname):
        return AiohttpClient(base_url, headers)
    return HttpClient(base_url, headers)


_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


class _NoResponse(ConnectionFailed):
    """The connection closed before the first byte of a response."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[HttpResponse] | None = None
        self._reset()

    def _reset(self) -> None:
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._started = False
        self._headers_done = False
        self._complete = False
        self._keep_alive = False

    async def send(self, request: bytes) -> HttpResponse:
        assert self.transport is not None
        self._reset()
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self._waiter
        finally:
            self._waiter = None

    @property
    def reusable(self) -> bool:
        return not self.closed and self._complete and self._keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._finish(error=ConnectionFailed(f"malformed HTTP response ({error})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        runs_until_close = (
            self._headers_done
            and "content-length" not in self._headers
            and "chunked" not in self._headers.get("transfer-encoding", "")
        )
        if runs_until_close:
            self._complete = True
            self._finish()
            return
        why = f" ({exc})" if exc else ""
        error = ConnectionFailed if self._started else _NoResponse
        self._finish(error=error(f"the server closed the connection{why}"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()  # reads False once it has reset
        self._finish()

    def _finish(self, error: Exception | None = None) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if error is not None:
            waiter.set_exception(error)
            return
        try:
            body = _decoded(b"".join(self._body), self._headers.get("content-encoding", ""))
        except (zlib.error, ValueError) as problem:
            waiter.set_exception(ConnectionFailed(f"undecodable body ({problem})"))
            return
        waiter.set_result(HttpResponse(self._parser.get_status_code(), self._headers, body))


def _decoded(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompress(body, wbits=47)  # 47: gzip or zlib header, detected
    raise ValueError(f"content-encoding {encoding!r}")


class HttpClient:
    """Requests to one server over a pool of keep-alive connections."""

    def __init__(self, base_url: str, headers: Mapping[str, str]):
        parts = urlsplit(base_url)
        self.host = parts.hostname or ""
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.prefix = parts.path.rstrip("/")
        # A query in the base URL goes on every request (Azure's ?api-version=...).
        self.query = f"?{parts.query}" if parts.query else ""
        default_port = self.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        all_headers = {
            "Host": host if default_port else f"{host}:{self.port}",
            "User-Agent": f"evol/{__version__}",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            **headers,
        }
        if parts.username is not None and "Authorization" not in all_headers:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            all_headers["Authorization"] = (
                "Basic " + base64.b64encode(credentials.encode()).decode()
            )
        self._head = "".join(f"{k}: {v}\r\n" for k, v in all_headers.items()).encode("latin-1")
        self._ssl = ssl.create_default_context() if self.tls else None
        self._idle: list[_Connection] = []

    async def request(self, method: str, path: str, body: bytes | None) -> HttpResponse:
        body = body or b""
        message = (
            f"{method} {self.prefix}{path}{self.query} HTTP/1.1\r\n".encode("latin-1")
            + self._head
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        resend = method in _IDEMPOTENT
        while True:
            connection, reused = await self._take()
            try:
                response = await connection.send(message)
            except _NoResponse:
                connection.close()
                if reused and resend:
                    resend = False  # closed while idle, most likely: once more, on a new one
                    continue
                raise  # a POST may have been processed: the engine's retry decides
            except BaseException:  # a timeout or cancellation leaves it mid-response
                connection.close()
                raise
            if connection.reusable:
                self._idle.append(connection)
            else:
                connection.close()
            return response

    async def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    async def _take(self) -> tuple[_Connection, bool]:
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed:  # the server's close of an idle one is seen here
                return connection, True
        loop = asyncio.get_running_loop()
        try:
            _transport, connection = await loop.create_connection(
                _Connection,
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self.host if self.tls else None,
            )
        except ssl.SSLError as error:
            raise ConnectionFailed(f"TLS failed: {error.reason or error}") from None
        except OSError as error:
            raise ConnectionFailed(error.strerror or str(error)) from None
        return connection, False


class AiohttpClient:
    """aiohttp's client, for what HttpClient leaves out: proxies from the environment."""

    def __init__(self, base_url: str, headers: Mapping[str, str]):
        parts = urlsplit(base_url)
        self.base_url = parts._replace(query="").geturl().rstrip("/")
        self.query = f"?{parts.query}" if parts.query else ""
        self.headers = dict(headers)
        self._session = None

    async def request(self, method: str, path: str, body: bytes | None) -> HttpResponse:
        import aiohttp

        if self._session is None:  # made here, inside the running event loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), headers=self.headers, trust_env=True
            )
        try:
            url = self.base_url + path + self.query
            async with self._session.request(method, url, data=body) as reply:
                raw = await reply.read()
                headers = {name.lower(): value for name, value in reply.headers.items()}
                return HttpResponse(reply.status, headers, raw)
        except aiohttp.ClientError as error:
            raise ConnectionFailed(str(error)) from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
