"""evol.llm.sdk_client: the openai SDK's client with evol's limits, for the `openai-sdk` backend
and the batch backend, against real servers on 127.0.0.1.

- An Azure OpenAI resource gets the key as `api-key` (no Authorization header) and the base
  URL's `?api-version=` on every request, as the `openai` backend sends them; a query left in
  the SDK's base URL would have the request's path glued onto it.
- A base URL that is not http(s) is refused before anything is sent.
- A call past its deadline says how long it waited and, where asked, which call it was.
- A reply over the cap names the cap; a login in the URL goes as HTTP Basic auth.
- The SDK's own timeout reads as evol's deadline does; a refused connection, with no proxy,
  stops the run and names the connection's own failure; through a proxy, the proxy and its
  variable too.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import urlsplit

import httpx2
import openai
import pytest
from pydantic import SecretStr

from evol.errors import EndpointUnreachable, TransientBackendError, Unreachable, UsageError
from evol.llm import BackendSettings, Completion, GenerationParams, LLMRequest
from evol.llm.openai_compatible import OpenAICompatibleBackend
from evol.llm.openai_sdk import OpenAISDKBackend
from evol.llm.sdk_client import SdkEndpoint
from tests.support.hostile_server import (
    HostileServer,
    Request,
    answer_normally,
    models_body,
    response,
)

KEY = "sk-test-SDK-CLIENT-0123456789abcdef"
AZURE = "http://res.openai.azure.com/openai/deployments/gpt-4o?api-version=2024-10-21"
QUESTION = LLMRequest([{"role": "user", "content": "question"}], "gpt-4o", GenerationParams())


async def answer(request: Request, writer: asyncio.StreamWriter) -> bool:
    """As a well-behaved server answers, whatever query follows the path."""
    if urlsplit(request.path).path.endswith("/models"):
        writer.write(response("200 OK", models_body()))
        return True
    return await answer_normally(request, writer)


async def ask_and_list(backend: Any) -> tuple[Completion, str]:
    try:
        return await backend.complete(QUESTION), await backend.default_model()
    finally:
        await backend.aclose()


def model_lookup_error(backend: OpenAISDKBackend, expected: type[BaseException]) -> BaseException:
    """The `expected` error that asking `backend` for its model raises (the test fails on none)."""

    async def main() -> BaseException:
        try:
            await backend.default_model()
        except expected as error:
            return error
        finally:
            await backend.aclose()
        raise AssertionError(f"no {expected.__name__}")

    return asyncio.run(main())


def timed_out_listing(url: str, *, client_timeout: float, deadline: float) -> BaseException:
    """The error of listing `url`'s models with the SDK client's own timeout and evol's
    deadline as given (the test fails on none)."""

    async def main() -> BaseException:
        endpoint = SdkEndpoint(BackendSettings(base_urls=[url], timeout=60))
        client = endpoint.client(timeout=client_timeout)
        try:
            await endpoint.call(client.models.list, deadline=deadline, doing=" (GET /models)")
        except TransientBackendError as error:
            return error
        finally:
            await client.close()
        raise AssertionError("no timeout")

    return asyncio.run(main())


@pytest.mark.parametrize("backend", [OpenAISDKBackend, OpenAICompatibleBackend])
def test_an_azure_resource_gets_its_key_as_api_key_and_its_query_on_every_request(
    monkeypatch: pytest.MonkeyPatch, backend: type
) -> None:
    """Through a proxy (the test's server), so that the request names the Azure host."""
    with HostileServer(answer) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url.removesuffix("/v1"))
        settings = BackendSettings(base_urls=[AZURE], api_key=SecretStr(KEY))
        reply, model = asyncio.run(ask_and_list(backend(settings)))
    assert isinstance(reply, Completion) and model == "fake-model"
    deployment = "http://res.openai.azure.com/openai/deployments/gpt-4o"
    assert [(r.method, r.path) for r in proxy.requests] == [
        ("POST", f"{deployment}/chat/completions?api-version=2024-10-21"),
        ("GET", f"{deployment}/models?api-version=2024-10-21"),
    ]
    for request in proxy.requests:
        assert request.headers["api-key"] == KEY
        assert "authorization" not in request.headers


def test_elsewhere_the_key_goes_as_a_bearer_token_and_a_login_as_basic_auth() -> None:
    with HostileServer(answer_normally) as server:
        keyed = BackendSettings(base_urls=[server.base_url], api_key=SecretStr(KEY))
        asyncio.run(ask_and_list(OpenAISDKBackend(keyed)))
        login = server.base_url.replace("http://", "http://user:p%40ss@")
        asyncio.run(ask_and_list(OpenAISDKBackend(BackendSettings(base_urls=[login]))))
    basic = "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert [r.headers["authorization"] for r in server.requests] == [f"Bearer {KEY}"] * 2 + [
        basic
    ] * 2
    assert all("api-key" not in r.headers for r in server.requests)
    assert {r.headers["user-agent"].split("/")[0] for r in server.requests} == {"evol"}


@pytest.mark.parametrize("url", ["ftp://example.com/v1", "http:///v1", "example.com/v1"])
def test_a_base_url_that_is_not_http_is_refused_before_anything_is_sent(url: str) -> None:
    with pytest.raises(UsageError, match="not an http:// or https:// URL"):
        SdkEndpoint(BackendSettings(base_urls=[url]))


async def silent(_request: Request, _writer: asyncio.StreamWriter) -> bool:
    await asyncio.sleep(3600)  # never answers; the test's server ends it on shutdown
    return False


