"""The `openai` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp).

It POSTs `/chat/completions` through `evol.llm.transport` (aiohttp, every limit set). A reply
is untrusted input: it is validated against the chat-completion schema, and one that does not
fit is a transient error for that request, never a crashed run. Failures map onto the errors
the engine acts on; `status_error` and `parse_reply` are shared with the `openai-sdk` backend
so that both read a server alike. Every error text is redacted of the key.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError as SchemaError

from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    ModelNotFound,
    RateLimited,
    Redirected,
    TransientBackendError,
    UsageError,
)
from evol.llm import DEFAULT_BASE_URL, BackendSettings, Completion, GenerationParams, Message
from evol.llm.transport import JsonTransport
from evol.secrets import check_api_key, display_url, redact

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
        base_url = (settings.base_urls[0] if settings.base_urls else DEFAULT_BASE_URL).rstrip("/")
        self.where = display_url(base_url)
        self.key_source = settings.api_key_source
        self.key = settings.api_key.get_secret_value() if settings.api_key else None
        headers = {"Content-Type": "application/json"}
        if self.key is not None:
            check_api_key(self.key, self.key_source)
            headers |= auth_headers(base_url, self.key)
        self.http = JsonTransport(
            base_url,
            headers,
            timeout=settings.timeout,
            max_response_bytes=settings.max_response_bytes,
        )

    async def complete(
        self, messages: list[Message], *, model: str, params: GenerationParams
    ) -> Completion:
        body = orjson.dumps({"model": model, "messages": messages, **params.request})
        reply = await self._request("POST", "/chat/completions", model, body)
        return parse_reply(reply, self.where)

    async def default_model(self) -> str:
        """The server's model when it serves exactly one (vLLM, llama.cpp); else ask for --model."""
        reply = await self._request("GET", "/models", "", None)
        try:
            listing = _ModelList.model_validate_json(reply)
        except SchemaError:
            raise TransientBackendError(f"{self.where} sent a malformed model list") from None
        names = [entry.id for entry in listing.data]
        if len(names) == 1:
            return names[0]
        offered = f": it serves {', '.join(names[:10])}" if names else ""
        raise UsageError(f"name a model with --model{offered}")

    async def aclose(self) -> None:
        await self.http.close()

    async def _request(self, method: str, path: str, model: str, body: bytes | None) -> bytes:
        response = await self.http.request(method, path, body)
        if response.status >= 400 or response.status < 200:
            message = redact(body_message(_json_or_text(response.body), ""), self.key)
            raise status_error(
                self.where, self.key_source, model, response.status, message, response.headers
            )
        return response.body


# -- the reply schema: what a chat completion must look like to be used --------------------


class _Schema(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Alternative(_Schema):
    token: StrictStr
    logprob: StrictFloat | StrictInt


class _TokenLogprob(_Alternative):
    top_logprobs: list[_Alternative] = Field(default_factory=list)


class _Logprobs(_Schema):
    content: list[_TokenLogprob] | None = None


class _Message(_Schema):
    content: StrictStr | None = None
    refusal: StrictStr | None = None


class _Choice(_Schema):
    message: _Message
    finish_reason: StrictStr | None = None
    logprobs: _Logprobs | None = None


class _Usage(_Schema):
    prompt_tokens: StrictInt = Field(0, ge=0)
    completion_tokens: StrictInt = Field(0, ge=0)


class _ChatReply(_Schema):
    choices: list[_Choice] = Field(min_length=1)
    usage: _Usage | None = None


class _ModelEntry(_Schema):
    id: StrictStr


class _ModelList(_Schema):
    data: list[_ModelEntry]


def parse_reply(raw: bytes, where: str) -> Completion:
    """A chat-completion body as a `Completion`; anything off-schema is a transient error."""
    try:
        reply = _ChatReply.model_validate_json(raw)
    except SchemaError as error:
        first = error.errors()[0]
        place = ".".join(str(part) for part in first["loc"]) or "the body"
        raise TransientBackendError(
            f"{where} sent a reply that is not a chat completion ({place}: {first['msg']})"
        ) from None
    choice = reply.choices[0]
    if choice.message.content is None:
        if choice.message.refusal:  # OpenAI's structured refusal: no retry will change it
            raise BackendError(f"{where} refused the request: {choice.message.refusal[:300]}")
        raise TransientBackendError(f"{where} sent a reply with no message content")
    usage = reply.usage or _Usage()
    # Every field was validated by the schema above: build it without validating again.
    return Completion.model_construct(
        text=choice.message.content,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        finish_reason=choice.finish_reason,
        top_logprobs=_top_logprobs(choice.logprobs),
    )


def _top_logprobs(logprobs: _Logprobs | None) -> list[dict[str, float]] | None:
    if logprobs is None or logprobs.content is None:
        return None
    return [
        {token.token: float(token.logprob)}
        | {alt.token: float(alt.logprob) for alt in token.top_logprobs}
        for token in logprobs.content
    ]


# -- errors ---------------------------------------------------------------------------------


def auth_headers(base_url: str, key: str) -> dict[str, str]:
    """Bearer auth, except for Azure OpenAI resources, which take the key as `api-key`."""
    if (urlsplit(base_url).hostname or "").endswith(_AZURE_HOSTS):
        return {"api-key": key}
    return {"Authorization": f"Bearer {key}"}


def status_error(
    where: str, key_source: str, model: str, status: int, message: str, headers: Mapping[str, str]
) -> Exception:
    """The error an HTTP status means for a run: retry it, stop the run, or fail the item."""
    if 300 <= status < 400:
        location = display_url(headers.get("location", "(no Location header)"))
        return Redirected(
            f"{where} redirects to {location} ({status}): point --base-url at the final address"
        )
    if status in (401, 403):
        return AuthenticationFailed(f"authentication failed for {where}: check {key_source}")
    if status == 404:
        return ModelNotFound(
            f"{where} has no model {model!r} ({message or 'not found'}); check --model, "
            "and that --base-url ends in /v1"
        )
    if status == 429:
        return RateLimited(f"{where} answered 429: {message}", retry_after(headers))
    if status in _TRANSIENT_STATUS or status >= 500 or status < 200:
        return TransientBackendError(f"{where} answered {status}: {message}", retry_after(headers))
    if any(hint in message.lower() for hint in _CONTEXT_HINTS):
        return ContextLengthExceeded(f"{where}: {message}")
    return BackendError(f"{where} rejected the request ({status}): {message}")


def body_message(body: object, fallback: str) -> str:
    """The human message in an error body: OpenAI's {"error": {"message": ...}} and variants."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:300]
        if isinstance(inner, str):
            return inner[:300]
    if isinstance(body, str) and body.strip():
        return body.strip()[:300]
    return fallback


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a server asked us to wait (retry-after-ms, or Retry-After in seconds or as a
    date), or None when it asked for nothing we can read. Never negative; it may be huge or
    infinite, which the retry policy bounds by --retry-max-wait."""
    if (millis := headers.get("retry-after-ms")) is not None and (
        seconds := _seconds(millis)
    ) is not None:
        return seconds / 1000
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _seconds(value)) is not None:
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return None if math.isnan(value) else max(0.0, value)


def _json_or_text(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")
