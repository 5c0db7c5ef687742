"""The `openai` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp).

The SDK is built with `max_retries=0` and an explicit timeout; its errors are mapped onto the
ones the engine acts on: transient ones are retried there, the rest fail fast with a remedy.
"""

from __future__ import annotations

import email.utils
import time

import openai

from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    ModelNotFound,
    TransientBackendError,
    UsageError,
)
from evol.llm import BackendSettings, Completion, GenerationParams, Message, display_url

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
_TRANSIENT_STATUS = {408, 409, 425, 429}


class OpenAICompatibleBackend:
    """Chat completions over HTTP through the official SDK."""

    def __init__(self, settings: BackendSettings):
        if len(settings.base_urls) > 1:
            raise UsageError("the openai backend takes one --base-url for now")
        self.base_url = settings.base_urls[0] if settings.base_urls else DEFAULT_BASE_URL
        self.key_source = settings.api_key_source
        # Local servers (vLLM, llama.cpp, Ollama) accept any key, but the SDK insists on one.
        key = settings.api_key.get_secret_value() if settings.api_key else "no-key"
        self.client = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, max_retries=0, timeout=settings.timeout
        )
        self.timeout = settings.timeout

    async def complete(
        self, messages: list[Message], *, model: str, params: GenerationParams
    ) -> Completion:
        try:
            response = await self.client.chat.completions.create(
                model=model, messages=messages, **params.to_request()
            )
        except openai.APIError as error:
            raise self._translate(error, model) from None
        except ValueError:  # the SDK lets json.JSONDecodeError through for a garbled body
            raise TransientBackendError(
                f"{display_url(self.base_url)} sent a malformed reply"
            ) from None
        choices = getattr(response, "choices", None)
        if not choices or not isinstance(getattr(choices[0].message, "content", None), str):
            raise TransientBackendError(
                f"{display_url(self.base_url)} sent a reply with no message"
            )
        usage = response.usage
        return Completion(
            text=choices[0].message.content,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            finish_reason=choices[0].finish_reason,
        )

    async def default_model(self) -> str:
        """The server's model when it serves exactly one (vLLM, llama.cpp); else ask for --model."""
        try:
            page = await self.client.models.list()
            names = [model.id async for model in page]
        except openai.APIError as error:
            raise self._translate(error, "") from None
        if len(names) == 1:
            return names[0]
        offered = f": it serves {', '.join(names[:10])}" if names else ""
        raise UsageError(f"name a model with --model{offered}")

    async def aclose(self) -> None:
        await self.client.close()

    def _translate(self, error: openai.APIError, model: str) -> Exception:
        where = display_url(self.base_url)
        if isinstance(error, openai.APITimeoutError):
            return TransientBackendError(f"{where} timed out after {self.timeout:g}s")
        if isinstance(error, openai.APIConnectionError):
            return TransientBackendError(f"cannot reach {where}: {error.__cause__ or error}")
        if isinstance(error, openai.APIResponseValidationError):
            return TransientBackendError(f"{where} sent a malformed reply")
        if not isinstance(error, openai.APIStatusError):
            return TransientBackendError(f"{where}: {error.message}")
        status, message = error.status_code, _message(error)
        if status in (401, 403):
            return AuthenticationFailed(
                f"authentication failed for {where}: check {self.key_source}"
            )
        if status == 404:
            return ModelNotFound(
                f"{where} has no model {model!r} ({message}); check --model, "
                "and that --base-url ends in /v1"
            )
        if status in _TRANSIENT_STATUS or status >= 500:
            return TransientBackendError(
                f"{where} answered {status}: {message}", _retry_after(error)
            )
        if any(hint in message.lower() for hint in _CONTEXT_HINTS):
            return ContextLengthExceeded(f"{where}: {message}")
        return BackendError(f"{where} rejected the request ({status}): {message}")


def _message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(inner, str):
            return inner
    return error.message


def _retry_after(error: openai.APIStatusError) -> float | None:
    headers = error.response.headers
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
