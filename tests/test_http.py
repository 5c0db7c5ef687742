"""evol.llm.http against real sockets: what an HTTP server may do, the client must read."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from evol.llm.http import AiohttpClient, ConnectionFailed, HttpClient, HttpResponse, connect

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def answering(response: bytes, heads: list[bytes] | None = None) -> Handler:
    """A handler that reads one request (keeping its head in `heads`), answers and closes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _body = await read_request(reader)
        if heads is not None:
            heads.append(head)
        writer.write(response)
        await writer.drain()
        writer.close()

    return handler


async def with_raw_server(handler: Handler, use: Callable[[str], Awaitable[object]]) -> object:
    """Serve `handler` on 127.0.0.1 and call `use` with the server's base URL."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        return await use(f"http://127.0.0.1:{port}/v1")


def test_connections_are_kept_alive_and_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                _head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    async def use(url: str) -> list[bytes]:
        client = HttpClient(url, {})
        replies = [await client.request("POST", "/x", b"hello %d" % i) for i in range(5)]
        await client.close()
        return [reply.body for reply in replies]

    assert asyncio.run(with_raw_server(handler, use)) == [b"hello %d" % i for i in range(5)]
    assert connections == 1


@pytest.mark.parametrize(
    "response",
    [
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"a":\r\n3\r\n 1}\r\n0\r\n\r\n',
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(gzip.compress(b'{"a": 1}')), gzip.compress(b'{"a": 1}')),
        b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"a": 1}',  # a body that ends at the close
        b'HTTP/1.0 200 OK\r\n\r\n{"a": 1}',
    ],
    ids=["chunked", "gzip", "until-close", "http-1.0"],
)
def test_every_way_of_ending_a_body_is_read(response: bytes) -> None:
    async def use(url: str) -> HttpResponse:
        client = HttpClient(url, {})
        try:
            return await client.request("POST", "/x", b"{}")
        finally:
            await client.close()

    reply = asyncio.run(with_raw_server(answering(response), use))
    assert isinstance(reply, HttpResponse)
    assert (reply.status, reply.body.replace(b" ", b"")) == (200, b'{"a":1}')


def test_a_response_cut_short_is_a_connection_failure() -> None:
    cut_short = answering(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')

    async def use(url: str) -> None:
        client = HttpClient(url, {})
        with pytest.raises(ConnectionFailed, match="closed the connection"):
            await client.request("POST", "/x", b"{}")

    asyncio.run(with_raw_server(cut_short, use))


def test_a_kept_connection_the_server_closed_while_idle_is_replaced_silently() -> None:
    async def scenario() -> list[int]:
        app = web.Application()

        async def ok(_request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        app.router.add_post("/v1/x", ok)
        runner = web.AppRunner(app, keepalive_timeout=0.05)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        client = HttpClient(f"http://127.0.0.1:{port}/v1", {})
        statuses = []
        for _ in range(3):
            statuses.append((await client.request("POST", "/x", b"{}")).status)
            await asyncio.sleep(0.2)  # the server drops the idle connection meanwhile
        await client.close()
        await runner.cleanup()
        return statuses

    assert asyncio.run(scenario()) == [200, 200, 200]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_kept_connection_closed_unanswered_resends_a_get_once_and_fails_a_post(
    method: str,
) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        if connections == 1:
            await read_request(reader)  # the second request on this connection: no answer
        writer.close()

    async def use(url: str) -> list[bytes]:
        client = HttpClient(url, {})
        first = await client.request(method, "/x", None)
        try:
            second = (await client.request(method, "/x", None)).body
        except ConnectionFailed as error:
            second = str(error).encode()
        await client.close()
        return [first.body, second]

    replies = asyncio.run(with_raw_server(handler, use))
    if method == "GET":
        assert replies == [b"ok", b"ok"] and connections == 2
    else:  # it may have been processed: not sent again behind the engine's back
        assert replies == [b"ok", b"the server closed the connection"] and connections == 1


def test_a_refused_connection_is_a_connection_failure() -> None:
    async def use() -> None:
        client = HttpClient("http://127.0.0.1:9/v1", {})
        with pytest.raises(ConnectionFailed):
            await client.request("GET", "/models", None)

    asyncio.run(use())


def test_credentials_in_the_url_become_basic_auth_and_headers_are_sent() -> None:
    seen: list[bytes] = []
    handler = answering(b"HTTP/1.1 204 No Content\r\n\r\n", seen)

    async def use(url: str) -> int:
        client = HttpClient(url.replace("http://", "http://ann:s%40cret@"), {"X-Test": "1"})
        reply = await client.request("GET", "/models", None)
        await client.close()
        return reply.status

    assert asyncio.run(with_raw_server(handler, use)) == 204
    head = seen[0].decode()
    assert head.startswith("GET /v1/models HTTP/1.1\r\n")
    assert "Authorization: Basic YW5uOnNAY3JldA==\r\n" in head  # ann:s@cret
    assert "X-Test: 1\r\n" in head and "Host: 127.0.0.1:" in head


def test_tls_with_the_systems_trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async def scenario() -> tuple[bytes, str]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        async with server:
            untrusted = HttpClient(f"https://localhost:{port}/v1", {})
            with pytest.raises(ConnectionFailed, match="TLS") as refused:
                await untrusted.request("POST", "/x", b"{}")
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read when a client is made
            trusted = HttpClient(f"https://localhost:{port}/v1", {})
            reply = await trusted.request("POST", "/x", b"{}")
            await trusted.close()
            return reply.body, str(refused.value)

    body, refusal = asyncio.run(scenario())
    assert body == b"ok"
    assert "CERTIFICATE_VERIFY_FAILED" in refusal


def test_a_proxy_in_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    proxied: list[bytes] = []
    proxy = answering(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok", proxied
    )

    async def use(proxy_url: str) -> bytes:
        monkeypatch.setenv("HTTP_PROXY", proxy_url.removesuffix("/v1"))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        client = connect("http://llm.internal.example:8000/v1", {})
        assert isinstance(client, AiohttpClient)
        try:
            return (await client.request("POST", "/chat/completions", b"{}")).body
        finally:
            await client.close()

    assert asyncio.run(with_raw_server(proxy, use)) == b"ok"
    assert proxied[0].startswith(b"POST http://llm.internal.example:8000/v1/chat/completions ")
