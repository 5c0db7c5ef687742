"""The `openai` backend's HTTP, driven in this process against real servers on 127.0.0.1.

tests/llm/test_transport_hostile.py checks the same transport through `evol run` children (memory, exits);
this file calls `evol.llm.transport` (and the OpenAI API's reading of statuses and model lists)
directly, so that what each function promises is checked where mutation testing can see it:
what a request sends and gets back, the body cap at its edges, redirects, what each failure to
connect is called, which proxy the environment names, and a login in the URL.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evol import __version__
from evol.errors import (
    AuthenticationFailed,
    EndpointUnreachable,
    ModelNotFound,
    Redirected,
    TransientBackendError,
    Unreachable,
    UsageError,
)
from evol.llm import BackendSettings
from evol.llm.openai_api import auth_headers, status_error
from evol.llm.openai_compatible import OpenAICompatibleBackend
from evol.llm.transport import (
    HttpResponse,
    JsonTransport,
    _drop_stray_connection_errors,
    failure_of,
    proxy_for,
    url_login,
)
from evol.secrets import Secrets
from tests.support.fake_server import FakeServer
from tests.support.hostile_server import (
    HostileServer,
    Request,
    answer_normally,
    certificate,
    response,
    tls_context,
)
from tests.support.runs import refused_url
from tests.support.transport import (
    PlainGreeter,
    ask,
    no_proxy_in_the_environment,
    outcome,
    theirs,
)

__all__ = ["no_proxy_in_the_environment"]  # autouse: the environment's proxies stay out

KEY = "sk-test-TRANSPORT-0123456789abcdef"


def served(behaviour: Callable[[Request, asyncio.StreamWriter], Awaitable[bool]], **options):
    """The outcome of one request to a server that answers with `behaviour`, and what it got."""
    with HostileServer(behaviour) as server:
        result = outcome(server.base_url, **options)
        return result, list(server.requests)


def answering(*raw: bytes) -> Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]:
    """A behaviour that writes `raw` (the bytes of a whole response) and closes."""

    async def behaviour(_request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"".join(raw))
        return False

    return behaviour


async def answer_ok(request: Request, writer: asyncio.StreamWriter) -> bool:
    """An empty JSON object for any request, on a connection kept open."""
    writer.write(response("200 OK", b"{}"))
    return True


# -- what a request sends and what it gets back ------------------------------------------------


def test_a_reply_comes_back_with_its_status_headers_and_body() -> None:
    body = b'{"whatever": "the server said"}'
    result, _ = served(answering(response("418 I'm a teapot", body, "X-Served-By: pot")))
    assert isinstance(result, HttpResponse)
    assert (result.status, result.body) == (418, body)
    assert result.headers["x-served-by"] == result.headers["X-SERVED-BY"] == "pot"


def test_every_request_carries_the_agent_accept_the_given_headers_and_the_base_query() -> None:
    async def two_requests(url: str) -> list[HttpResponse]:
        transport = JsonTransport(
            url, {"Authorization": "Bearer token", "X-Extra": "1"}, timeout=20
        )
        try:
            first = await transport.request("POST", "/chat/completions", b'{"a": 1}')
            return [first, await transport.request("GET", "/models", None)]
        finally:
            await transport.close()

    with HostileServer(answer_ok) as server:
        url = server.base_url + "/?api-version=2024-06-01#fragment"
        replies = asyncio.run(two_requests(url))
        requests = list(server.requests)
    assert [reply.status for reply in replies] == [200, 200]
    assert [(r.method, r.path) for r in requests] == [
        ("POST", "/v1/chat/completions?api-version=2024-06-01"),
        ("GET", "/v1/models?api-version=2024-06-01"),
    ]
    assert requests[0].body == b'{"a": 1}'
    for request in requests:
        assert request.headers["user-agent"] == f"evol/{__version__}"
        assert request.headers["accept"] == "application/json"
        assert request.headers["authorization"] == "Bearer token"
        assert request.headers["x-extra"] == "1"


def test_the_given_headers_override_the_defaults() -> None:
    result, (request,) = served(answer_normally, headers={"Accept": "text/plain"})
    assert isinstance(result, HttpResponse) and request.headers["accept"] == "text/plain"


def test_no_cookie_a_server_sets_is_sent_back() -> None:
    async def sets_a_cookie(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response("200 OK", b"{}", "Set-Cookie: session=abc; Path=/"))
        return True

    async def twice(url: str) -> None:
        transport = JsonTransport(url, {}, timeout=20)
        await transport.request("GET", "/models", None)
        await ask(transport)

    with HostileServer(sets_a_cookie) as server:
        asyncio.run(twice(server.base_url))
        assert [r.headers.get("cookie") for r in server.requests] == [None, None]


def test_a_url_that_is_not_http_is_refused_in_one_line() -> None:
    for url in ("ftp://example.com/v1", "example.com/v1", "http:///v1"):
        with pytest.raises(UsageError, match="not an http:// or https:// URL"):
            JsonTransport(url, {}, timeout=1)
    with pytest.raises(UsageError) as refused:
        JsonTransport(f"file://u:{KEY}@x/v1", {}, timeout=1)
    assert KEY not in str(refused.value) and str(refused.value).startswith("--base-url file://x/v1")


def test_answered_flips_only_once_a_response_came() -> None:
    async def main(url: str) -> list[bool]:
        seen = []
        transport = JsonTransport(url, {}, timeout=20)
        seen.append(transport.answered)
        await ask(transport)
        seen.append(transport.answered)
        return seen

    assert asyncio.run(main(refused_url())) == [False, False]
    with HostileServer(answering(b"HTTP/1.1 999999 nonsense\r\n\r\n")) as broken:
        assert asyncio.run(main(broken.base_url)) == [False, False]
    with HostileServer(answering(response("500 Oops", b"{}"))) as failing:
        assert asyncio.run(main(failing.base_url)) == [False, True]


def test_close_twice_is_fine_and_a_closed_transport_opens_again() -> None:
    async def main(url: str) -> list[int]:
        transport = JsonTransport(url, {}, timeout=20)
        await transport.close()  # never opened
        statuses = [(await transport.request("GET", "/models", None)).status]
        await transport.close()
        await transport.close()
        statuses.append((await transport.request("GET", "/models", None)).status)
        await transport.close()
        return statuses

    with HostileServer(answer_normally) as server:
        assert asyncio.run(main(server.base_url)) == [200, 200]


# -- redirects ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["300 Multiple Choices", "301 Moved", "308 Permanent", "399 X"])
def test_a_redirect_is_an_error_naming_where_it_points(status: str) -> None:
    moved = answering(response(status, b"", "Location: https://elsewhere.example/v1"))
    with HostileServer(moved) as server:
        result = outcome(server.base_url)
        calls = len(server.requests)
    assert type(result) is Redirected and calls == 1  # not followed
    assert str(result) == (
        f"{server.base_url} redirects to https://elsewhere.example/v1 ({status[:3]}): "
        "point --base-url at the final address"
    )


@pytest.mark.parametrize("status", ["200 OK", "299 Odd", "400 Bad Request"])
def test_a_status_outside_3xx_is_a_reply_not_a_redirect(status: str) -> None:
    result, _ = served(answering(response(status, b"{}", "Location: https://elsewhere/")))
    assert isinstance(result, HttpResponse) and result.status == int(status[:3])


def test_a_redirect_with_no_location_says_so() -> None:
    result, _ = served(answering(response("302 Found", b"")))
    assert type(result) is Redirected and "redirects to (no Location header) (302)" in str(result)


def test_a_redirects_location_is_shown_without_secrets() -> None:
    location = f"Location: http://user:{KEY}@127.0.0.1:1/v1/{KEY}?q={KEY}&api-version=1"
    result, _ = served(answering(response("307 Temporary", b"", location)), secrets=Secrets(KEY))
    assert type(result) is Redirected
    assert "redirects to http://127.0.0.1:1/v1/***?q=***&api-version=1 (307)" in str(result)
    assert KEY[:8] not in str(result)


def test_a_redirect_read_from_a_status_names_the_location_redacted() -> None:
    """The SDK and batch backends meet a 3xx as a status: the same error as the transport's."""
    headers = {"location": f"https://elsewhere/v1?key={KEY}"}
    error = status_error("W", "OPENAI_API_KEY", "m", 301, "", headers, Secrets(KEY))
    assert type(error) is Redirected and str(error) == (
        "W redirects to https://elsewhere/v1?key=*** (301): point --base-url at the final address"
    )
    error = status_error("W", "OPENAI_API_KEY", "m", 399, "", {}, Secrets(KEY))
    assert type(error) is Redirected and "(no Location header) (399)" in str(error)


