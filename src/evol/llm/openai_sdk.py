"""The `openai-sdk` backend: OpenAI-compatible chat through the official SDK.

Slower than the `openai` backend (the SDK's transport costs about 2 ms of CPU a call), but it
goes wherever the SDK goes. It gets the same limits as `openai`: `max_retries=0` (the engine
retries), one deadline for the whole request (the SDK's own timeout is per read, so a body
that drips a byte at a time never trips it), a cap on the reply body, no redirects followed,
the environment's proxy chosen as for `openai`, and the same reply schema and error mapping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

from evol.errors import EndpointUnreachable, TransientBackendError, Unreachable
from evol.llm.openai_api import (
    DEFAULT_BASE_URL,
    ResponseFormats,
    body_message,
    parse_reply,
    served_model,
    status_error,
)
from evol.llm.protocol import BackendSettings, Capabilities, Completion, LLMRequest, Message
from evol.llm.transport import proxy_for, unreachable_proxy, url_login
from evol.secrets import check_api_key, display_url


class OpenAISDKBackend:
    """Chat completions through the official SDK."""

    capabilities = Capabilities(needs_key=True)

    def __init__(self, settings: BackendSettings):
        base_url = settings.base_urls[0] if settings.base_urls else DEFAULT_BASE_URL
        self.where = display_url(base_url)
        self.key_source = settings.api_key_source
        self.timeout = settings.timeout
        # Local servers (vLLM, llama.cpp, Ollama) accept any key, but the SDK insists on one.
        self.key = settings.api_key.get_secret_value() if settings.api_key else None
        self.secrets = settings.secrets()
        if self.key is not None:
            check_api_key(self.key, self.key_source)
        # A login's header replaces the placeholder key's: the SDK puts its own headers last.
        self.base_url, login = url_login(base_url, self.key, self.key_source)
        self.proxy = proxy_for(self.base_url)
        self.answered = False  # has this server ever sent a response in this run?
        self.formats = ResponseFormats()
        self.client = openai.AsyncOpenAI(
            api_key=self.key or "no-key",
            base_url=self.base_url,
            max_retries=0,
            timeout=settings.timeout,
            default_headers=login,
            http_client=_http_client(self, settings.max_response_bytes),
        )

    async def complete(self, request: LLMRequest) -> Completion:
        reply = await self.formats.send(
            request.params, lambda options: self._chat(request.model, request.messages, options)
        )
        return parse_reply(reply, self.where, self.secrets)

    async def _chat(self, model: str, messages: list[Message], options: dict[str, Any]) -> bytes:
        try:
            async with asyncio.timeout(self.timeout):
                response = await self.client.chat.completions.with_raw_response.create(
                    model=model, messages=messages, **options
                )
                return await response.http_response.aread()
        except TimeoutError:
            raise TransientBackendError(f"{self.where} timed out after {self.timeout:g}s") from None
        except openai.APIError as error:
            raise self._translate(error, model) from None

    async def default_model(self) -> str:
        """The server's model when it serves exactly one (vLLM, llama.cpp); else ask for --model."""
        try:
            async with asyncio.timeout(self.timeout):
                # Read raw, as a completion is: the SDK's own parse trips on a list off-schema.
                response = await self.client.models.with_raw_response.list()
                raw = await response.http_response.aread()
        except TimeoutError:
            raise TransientBackendError(f"{self.where} timed out after {self.timeout:g}s") from None
        except openai.APIError as error:
            raise self._translate(error, "") from None
        return served_model(raw, self.where, self.secrets)

    async def aclose(self) -> None:
        await self.client.close()

    def _translate(self, error: openai.APIError, model: str) -> Exception:
        if isinstance(error.__cause__, TransientBackendError):  # our cap, raised in the hook
            return error.__cause__
        if isinstance(error, openai.APITimeoutError):
            return TransientBackendError(f"{self.where} timed out after {self.timeout:g}s")
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


def _http_client(backend: OpenAISDKBackend, max_response_bytes: int) -> httpx2.AsyncClient:
    """httpx2 as the SDK would build it, with redirects off, our proxy choice and a body cap."""
    where = backend.where
    proxy = backend.proxy
    proxy_url = None
    if proxy is not None:
        proxy_url = httpx2.Proxy(
            proxy.url, auth=(proxy.auth.login, proxy.auth.password) if proxy.auth else None
        )

    async def cap_body(response: httpx2.Response) -> None:
        backend.answered = True
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_response_bytes:
            raise TransientBackendError(
                f"{where} announced a reply of {int(length):,} bytes, over the "
                f"{max_response_bytes:,}-byte cap (--max-response-mb)"
            )
        if response.headers.get("content-encoding", "identity").lower() != "identity":
            # We ask for identity, so the cap below counts what the SDK will hold in memory.
            raise TransientBackendError(f"{where} sent a compressed reply it was not asked for")
        response.stream = _CappedStream(response.stream, max_response_bytes, where)

    return httpx2.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        proxy=proxy_url,
        headers={"Accept-Encoding": "identity"},
        event_hooks={"response": [cap_body]},
        limits=httpx2.Limits(max_connections=None, max_keepalive_connections=100),
    )


class _CappedStream(httpx2.AsyncByteStream):
    """A response body that raises once more than `cap` bytes have come."""

    def __init__(self, stream: httpx2.AsyncByteStream, cap: int, where: str):
        self._stream, self._cap, self._where = stream, cap, where

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self._stream:
            size += len(chunk)
            if size > self._cap:
                raise TransientBackendError(
                    f"{self._where} sent a reply of over {self._cap:,} bytes (--max-response-mb)"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._stream.aclose()
