"""The openai SDK's client with evol's limits, built in one place, and its errors read as evol's.

The `openai-sdk` backend and the batch backend's Files and Batches calls both go through it:

- `max_retries=0` (the engine, or the batch backend, retries in one place) and one deadline
  around each whole call (`asyncio.timeout`): the SDK's own timeout is per read, so a body that
  drips a byte at a time would never trip it;
- a cap on each reply body, in httpx2's response hook: an announced length over the cap is
  refused before the body is read, the body is counted as it comes, and a compressed body
  (never asked for) is refused, so the cap counts what is held in memory;
- no redirects followed (the SDK reads a 3xx as a status: an error that names its Location);
- no proxy but the one `proxy_for` chooses from the environment, as for the `openai` backend;
- a login in --base-url sent as HTTP Basic auth, a key checked before it goes in a header,
  and, for Azure OpenAI, the key as `api-key` and the URL's query (`?api-version=...`) sent
  with every request (in the base URL, the SDK would glue the request's path onto it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx2
import openai

from evol.errors import EndpointUnreachable, TransientBackendError, Unreachable, UsageError
from evol.llm.openai_api import DEFAULT_BASE_URL, auth_headers, body_message, status_error
from evol.llm.protocol import BackendSettings
from evol.llm.transport import proxy_for, unreachable_proxy, url_login
from evol.secrets import check_api_key, display_url
from evol.version import __version__

T = TypeVar("T")
# What a body over the cap is for its caller: (the size announced or read so far, announced?).
TooBig = Callable[[int, bool], Exception]


class SdkEndpoint:
    """One --base-url reached through the openai SDK: its clients and its errors."""

    def __init__(self, settings: BackendSettings):
        base_url = settings.base_urls[0] if settings.base_urls else DEFAULT_BASE_URL
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--base-url {display_url(base_url)}: not an http:// or https:// URL")
        self.where = display_url(base_url)
        self.key_source = settings.api_key_source
        self.timeout = settings.timeout
        self.max_response_bytes = settings.max_response_bytes
        self.secrets = settings.secrets()
        key = settings.api_key.get_secret_value() if settings.api_key else None
        if key is not None:
            check_api_key(key, self.key_source)
        # A login's header replaces the key's: the SDK puts its default headers after its own.
        base_url, login = url_login(base_url, key, self.key_source)
        parts = urlsplit(base_url)
        self.base_url = parts._replace(query="", fragment="").geturl()
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.proxy = proxy_for(base_url)
        self.answered = False  # has this server ever sent a response in this run?
        # Local servers (vLLM, llama.cpp, Ollama) accept any key, but the SDK insists on one.
        self._key = key or "no-key"
        self._headers = {"User-Agent": f"evol/{__version__}", **login}
        # Per request, the only place the SDK lets its own Authorization header be left out.
        self.request_headers: dict[str, Any] = {}
        if key is not None and "api-key" in auth_headers(base_url, key):
            self._headers["api-key"] = key
            self.request_headers = {"Authorization": openai.Omit()}

    def client(
        self, *, timeout: float, cap: int | None = None, too_big: TooBig | None = None
    ) -> openai.AsyncOpenAI:
        """An SDK client whose replies hold at most `cap` bytes (--max-response-mb unless
        given), `too_big` saying why one was refused."""
        cap = self.max_response_bytes if cap is None else cap
        return openai.AsyncOpenAI(
            api_key=self._key,
            base_url=self.base_url,
            max_retries=0,
            timeout=timeout,
            default_headers=self._headers,
            default_query=self.query,
            http_client=self._http_client(cap, too_big or self._reply_too_big(cap)),
        )

    async def call(
        self,
        send: Callable[[], Awaitable[T]],
        *,
        deadline: float | None = None,
        model: str = "",
        doing: str = "",
    ) -> T:
        """`send()` within one deadline (--timeout unless given), its failures as evol's
        errors; `doing` names the call in a timeout's message."""
        deadline = deadline or self.timeout
        try:
            async with asyncio.timeout(deadline):
                return await send()
        except TimeoutError:
            raise self._timed_out(deadline, doing) from None
        except openai.APIError as error:
            raise self.error(error, model=model, deadline=deadline, doing=doing) from None

    def error(
        self, error: openai.APIError, *, model: str, deadline: float, doing: str = ""
    ) -> Exception:
        """The evol error for what the SDK raised: a timeout or a broken reply is worth a
        retry; no connection at all stops the run unless the server answered before (it may
        be restarting); a status is read as the `openai` backend reads it."""
        if isinstance(error.__cause__, TransientBackendError):  # our cap, raised in the hook
            return error.__cause__
        if isinstance(error, openai.APITimeoutError):
            return self._timed_out(deadline, doing)
        if isinstance(error, openai.APIConnectionError):
            cause = self.secrets.cut(str(error.__cause__ or error))
            if self.proxy is not None and isinstance(
                error.__cause__, httpx2.ConnectError | httpx2.ProxyError
            ):
                return unreachable_proxy(self.proxy, self.where, cause, answered=self.answered)
            why = f"cannot reach {self.where}: {cause}"
            if not isinstance(error.__cause__, httpx2.ConnectError):
                return TransientBackendError(why)  # connected, then the reply broke off
            if self.answered:  # it worked before: it may be restarting
                return Unreachable(why)
            return EndpointUnreachable(f"{why}; check --base-url")
        if isinstance(error, openai.APIResponseValidationError):
            return TransientBackendError(f"{self.where} sent a malformed reply")
        if not isinstance(error, openai.APIStatusError):
            return TransientBackendError(f"{self.where}: {self.secrets.cut(error.message)}")
        message = body_message(error.body, error.message, self.secrets)
        status, headers = error.status_code, error.response.headers
        return status_error(
            self.where, self.key_source, model, status, message, headers, self.secrets
        )

    def _timed_out(self, deadline: float, doing: str) -> TransientBackendError:
        return TransientBackendError(f"{self.where} timed out after {deadline:g}s{doing}")

    def _reply_too_big(self, cap: int) -> TooBig:
        def too_big(size: int, announced: bool) -> Exception:
            if announced:
                return TransientBackendError(
                    f"{self.where} announced a reply of {size:,} bytes, over the "
                    f"{cap:,}-byte cap (--max-response-mb)"
                )
            return TransientBackendError(
                f"{self.where} sent a reply of over {cap:,} bytes (--max-response-mb)"
            )

        return too_big

    def _http_client(self, cap: int, too_big: TooBig) -> httpx2.AsyncClient:
        """httpx2 as the SDK would build it, with redirects off, our proxy and a body cap."""
        proxy = None
        if self.proxy is not None:
            login = self.proxy.authorization
            proxy = httpx2.Proxy(
                self.proxy.url, headers={"Proxy-Authorization": login} if login else None
            )

        async def cap_body(response: httpx2.Response) -> None:
            self.answered = True
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > cap:
                raise too_big(int(length), True)
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                # We ask for identity, so the cap below counts what the SDK will hold.
                raise TransientBackendError(
                    f"{self.where} sent a compressed reply it was not asked for"
                )
            response.stream = CappedStream(response.stream, cap, too_big)

        return httpx2.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            proxy=proxy,
            headers={"Accept-Encoding": "identity"},
            event_hooks={"response": [cap_body]},
            limits=httpx2.Limits(max_connections=None, max_keepalive_connections=100),
        )


class CappedStream(httpx2.AsyncByteStream):
    """A response body that raises `too_big` once more than `cap` bytes have come."""

    def __init__(self, stream: httpx2.AsyncByteStream, cap: int, too_big: TooBig):
        self._stream, self._cap, self._too_big = stream, cap, too_big

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._stream:
            size += len(chunk)
            if size > self._cap:
                raise self._too_big(size, False)
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()