# -- the body cap --------------------------------------------------------------------------------

CAP = 1000


def with_length(size: int) -> bytes:
    return response("200 OK", b"x" * size)


def chunked(size: int) -> bytes:
    body = b"x" * size
    chunks = [body[start : start + 300] for start in range(0, size, 300)]
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"


def gzipped(size: int) -> bytes:
    return response("200 OK", gzip.compress(b"x" * size), "Content-Encoding: gzip")


SENDS = {"content-length": with_length, "chunked": chunked, "gzip": gzipped}


@pytest.mark.parametrize("sent", sorted(SENDS))
@pytest.mark.parametrize("size", [0, CAP - 1, CAP])
def test_a_body_up_to_the_cap_comes_back_whole(sent: str, size: int) -> None:
    result, _ = served(answering(SENDS[sent](size)), max_response_bytes=CAP)
    assert isinstance(result, HttpResponse) and result.body == b"x" * size


@pytest.mark.parametrize("sent", ["chunked", "gzip"])
def test_a_body_of_many_reads_comes_back_whole(sent: str) -> None:
    size = 300_000  # several of aiohttp's reads
    result, _ = served(answering(SENDS[sent](size)), max_response_bytes=size)
    assert isinstance(result, HttpResponse) and result.body == b"x" * size


@pytest.mark.parametrize(
    ("sent", "why"),
    [
        ("content-length", "announced a reply of 1,001 bytes, over the 1,000-byte cap"),
        ("chunked", "sent a reply of over 1,000 bytes"),
        ("gzip", "sent a reply of over 1,000 bytes"),
    ],
)
def test_a_body_one_byte_over_the_cap_is_refused(sent: str, why: str) -> None:
    result, _ = served(answering(SENDS[sent](CAP + 1)), max_response_bytes=CAP)
    assert type(result) is TransientBackendError
    assert str(result).endswith(f"{why} (--max-response-mb)") and "127.0.0.1" in str(result)