def test_a_call_past_its_deadline_says_how_long_it_waited_and_which_call_it_was() -> None:
    with HostileServer(silent) as server:
        error = timed_out_listing(server.base_url, client_timeout=60, deadline=0.2)
    assert str(error) == f"{server.base_url} timed out after 0.2s (GET /models)"


BIG_BODY = models_body() + b" " * 4000


@pytest.mark.parametrize(
    ("announced", "said"),
    [
        (False, "sent a reply of over 100 bytes (--max-response-mb)"),
        (True, f"announced a reply of {len(BIG_BODY):,} bytes, over the 100-byte cap"),
    ],
)
def test_a_reply_over_the_cap_names_the_cap(announced: bool, said: str) -> None:
    async def big(_request: Request, writer: asyncio.StreamWriter) -> bool:
        if announced:
            writer.write(response("200 OK", BIG_BODY))
        else:  # no length: the body is counted as it comes, up to the connection's end
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + BIG_BODY)
        return False

    with HostileServer(big) as server:
        backend = OpenAISDKBackend(
            BackendSettings(base_urls=[server.base_url], max_response_bytes=100)
        )
        error = model_lookup_error(backend, TransientBackendError)
    assert str(error).startswith(server.base_url) and said in str(error)


def test_a_timeout_of_the_sdk_s_own_says_how_long_it_waited_and_which_call_it_was() -> None:
    """The client's own timeout (the SDK's APITimeoutError, not evol's deadline) reads the
    same way: a retryable timeout that names the deadline and the call."""
    with HostileServer(silent) as server:
        error = timed_out_listing(server.base_url, client_timeout=0.2, deadline=30)
    assert str(error) == f"{server.base_url} timed out after 30s (GET /models)"


def test_an_endpoint_that_refuses_the_connection_stops_the_run_and_says_why() -> None:
    """No proxy, nothing listening: EndpointUnreachable (the run stops, not retried), naming
    the endpoint, the connection's own failure and the remedy."""
    with HostileServer(answer) as server:
        url = server.base_url  # its port, free once the server is gone
    backend = OpenAISDKBackend(BackendSettings(base_urls=[url], timeout=10))
    message = str(model_lookup_error(backend, EndpointUnreachable))
    assert message.startswith(f"cannot reach {url}: ")
    assert message.endswith("; check --base-url")
    cause = message.removeprefix(f"cannot reach {url}: ").removesuffix("; check --base-url")
    assert cause not in ("", "None", "Connection error.")


def test_a_proxy_that_refuses_the_connection_is_named_with_the_variable_it_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through a proxy that is not there: EndpointUnreachable (the run stops), naming the
    endpoint, the proxy, the connection's own failure and the variable to fix."""
    with HostileServer(answer) as gone:
        proxy = gone.base_url.removesuffix("/v1")  # its port, free once the server is gone
    monkeypatch.setenv("HTTP_PROXY", proxy)
    url = "http://api.example.com/v1"
    backend = OpenAISDKBackend(BackendSettings(base_urls=[url], timeout=10))
    message = str(model_lookup_error(backend, EndpointUnreachable))
    assert message.startswith(f"cannot reach {url} through the proxy {proxy}: ")
    assert message.endswith("; check HTTP_PROXY (or NO_PROXY)")
    cause = message.removeprefix(f"cannot reach {url} through the proxy {proxy}: ")
    assert cause.removesuffix("; check HTTP_PROXY (or NO_PROXY)") not in ("", "None")


URL = "http://api.example.com/v1"


def sdk_error(kind: str, cause: BaseException | None = None) -> openai.APIError:
    """An error of the SDK's, as it raises it: `kind`'s class, `cause` as its __cause__."""
    request = httpx2.Request("GET", f"{URL}/models")
    error: openai.APIError
    if kind == "connection":
        error = openai.APIConnectionError(request=request)
    elif kind == "malformed":
        response = httpx2.Response(200, request=request)
        error = openai.APIResponseValidationError(response=response, body=None)
    else:
        error = openai.APIError("the stream ended without its last event", request, body=None)
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("error", "answered", "kind", "message"),
    [
        # Connected, then the reply broke off: retried, with the connection's own failure.
        (sdk_error("connection", httpx2.ReadError("the peer reset it")), False,
         TransientBackendError, f"cannot reach {URL}: the peer reset it"),
        # No connection to an endpoint that answered before: it may be restarting.
        (sdk_error("connection", httpx2.ConnectError("refused")), True,
         Unreachable, f"cannot reach {URL}: refused"),
        (sdk_error("malformed"), False, TransientBackendError, f"{URL} sent a malformed reply"),
        (sdk_error("other"), False, TransientBackendError,
         f"{URL}: the stream ended without its last event"),
    ],
)  # fmt: skip
def test_each_sdk_error_is_read_as_what_a_retry_can_fix_in_words(
    error: openai.APIError, answered: bool, kind: type[Exception], message: str
) -> None:
    endpoint = SdkEndpoint(BackendSettings(base_urls=[URL], timeout=10))
    endpoint.answered = answered
    read = endpoint.error(error, model="m", deadline=30)
    assert type(read) is kind and str(read) == message


def test_a_proxy_that_fails_after_the_endpoint_answered_is_retried_not_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The way through the proxy worked before in this run: Unreachable (retried, the run
    stops only when the retries run out), not EndpointUnreachable at the first failure."""
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example.com:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    endpoint = SdkEndpoint(BackendSettings(base_urls=[URL], timeout=10))
    endpoint.answered = True
    read = endpoint.error(
        sdk_error("connection", httpx2.ConnectError("refused")), model="m", deadline=30
    )
    assert type(read) is Unreachable
    assert str(read) == (
        f"cannot reach {URL} through the proxy http://proxy.example.com:3128: refused"
    )
