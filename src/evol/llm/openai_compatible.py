"""The `openai` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp).

It POSTs `/chat/completions` through `evol.llm.http`: the SDK's own transport costs about 4 ms
of CPU a call, which caps one process near 250 calls/s; this costs 0.06 ms. Failures map onto
the errors the engine acts on (transient ones are retried there, the rest fail fast with a
remedy); `status_error` is shared with the `openai-sdk` backend so both read a server alike.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    ModelNotFound,
    RateLimited,
    TransientBackendError,
    UsageError,
)
from evol.llm import BackendSettings, Completion, GenerationParams, Message, display_url
from evol.llm.http import ConnectionFailed, connect

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Servers word it differently: OpenAI "maximum context length", vLLM "context length",
# llama.cpp "exceeds the available context size", others "too many tokens".
_CONTEXT_HINTS = (
    "context length",
    "context_length",
    "context size",
    "context window",
    "too many tokens",
)
_TRANSIENT_STATUS = {408, 409, 425}
_AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com", ".services.ai.azure.com")


class OpenAICompatibleBackend:
    """Chat completions over HTTP, one pool of keep-alive connections for the run."""

    def __init__(self, settings: BackendSettings):
        self.base_url = (settings.base_urls[0] if settings.base_urls else DEFAULT_BASE_URL).rstrip(
            "/"
        )

        self.where = display_url(self.base_url)
        self.key_source = settings.api_key_source
        self.timeout = settings.timeout
        headers = {"Content-Type": "application/json"}
        if settings.api_key:
            headers |= auth_headers(self.base_url, settings.api_key.get_secret_value())
        try:
            self._client = connect(self.base_url, headers)
        except ValueError as error:
            raise UsageError(f"--base-url {self.where}: {error}") from None
        except UnicodeEncodeError:
            raise UsageError(
                f"{self.key_source} holds characters an HTTP header cannot carry"
            ) from None
        self._options: dict[GenerationParams, dict[str, float | int]] = {}

    async def complete(
        self, messages: list[Message], *, model: str, params: GenerationParams
    ) -> Completion:
        options = self._options.get(params)
        if options is None:  # one set of params per run: skip pydantic's dump on every call
            options = self._options[params] = params.to_request()
        body = orjson.dumps({"model": model, "messages": messages, **options})
        data = await self._request("POST", "/chat/completions", model, body)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"]
            usage = data.get("usage") or {}
            if not isinstance(text, str):
                raise TypeError(text)
            return Completion(
                text=text,
                prompt_tokens=usage.get("prompt_tokens") or 0,
                completion_tokens=usage.get("completion_tokens") or 0,
                finish_reason=choice.get("finish_reason"),
            )
        except (KeyError, IndexError, TypeError, AttributeError):
            raise TransientBackendError(f"{self.where} sent a reply with no message") from None

    async def default_model(self) -> str:
        """The server's model when it serves exactly one (vLLM, llama.cpp); else ask for --model."""
        data = await self._request("GET", "/models", "", None)
        names = [entry.get("id") for entry in data.get("data", []) if isinstance(entry, dict)]
        if len(names) == 1:
            return names[0]
        offered = f": it serves {', '.join(map(str, names[:10]))}" if names else ""
        raise UsageError(f"name a model with --model{offered}")

    async def aclose(self) -> None:
        await self._client.close()

    async def _request(self, method: str, path: str, model: str, body: bytes | None) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.request(method, path, body)
        except TimeoutError:
            raise TransientBackendError(f"{self.where} timed out after {self.timeout:g}s") from None
        except ConnectionFailed as error:
            raise TransientBackendError(f"cannot reach {self.where}: {error}") from None
        if response.status >= 400:
            raise status_error(
                self.where,
                self.key_source,
                model,
                response.status,
                body_message(_json_or_text(response.body), ""),
                response.headers,
            )
        try:
            return orjson.loads(response.body)
        except orjson.JSONDecodeError:
            raise TransientBackendError(f"{self.where} sent a malformed reply") from None


def auth_headers(base_url: str, key: str) -> dict[str, str]:
    """Bearer auth, except for Azure OpenAI resources, which take the key as `api-key`."""
    if (urlsplit(base_url).hostname or "").endswith(_AZURE_HOSTS):
        return {"api-key": key}
    return {"Authorization": f"Bearer {key}"}


def status_error(
    where: str, key_source: str, model: str, status: int, message: str, headers: Mapping[str, str]
) -> Exception:
    """The error an HTTP status means for a run: retry it, stop the run, or fail the item."""
    if status in (401, 403):
        return AuthenticationFailed(f"authentication failed for {where}: check {key_source}")
    if status == 404:
        return ModelNotFound(
            f"{where} has no model {model!r} ({message or 'not found'}); check --model, "
            "and that --base-url ends in /v1"
        )
    if status == 429:
        return RateLimited(f"{where} answered 429: {message}", retry_after(headers))
    if status in _TRANSIENT_STATUS or status >= 500:
        return TransientBackendError(f"{where} answered {status}: {message}", retry_after(headers))
    if any(hint in message.lower() for hint in _CONTEXT_HINTS):
        return ContextLengthExceeded(f"{where}: {message}")
    return BackendError(f"{where} rejected the request ({status}): {message}")


def body_message(body: object, fallback: str) -> str:
    """The human message in an error body: OpenAI's {"error": {"message": ...}} and variants."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(inner, str):
            return inner
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return fallback


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a server asked us to wait: retry-after-ms, or Retry-After in seconds or as a date."""
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _json_or_text(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")