def test_a_content_length_over_the_cap_is_refused_before_the_body_is_read() -> None:
    async def announces_a_terabyte(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n{")
        await writer.drain()
        await asyncio.sleep(60)  # the rest never comes: reading it would time out
        return False

    result, _ = served(announces_a_terabyte, max_response_bytes=CAP, timeout=30)
    assert type(result) is TransientBackendError
    assert "announced a reply of 1,000,000,000,000 bytes, over the 1,000-byte cap" in str(result)


def test_an_endless_chunked_body_stops_at_the_cap() -> None:
    async def endless(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100_000):  # far more than the cap; stops once the client is gone
            writer.write(b"1000\r\n" + b"y" * 4096 + b"\r\n")
            await writer.drain()
        return False

    result, _ = served(endless, max_response_bytes=100_000, timeout=30)
    assert type(result) is TransientBackendError and "over 100,000 bytes" in str(result)


# -- headers a server may not send -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "kept"),
    [
        ([f"X-Long: {'a' * 12_000}"], True),
        ([f"X-Long: {'a' * 20_000}"], False),
        ([f"X-N{n}: 1" for n in range(50)], True),
        ([f"X-N{n}: 1" for n in range(150)], False),
    ],
    ids=["12 KB line", "20 KB line", "50 headers", "150 headers"],
)
def test_header_lines_and_counts_are_bounded(headers: list[str], kept: bool) -> None:
    result, _ = served(answering(response("200 OK", b"{}", *headers)))
    if kept:
        assert isinstance(result, HttpResponse) and result.status == 200
    else:
        assert type(result) is TransientBackendError and "sent a broken reply" in str(result)


# -- what each failure is called -----------------------------------------------------------------


def test_a_reply_that_never_comes_times_out_naming_the_timeout() -> None:
    async def silent(request: Request, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(60)
        return False

    with HostileServer(silent) as server:
        result = outcome(server.base_url, timeout=0.5)
    assert type(result) is TransientBackendError
    assert str(result) == f"{server.base_url} timed out after 0.5s"


def test_a_body_that_drips_is_cut_by_the_whole_request_deadline() -> None:
    async def drip(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):  # each read comes in time; the whole body takes 20 s
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.2)
        return False

    result, _ = served(drip, timeout=1)
    assert type(result) is TransientBackendError and str(result).endswith("timed out after 1s")


def test_a_timeout_says_what_was_being_done() -> None:
    error = failure_of(TimeoutError(), "W", 2.0, answered=True, doing=" uploading the batch")
    assert type(error) is TransientBackendError
    assert str(error) == "W timed out after 2s uploading the batch"


def test_a_broken_reply_is_transient_and_quotes_aiohttp_redacted() -> None:
    bad = answering(f"HTTP/1.1 2000 {KEY}\r\nContent-Length: 0\r\n\r\n".encode())
    with HostileServer(bad) as server:
        result = outcome(server.base_url, secrets=Secrets(KEY))
    assert type(result) is TransientBackendError
    assert str(result).startswith(f"{server.base_url} sent a broken reply (ClientResponseError: ")
    assert "***" in str(result) and KEY[:8] not in str(result)


def test_a_refused_connection_stops_the_run_and_blames_the_base_url() -> None:
    url = refused_url()
    result = outcome(url)
    assert type(result) is EndpointUnreachable
    assert str(result) == f"cannot reach {url}: connection refused; check --base-url"


def test_a_server_gone_after_answering_is_unreachable_and_the_url_keeps_its_secret_out() -> None:
    async def close_after(request: Request, writer: asyncio.StreamWriter) -> bool:
        await answer_ok(request, writer)
        return False

    async def main() -> tuple[str, Exception | HttpResponse]:
        with HostileServer(close_after) as server:
            url = f"{server.base_url}?api-key={KEY}&api-version=1"
            transport = JsonTransport(url, {}, timeout=20, secrets=Secrets(KEY))
            await transport.request("GET", "/models", None)
            shown = transport.where
        return shown, await ask(transport)

    shown, result = asyncio.run(main())
    # The rest of the query and the colon after it were redacted away with the key.
    assert shown.endswith("/v1?api-key=***&api-version=1")
    assert type(result) is Unreachable
    assert str(result) == f"cannot reach {shown}: connection refused"


def test_a_host_that_does_not_resolve_is_named() -> None:
    result = outcome("http://evol-no-such-host.invalid/v1")
    assert type(result) is EndpointUnreachable
    assert "cannot resolve host 'evol-no-such-host.invalid'; check --base-url" in str(result)


@pytest.mark.parametrize(
    ("host", "trusted", "cause"),
    [
        ("localhost", False, "TLS certificate verification failed (self-signed certificate)"),
        (
            "example.com",
            True,
            "TLS certificate verification failed (IP address mismatch, certificate is not valid for '127.0.0.1'",
        ),
    ],
    ids=["self-signed", "wrong host"],
)
def test_a_certificate_that_does_not_verify_is_named(
    monkeypatch: pytest.MonkeyPatch, host: str, trusted: bool, cause: str
) -> None:
    if trusted:  # trusted, but for another name
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate(host)[0]))
    with HostileServer(answer_normally, tls=tls_context(host)) as server:
        result = outcome(server.base_url)
        answered = len(server.requests)
    assert type(result) is EndpointUnreachable and answered == 0
    assert str(result).startswith(f"cannot reach {server.base_url}: {cause}"), result
    assert str(result).endswith("; check --base-url")


def test_a_trusted_certificate_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate("localhost")[0]))
    with HostileServer(answer_normally, tls=tls_context("localhost")) as server:
        result = outcome(server.base_url.replace("127.0.0.1", "localhost"))
    assert isinstance(result, HttpResponse) and result.status == 200


def test_tls_to_a_plain_http_port_is_named_a_tls_failure() -> None:
    with PlainGreeter(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as greeter:
        url = f"https://127.0.0.1:{greeter.port}/v1"
        result = outcome(url)
    assert type(result) is EndpointUnreachable
    assert str(result).startswith(f"cannot reach {url}: TLS failed (")
    assert "WRONG_VERSION_NUMBER" in str(result).upper()


def test_a_tls_handshake_the_server_hangs_up_on_is_named_not_left_blank() -> None:
    """The reset came with no number and no words: the reason was blank ('cannot reach ...:
    ; check --base-url')."""
    with PlainGreeter(b"") as greeter:
        url = f"https://127.0.0.1:{greeter.port}/v1"
        result = outcome(url)
    assert type(result) is EndpointUnreachable
    assert str(result) == f"cannot reach {url}: connection reset by peer; check --base-url"


# -- proxies ---------------------------------------------------------------------------------


def test_a_proxy_from_the_environment_carries_the_request_and_its_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with HostileServer(answer_normally) as proxy:
        where = proxy.base_url.removesuffix("/v1").replace("//", "//us%40er:p%3Ass@")
        monkeypatch.setenv("HTTP_PROXY", where)
        target = refused_url()  # reached only through the proxy
        result = outcome(target)
        (request,) = proxy.requests
    assert isinstance(result, HttpResponse) and result.status == 200
    assert request.path == f"{target}/models"  # a proxy is sent the absolute URL
    login = base64.b64encode(b"us@er:p:ss").decode()
    assert request.headers["proxy-authorization"] == f"Basic {login}"


def test_an_https_request_carries_the_proxy_login_on_its_tunnel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuses(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response("407 Who are you", b""))
        return False

    with HostileServer(refuses) as proxy:
        where = proxy.base_url.removesuffix("/v1").replace("//", "//us%40er:p%3Ass@")
        monkeypatch.setenv("HTTPS_PROXY", where)
        outcome("https://evol.invalid/v1")
        (connect,) = proxy.requests
    assert connect.method == "CONNECT"
    login = base64.b64encode(b"us@er:p:ss").decode()
    assert connect.headers["proxy-authorization"] == f"Basic {login}"


def test_no_proxy_by_cidr_goes_direct(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib and aiohttp read no CIDR in NO_PROXY: the choice is ours alone."""
    monkeypatch.setenv("HTTP_PROXY", refused_url().removesuffix("/v1"))
    monkeypatch.setenv("NO_PROXY", "10.0.0.0/8,127.0.0.0/8")
    with FakeServer() as direct:
        result = outcome(direct.base_url)
        reached = len(direct.requests)
    assert isinstance(result, HttpResponse) and result.status == 200 and reached == 0
    assert json.loads(result.body)["data"]


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
def test_a_proxy_that_refuses_is_named_with_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    proxy = refused_url().removesuffix("/v1")
    monkeypatch.setenv(variable, proxy.replace("//", f"//user:{KEY}@"))
    with FakeServer() as direct:
        result = outcome(direct.base_url, secrets=Secrets(KEY))
        reached = len(direct.requests)
    assert type(result) is EndpointUnreachable and reached == 0
    assert str(result) == (
        f"cannot reach {direct.base_url} through the proxy {proxy}: connection refused; "
        f"check {variable} (or NO_PROXY)"
    )


def test_a_proxy_gone_after_answering_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    async def close_after(request: Request, writer: asyncio.StreamWriter) -> bool:
        await answer_normally(request, writer)
        return False

    async def main() -> Exception | HttpResponse:
        with HostileServer(close_after) as proxy:
            monkeypatch.setenv("ALL_PROXY", proxy.base_url.removesuffix("/v1"))
            transport = JsonTransport(refused_url(), {}, timeout=20)
            await transport.request("GET", "/models", None)
        return await ask(transport)

    result = asyncio.run(main())
    assert type(result) is Unreachable
    assert "through the proxy http://127.0.0.1:" in str(result)
    assert str(result).endswith(": connection refused")


def test_a_proxy_that_refuses_the_tunnel_says_what_it_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuses(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response(f"407 Who are you {KEY}", b""))
        return False

    with HostileServer(refuses) as proxy:
        where = proxy.base_url.removesuffix("/v1")
        monkeypatch.setenv("HTTPS_PROXY", where)
        result = outcome("https://evol.invalid/v1", secrets=Secrets(KEY))
        (connect,) = proxy.requests
    assert connect.method == "CONNECT" and connect.path == "evol.invalid:443"
    assert type(result) is EndpointUnreachable
    assert str(result) == (
        f"cannot reach https://evol.invalid/v1 through the proxy {where}: it answered 407 "
        "Who are you ***; check HTTPS_PROXY (or NO_PROXY)"
    )


def test_a_proxy_error_without_a_proxy_is_the_endpoints() -> None:
    """An error aiohttp calls a proxy's, from a transport with no proxy, blames --base-url."""
    key = aiohttp.client_reqrep.ConnectionKey("h", 80, False, True, None, None, None)
    error = aiohttp.ClientProxyConnectionError(key, ConnectionRefusedError(111, "refused"))
    result = failure_of(error, "W", 1, answered=False)
    assert type(result) is EndpointUnreachable
    assert str(result) == "cannot reach W: connection refused; check --base-url"


# (urllib's view of the environment, the URL) -> (the proxy, its variable) or None
PROXY_CHOICES: list[tuple[dict[str, str], str, tuple[str, str] | None]] = [
    ({}, "http://example.com/v1", None),
    ({"http": "http://p:1"}, "http://example.com/v1", ("http://p:1", "HTTP_PROXY")),
    ({"http": "http://p:1"}, "https://example.com/v1", None),
    ({"https": "http://p:1"}, "https://example.com/v1", ("http://p:1", "HTTPS_PROXY")),
    ({"https": "http://p:1"}, "http://example.com/v1", None),
    ({"all": "p:3128"}, "https://example.com/v1", ("http://p:3128", "ALL_PROXY")),
    ({"all": "https://p:1"}, "http://example.com/v1", ("https://p:1", "ALL_PROXY")),
    ({"https": "http://a:1", "all": "http://b:2"}, "https://x/v1", ("http://a:1", "HTTPS_PROXY")),
    ({"https": "http://a:1", "all": "http://b:2"}, "http://x/v1", ("http://b:2", "ALL_PROXY")),
    ({"http": "", "all": "http://b:2"}, "http://x/v1", ("http://b:2", "ALL_PROXY")),
    ({"all": "http://p:1", "no": "*"}, "http://example.com/v1", None),
    ({"all": "http://p:1", "no": "other.org, *"}, "http://example.com/v1", None),
    ({"all": "http://p:1", "no": ",,"}, "http://example.com/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": "example.com"}, "http://example.com/v1", None),
    ({"all": "http://p:1", "no": "EXAMPLE.com"}, "http://api.Example.COM/v1", None),
    ({"all": "http://p:1", "no": "example.com"}, "http://notexample.com/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": ".example.com"}, "http://api.example.com/v1", None),
    ({"all": "http://p:1", "no": ".example.com"}, "http://example.com/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": "*.example.com"}, "http://a.b.example.com/v1", None),
    ({"all": "http://p:1", "no": "*.example.com"}, "http://example.com/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": "10.0.0.0/8"}, "http://10.1.2.3/v1", None),
    ({"all": "http://p:1", "no": "10.0.0.0/8"}, "http://11.0.0.1/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": "10.0.0.0/8"}, "http://ten.example/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": "192.168.1.5"}, "http://192.168.1.5:8000/v1", None),
    ({"all": "http://p:1", "no": "::1"}, "http://[::1]:8000/v1", None),
    ({"all": "http://p:1", "no": "[::1]"}, "http://[::1]/v1", None),
    ({"all": "http://p:1", "no": "fd00::/8"}, "http://[fd12::1]/v1", None),
    ({"all": "http://p:1", "no": "fd00::/8"}, "http://[2001:db8::1]/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": "example.com:8080"}, "http://example.com:8080/v1", None),
    ({"all": "http://p:1", "no": "example.com:8080"}, "http://example.com/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": "example.com:443"}, "https://example.com/v1", None),
    ({"all": "http://p:1", "no": "http://example.com"}, "http://example.com/v1", None),
    ({"all": "http://p:1", "no": "http://example.com"}, "https://example.com/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": "http://example.com"}, "http://api.example.com/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": "all://example.com"}, "https://example.com/v1", None),
    ({"all": "http://p:1", "no": "https://example.com:8443"}, "https://example.com:8443/v1", None),
    ({"all": "http://p:1", "no": "https://example.com:8443"}, "https://example.com/v1", ("http://p:1", "ALL_PROXY")),
    ({"all": "http://p:1", "no": " example.com , 127.0.0.0/8 "}, "http://127.0.0.1:9/v1", None),
]  # fmt: skip


@pytest.mark.parametrize(("proxies", "url", "chosen"), PROXY_CHOICES)
def test_the_proxy_is_chosen_by_scheme_and_no_proxy(
    proxies: dict[str, str], url: str, chosen: tuple[str, str] | None
) -> None:
    proxy = proxy_for(url, proxies)
    assert ((proxy.url, proxy.variable) if proxy else None) == chosen
    assert proxy is None or proxy.authorization is None


def test_the_proxy_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://envproxy:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    proxy = proxy_for("https://api.example/v1")
    assert proxy is not None and (proxy.url, proxy.variable) == (
        "http://envproxy:3128",
        "HTTPS_PROXY",
    )
    assert proxy_for("https://internal.example/v1") is None
    assert proxy_for("http://api.example/v1") is None


@pytest.mark.parametrize(
    ("target", "url", "login"),
    [
        ("http://user:p%40ss@proxy:3128", "http://proxy:3128", ("user", "p@ss")),
        ("http://us%40er@proxy", "http://proxy", ("us@er", "")),
        ("http://user:pw@[::1]:3128", "http://[::1]:3128", ("user", "pw")),
        ("user:pw@proxy:8080", "http://proxy:8080", ("user", "pw")),
    ],
)
def test_a_proxy_login_becomes_its_auth_and_leaves_the_url(
    target: str, url: str, login: tuple[str, str]
) -> None:
    proxy = proxy_for("http://example.com/v1", {"all": target})
    assert proxy is not None and proxy.url == url
    assert proxy.authorization == aiohttp.encode_basic_auth(*login)


def test_a_proxy_user_name_with_a_colon_is_refused_in_one_line() -> None:
    """Basic auth cannot carry it; aiohttp raised a ValueError, a traceback from `evol run`."""
    with pytest.raises(UsageError) as refused:
        proxy_for("http://example.com/v1", {"http": f"http://us%3Aer:{KEY}@proxy:3128"})
    assert str(refused.value).startswith("the proxy http://proxy:3128 has a ':' in its user name")
    assert KEY not in str(refused.value)


@pytest.mark.parametrize("scheme", ["socks5", "socks5h", "ftp"])
def test_a_proxy_that_is_not_http_is_refused_naming_it(scheme: str) -> None:
    with pytest.raises(UsageError) as refused:
        proxy_for("http://example.com/v1", {"all": f"{scheme}://user:{KEY}@p:1080"})
    assert str(refused.value).startswith(f"the proxy {scheme}://p:1080 is a {scheme} proxy;")
    assert "--backend openai-sdk" in str(refused.value) and KEY not in str(refused.value)


HOSTS = ["example.com", "api.example.com", "notexample.com", "localhost", "10.1.2.3",
         "127.0.0.1", "192.168.1.5", "[::1]", "[fd12::1]"]  # fmt: skip
NO_PROXY_ENTRIES = [
    "*", "example.com", ".example.com", "*.example.com", "localhost", "EXAMPLE.COM",
    "10.0.0.0/8", "127.0.0.1", "192.168.1.0/24", "::1", "[::1]", "fd00::/8",
    "example.com:8080", "localhost:8000", "http://example.com", "https://api.example.com",
    "all://localhost", "http://example.com:8080",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    scheme=st.sampled_from(["http", "https"]),
    host=st.sampled_from(HOSTS),
    port=st.sampled_from(["", ":8080", ":8000"]),
    set_proxies=st.sets(st.sampled_from(["http", "https", "all"])),
    no_proxy=st.lists(st.sampled_from(NO_PROXY_ENTRIES), max_size=3),
)
def test_the_proxy_choice_is_httpx2s_for_any_environment(
    scheme: str, host: str, port: str, set_proxies: set[str], no_proxy: list[str]
) -> None:
    proxies = {name: f"http://{name}-proxy:3128" for name in set_proxies}
    if no_proxy:
        proxies["no"] = ",".join(no_proxy)
    url = f"{scheme}://{host}{port}/v1"
    ours = proxy_for(url, proxies)
    assert (ours.url if ours else None) == theirs(proxies, url)


# -- a login in the URL --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bare", "login"),
    [
        ("http://user:pass@host/v1", "http://host/v1", "user:pass"),
        ("https://us%40er:p%3Ass%2F@host:8443/v1?x=1", "https://host:8443/v1?x=1", "us@er:p:ss/"),
        ("http://%C3%BCser:p%C3%A4ss@host/v1", "http://host/v1", "üser:päss"),
        ("http://user@host/v1", "http://host/v1", "user:"),
        ("http://:secret@host/v1", "http://host/v1", ":secret"),
        ("http://user:pw@[::1]:8000/v1", "http://[::1]:8000/v1", "user:pw"),
    ],
)
def test_a_login_in_the_url_becomes_basic_auth(url: str, bare: str, login: str) -> None:
    stripped, headers = url_login(url, None, "OPENAI_API_KEY")
    basic = base64.b64encode(login.encode("utf-8")).decode()
    assert (stripped, headers) == (bare, {"Authorization": f"Basic {basic}"})


def test_no_login_leaves_the_url_as_it_was() -> None:
    url = "https://host:8443/v1?api-version=1"
    assert url_login(url, None, "OPENAI_API_KEY") == (url, {})
    assert url_login(url, KEY, "OPENAI_API_KEY") == (url, {})


@given(user=st.text(min_size=1, max_size=12), password=st.text(max_size=12))
def test_any_login_reaches_the_header_as_typed(user: str, password: str) -> None:
    url = f"http://{quote(user, safe='')}:{quote(password, safe='')}@host/v1"
    stripped, headers = url_login(url, None, "x")
    scheme, _, encoded = headers["Authorization"].partition(" ")
    assert stripped == "http://host/v1" and scheme == "Basic"
    assert base64.b64decode(encoded).decode("utf-8") == f"{user}:{password}"


@pytest.mark.parametrize("source", ["OPENAI_API_KEY", "--api-key", "api-key in --config e.toml"])
def test_a_login_next_to_a_key_is_refused_naming_the_keys_source(source: str) -> None:
    with pytest.raises(UsageError) as refused:
        url_login(f"http://user:{KEY}@host/v1", "sk-other", source)
    message = str(refused.value)
    assert message.startswith("--base-url http://host/v1 carries user:password@")
    assert f"({source})" in message and f"keep the key in {source}" in message
    assert KEY not in message


def test_a_login_in_the_url_reaches_the_server_as_basic_auth() -> None:
    with HostileServer(answer_normally) as server:
        url = server.base_url.replace("//", "//ana:s%3Acret@")
        backend = OpenAICompatibleBackend(BackendSettings(base_urls=[url]))
        model = asyncio.run(default_model(backend))
        (request,) = server.requests
    assert model == "fake-model" and request.path == "/v1/models"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(b"ana:s:cret").decode()


# -- the loop's handler for connection errors nobody took up -------------------------------------


@pytest.mark.parametrize(
    ("error", "message", "reported"),
    [
        (ConnectionResetError(104, "reset"), "Future exception was never retrieved", False),
        (ssl.SSLCertVerificationError(1, "bad"), "Task exception was never retrieved", False),
        (ValueError("a bug"), "Future exception was never retrieved", True),
        (ConnectionResetError(104, "reset"), "Exception in callback", True),
    ],
    ids=["reset", "certificate", "not a connection error", "not unclaimed"],
)
def test_only_a_connection_error_nobody_took_up_goes_unreported(
    caplog: pytest.LogCaptureFixture, error: BaseException, message: str, reported: bool
) -> None:
    loop = asyncio.new_event_loop()
    try:
        _drop_stray_connection_errors(loop, {"message": message, "exception": error})
    finally:
        loop.close()
    assert (message in caplog.text) is reported


def test_the_handler_is_installed_only_where_the_loop_has_none() -> None:
    def own(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        pass

    async def handler_after_opening(preset: Any) -> Any:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(preset)
        transport = JsonTransport("http://127.0.0.1:9/v1", {}, timeout=1)
        transport._open()
        await transport.close()
        return loop.get_exception_handler()

    assert asyncio.run(handler_after_opening(None)) is _drop_stray_connection_errors
    assert asyncio.run(handler_after_opening(own)) is own


# -- the OpenAI API's statuses, model lists and credentials, in this process ------------------


async def default_model(backend: OpenAICompatibleBackend) -> str | Exception:
    try:
        return await backend.default_model()
    except Exception as error:  # the outcome is what the test looks at
        return error
    finally:
        await backend.aclose()


MODEL_LISTS: dict[str, tuple[Any, type | str, str]] = {
    "one": ({"data": [{"id": "m1"}]}, "m1", ""),
    "two": ({"data": [{"id": "m1"}, {"id": "m2"}]}, UsageError, "name a model with --model: it serves m1, m2"),
    "none": ({"data": []}, UsageError, "name a model with --model"),
    "twelve": ({"data": [{"id": f"m{n}"} for n in range(12)]}, UsageError, "it serves m0, m1, m2, m3, m4, m5, m6, m7, m8, m9"),
    "control characters": ({"data": [{"id": "m\x1b[2J"}]}, UsageError, "serves one model, 'm', whose id holds control characters"),
    "the key": ({"data": [{"id": f"m-{KEY}"}]}, UsageError, "serves one model, 'm-***', whose id holds the API key or a password"),
    "ids numbers": ({"data": [{"id": 5}]}, TransientBackendError, "sent a malformed model list"),
    "a list": ([{"id": "m1"}], TransientBackendError, "sent a malformed model list"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MODEL_LISTS))
def test_the_model_list_names_one_model_or_asks_for_one(case: str) -> None:
    listing, kind, words = MODEL_LISTS[case]
    body = json.dumps(listing).encode()
    with HostileServer(answering(response("200 OK", body))) as server:
        settings = BackendSettings(base_urls=[server.base_url], api_key=KEY)
        result = asyncio.run(default_model(OpenAICompatibleBackend(settings)))
    if isinstance(kind, str):
        assert result == kind
        return
    assert type(result) is kind and words in str(result), result
    assert KEY[:8] not in str(result) and "\x1b" not in str(result)


STATUSES: dict[str, tuple[bytes, type, str]] = {
    "401 Unauthorized": (b"{}", AuthenticationFailed, "authentication failed for {url}: check EVOL_API_KEY"),
    "404 Not Found": (b'{"error": {"message": "no such model"}}', ModelNotFound, "{url} has no model '' (no such model); check --model, and that --base-url ends in /v1"),
    "404 Gone": (b"", ModelNotFound, "{url} has no model '' (not found); check --model"),
    "500 Oops": (b'{"error": "down"}', TransientBackendError, "{url} answered 500: down"),
}  # fmt: skip


@pytest.mark.parametrize("status", sorted(STATUSES))
def test_a_status_is_read_as_what_it_means_for_the_run(status: str) -> None:
    body, kind, words = STATUSES[status]
    with HostileServer(answering(response(status, body, "Retry-After: 4"))) as server:
        source = "EVOL_API_KEY"
        settings = BackendSettings(base_urls=[server.base_url], api_key=KEY, api_key_source=source)
        result = asyncio.run(default_model(OpenAICompatibleBackend(settings)))
    assert type(result) is kind and str(result).startswith(words.format(url=server.base_url))
    if kind is TransientBackendError:
        assert result.retry_after == 4


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("https://res.openai.azure.com/openai/v1", {"api-key": KEY}),
        ("https://res.cognitiveservices.azure.com/openai", {"api-key": KEY}),
        ("https://res.services.ai.azure.com/models", {"api-key": KEY}),
        ("https://api.openai.com/v1", {"Authorization": f"Bearer {KEY}"}),
        ("https://openai.azure.com.evil.example/v1", {"Authorization": f"Bearer {KEY}"}),
        ("https://evil.example/v1?h=.openai.azure.com", {"Authorization": f"Bearer {KEY}"}),
    ],
)
def test_the_key_goes_in_the_header_the_host_reads(url: str, headers: dict[str, str]) -> None:
    assert auth_headers(url, KEY) == headers


def test_the_key_reaches_the_server_as_a_bearer_token() -> None:
    with HostileServer(answer_normally) as server:
        settings = BackendSettings(base_urls=[server.base_url + "/"], api_key=KEY)
        assert asyncio.run(default_model(OpenAICompatibleBackend(settings))) == "fake-model"
        (request,) = server.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"


# -- a server gone after answering (found by mutation testing) ---------------------------------


def test_a_server_gone_after_answering_is_unreachable_not_misconfigured() -> None:
    """Never reached: --base-url is wrong (EndpointUnreachable). Gone after answering: it
    may be restarting (Unreachable), and the message does not blame --base-url."""

    async def close_after(request: Request, writer: asyncio.StreamWriter) -> bool:
        await answer_normally(request, writer)
        return False

    async def main() -> tuple[int, BaseException, BaseException]:
        with HostileServer(close_after) as server:
            url = server.base_url
            answered_once = JsonTransport(url, {}, timeout=10)
            first = await answered_once.request("GET", "/models", None)
        # The server is gone now, its port closed.
        errors = []
        for transport in (answered_once, JsonTransport(url, {}, timeout=10)):
            try:
                await transport.request("GET", "/models", None)
            except Exception as error:  # what the test looks at
                errors.append(error)
            finally:
                await transport.close()
        return first.status, errors[0], errors[1]

    status, again, never = asyncio.run(main())
    assert status == 200
    assert type(again) is Unreachable and "--base-url" not in str(again)
    assert type(never) is EndpointUnreachable and "check --base-url" in str(never)


# -- what a failure to connect is called, and which addresses a NO_PROXY entry covers (found by mutation testing) ---


CONNECTION_KEY = aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None)


# -- what a failure to connect is called ---------------------------------------------------------


def connect_failure(error: Exception) -> str:
    """The line a run stops with when the first connection fails with `error`."""
    result = failure_of(error, "W", 1, answered=False)
    assert type(result) is EndpointUnreachable
    return str(result)


def test_a_tls_failure_is_named_by_its_reason_not_by_openssls_whole_line() -> None:
    with PlainGreeter(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as greeter:
        url = f"https://127.0.0.1:{greeter.port}/v1"
        result = outcome(url)
    assert type(result) is EndpointUnreachable
    assert re.fullmatch(
        rf"cannot reach {re.escape(url)}: TLS failed \([A-Z_]+\); check --base-url", str(result)
    ), result


def test_a_tls_error_without_a_reason_is_named_by_its_words() -> None:
    """An SSLError raised outside OpenSSL carries no `reason`."""
    error = aiohttp.ClientConnectorSSLError(CONNECTION_KEY, ssl.SSLError(1, "handshake cut short"))
    assert (
        connect_failure(error)
        == "cannot reach W: TLS failed (handshake cut short); check --base-url"
    )


def test_a_certificate_error_without_openssls_message_is_named_by_its_words() -> None:
    """A certificate error raised in Python (a host name check) has no `verify_message`."""
    cause = ssl.SSLCertVerificationError(1, "hostname 'h' doesn't match 'example.com'")
    error = aiohttp.ClientConnectorCertificateError(CONNECTION_KEY, cause)
    assert connect_failure(error) == (
        "cannot reach W: TLS certificate verification failed "
        "(hostname 'h' doesn't match 'example.com'); check --base-url"
    )


def test_a_reset_without_an_error_number_is_named_by_its_kind() -> None:
    """As a reset in the TLS handshake arrives: no number, no words."""
    error = aiohttp.ClientConnectorError(CONNECTION_KEY, ConnectionResetError())
    assert connect_failure(error) == "cannot reach W: connection reset by peer; check --base-url"


def test_a_failure_with_no_number_and_no_known_kind_keeps_its_own_words() -> None:
    """Every address of a host failing its own way: asyncio joins them in one bare OSError."""
    words = "Multiple exceptions: [Errno 111] Connect call failed, [Errno 101] Network unreachable"
    error = aiohttp.ClientConnectorError(CONNECTION_KEY, OSError(words))
    assert connect_failure(error) == f"cannot reach W: {words}; check --base-url"


# -- which addresses a NO_PROXY entry covers -------------------------------------------------


def bypassed(no_proxy: str, url: str) -> bool:
    return proxy_for(url, {"all": "http://p:1", "no": no_proxy}) is None


@pytest.mark.parametrize("url", ["http://10.9.9.9/v1", "http://10.0.0.1:8000/v1"])
def test_a_range_written_from_one_of_its_addresses_covers_the_range(url: str) -> None:
    """10.1.2.3/8 is 10.0.0.0/8, as httpx2 reads it, not a name to compare."""
    assert bypassed("10.1.2.3/8", url)
    assert theirs({"all": "http://p:1", "no": "10.1.2.3/8"}, url) is None
    assert not bypassed("10.1.2.3/8", "http://11.0.0.1/v1")


@pytest.mark.parametrize(
    ("bracketed", "bare", "url"),
    [
        ("[::1]", "::1", "http://[0:0::1]/v1"),
        ("[::1]", "::1", "http://[::2]/v1"),
        ("[127.0.0.1]:8000", "127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("[127.0.0.1]:8000", "127.0.0.1:8000", "http://127.0.0.1:9000/v1"),
    ],
)
def test_brackets_around_an_address_do_not_change_what_an_entry_covers(
    bracketed: str, bare: str, url: str
) -> None:
    """As for the address alone; httpx2 compares these entries as strings (it proxies all four)."""
    assert bypassed(bracketed, url) == bypassed(bare, url)


def test_the_bracketed_entries_cover_their_address() -> None:
    assert bypassed("[::1]", "http://[0:0::1]/v1")
    assert bypassed("[127.0.0.1]:8000", "http://127.0.0.1:8000/v1")


@pytest.mark.parametrize("entry", ["[::1]:8000", "http://[::1]:8000"])
def test_an_ipv6_entry_with_a_port_goes_direct_as_httpx2_does(entry: str) -> None:
    url = "http://[::1]:8000/v1"
    assert theirs({"all": "http://p:1", "no": entry}, url) is None
    assert bypassed(entry, url)


def test_an_ipv6_entry_with_another_port_is_proxied_as_httpx2_does() -> None:
    url = "http://[::1]:8000/v1"
    assert theirs({"all": "http://p:1", "no": "[::1]:9000"}, url) is not None
    assert not bypassed("[::1]:9000", url)


# -- found by the third mutation round ---------------------------------------------------------


# -- NO_PROXY: the default port, and empty entries ---------------------------------------------


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        ("example.com:80", "http://example.com/v1", True),
        ("example.com:443", "https://example.com/v1", True),
        ("example.com:443", "http://example.com/v1", False),
        ("example.com:80", "https://example.com/v1", False),
        (" , ,example.com", "http://example.com/v1", True),
        ("other.org,,example.com", "http://example.com/v1", True),
    ],
)
def test_a_no_proxy_entry_with_a_port_matches_a_url_on_its_schemes_default_port(
    no_proxy: str, url: str, direct: bool
) -> None:
    """A URL without a port is on 80 (http) or 443 (https), as curl and httpx2 read it; an
    empty entry (a stray comma) is passed over, not the end of the list."""
    from evol.llm.transport import proxy_for

    assert (proxy_for(url, {"all": "http://p:1", "no": no_proxy}) is None) == direct
