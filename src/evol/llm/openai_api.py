"""The OpenAI chat-completions API as evol reads it: the reply's schema, and what an HTTP status
means for a run (retry it, stop the run, or eliminate the step).

Shared by every backend that speaks this API (`openai`, `openai-sdk`, the batch backend), so
that they all read a server alike. A reply is untrusted input: one that does not fit the
schema is a transient error for that request, never a crashed run.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from pydantic import ValidationError as SchemaError  # noqa: F401 (read by the backends)

from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    GarbledReply,
    ModelNotFound,
    RateLimited,
    TransientBackendError,
    UsageError,
)
from evol.llm.protocol import Completion, GenerationParams
from evol.llm.transport import DEFAULT_MAX_RESPONSE_BYTES, redirected
from evol.secrets import Secrets

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


# No reply has 2**53 tokens; a larger figure could not even be written as a JSON number that
# every reader takes.
_MAX_TOKENS = 2**53


class _Usage(_Schema):
    prompt_tokens: StrictInt = Field(0, ge=0, le=_MAX_TOKENS)
    completion_tokens: StrictInt = Field(0, ge=0, le=_MAX_TOKENS)


class _ChatReply(_Schema):
    choices: list[_Choice] = Field(min_length=1)
    usage: _Usage | None = None


class _ModelEntry(_Schema):
    id: StrictStr


class _ModelList(_Schema):
    data: list[_ModelEntry]


@dataclass(frozen=True)
class ReplyReader:
    """What reading a reply that came another way than evol's own HTTP (a Batch API row, a Ray
    row) needs: where it came from (for messages), the variable its key came from (for a
    401's remedy), the secrets no message may show, and the most bytes a reply may hold
    (--max-response-mb, as for a live reply)."""

    where: str
    key_source: str
    secrets: Secrets
    max_reply_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


def parse_reply(raw: bytes, where: str, secrets: Secrets) -> Completion:
    """A chat-completion body as a `Completion`; anything off-schema is a transient error."""
    try:
        reply = _ChatReply.model_validate_json(raw)
    except SchemaError as error:
        first = error.errors()[0]
        place = ".".join(str(part) for part in first["loc"]) or "the body"
        raise GarbledReply(
            f"{where} sent a reply that is not a chat completion ({place}: {first['msg']})"
        ) from None
    choice = reply.choices[0]
    usage = reply.usage or _Usage()
    several = len(reply.choices) > 1
    if several and any(c.message.content is not None for c in reply.choices):
        # Several answers to one request (`n`): each is an answer the run may keep, and one
        # that holds no text (a refusal, nothing) is a failed answer, not a failed request.
        texts = [c.message.content or "" for c in reply.choices]
    else:
        texts = [_content(c, where, secrets) for c in reply.choices]
    # Validating these plain fields again in pydantic-core costs less than model_construct's
    # Python loop over them: parse_reply takes 4.0 us instead of 5.1 for a chat reply.
    return Completion(
        text=texts[0],
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        finish_reason=choice.finish_reason,
        top_logprobs=_top_logprobs(choice.logprobs),
        choices=[
            (t, c.finish_reason if c.message.content is not None else _NO_TEXT)
            for t, c in zip(texts, reply.choices, strict=True)
        ]
        if several
        else [],
    )


# The finish reason given to a choice of several that came with no text.
_NO_TEXT = "no_text"


def _content(choice: _Choice, where: str, secrets: Secrets) -> str:
    """A choice's text; a refusal fails the request for good, no text at all for now."""
    if choice.message.content is not None:
        return choice.message.content
    if choice.message.refusal:  # OpenAI's structured refusal: no retry will change it
        refusal = secrets.cut(choice.message.refusal)
        raise BackendError(f"{where} refused the request: {refusal}")
    raise TransientBackendError(f"{where} sent a reply with no message content")


def _top_logprobs(logprobs: _Logprobs | None) -> list[dict[str, float]] | None:
    if logprobs is None or logprobs.content is None:
        return None
    return [
        {token.token: _float(token.logprob)}
        | {alt.token: _float(alt.logprob) for alt in token.top_logprobs}
        for token in logprobs.content
    ]


def _float(value: float) -> float:
    """A log-probability as a float; an integer too large for one is no probability (NaN,
    which readers skip like any value that is not a finite number <= 0)."""
    try:
        return float(value)
    except OverflowError:
        return math.nan


# -- errors ---------------------------------------------------------------------------------


_Sent = TypeVar("_Sent")
# How servers name a response_format they do not take (OpenAI, vLLM, llama.cpp, SGLang).
_FORMAT_HINTS = ("response_format", "json_schema", "guided_json", "grammar", "structured output")


def refuses_response_format(error: Exception) -> bool:
    """A request rejected for its `response_format`: a 4xx that names it (an older server, or
    one built without structured output), or a 5xx that names the field itself
    (llama-cpp-python's server answers 500 to a `json_schema` it does not know)."""
    message = str(error).lower()
    if type(error) is BackendError:
        return any(hint in message for hint in _FORMAT_HINTS)
    return type(error) is TransientBackendError and "response_format" in message


class ResponseFormats:
    """How one endpoint takes each schema (by its name): OpenAI's `json_schema`; else
    `json_object` with the schema, as llama-cpp-python's server spells it; else no format at
    all (the reply is read as prose). Each step down is learnt from one refusal, so a
    refusal is paid for once per endpoint, role and step."""

    def __init__(self) -> None:
        self.steps: dict[str, int] = {}  # schema name -> the step this endpoint takes

    async def send(
        self, params: GenerationParams, send: Callable[[dict[str, Any]], Awaitable[_Sent]]
    ) -> _Sent:
        """`send(options)` with `params`' options in the form this endpoint takes; a refusal
        of the form is sent again one step down. A step is remembered only once a request at
        it is answered: a 400 for another reason (whose message merely holds "grammar") is
        refused again without a format, and turns no schema off."""
        name = _schema_name(params.request)
        step = self.steps.get(name, 0) if name is not None else 0
        while True:
            try:
                answered = await send(_at_step(params.request, step))
            except (BackendError, TransientBackendError) as error:
                if name is None or step >= _NO_FORMAT or not refuses_response_format(error):
                    raise
                step += 1
                continue
            # Only a refusal moves `step` past where this endpoint stood.
            if name is not None and step > self.steps.get(name, 0):
                self.steps[name] = step
            return answered


_NO_FORMAT = 2  # the steps: 0 json_schema, 1 json_object with the schema, 2 none


def _schema_name(options: Mapping[str, Any]) -> str | None:
    form = options.get("response_format")
    if not isinstance(form, dict):
        return None
    schema = form.get("json_schema")
    return str(schema.get("name", "")) if isinstance(schema, dict) else str(form.get("type"))


def _at_step(options: dict[str, Any], step: int) -> dict[str, Any]:
    """`options` with its response_format as step `step` of `ResponseFormats` spells it."""
    if step == 0 or "response_format" not in options:
        return options
    if step >= _NO_FORMAT:
        return {name: value for name, value in options.items() if name != "response_format"}
    return options | {"response_format": json_object_format(options["response_format"])}


def json_object_format(form: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's json_schema `response_format` in llama-cpp-python's spelling (`json_object`
    with the schema), which it turns into a grammar: the model can only write JSON that the
    schema allows."""
    schema = (form.get("json_schema") or {}).get("schema")
    return {"type": "json_object", **({"schema": schema} if schema else {})}


def auth_headers(base_url: str, key: str) -> dict[str, str]:
    """Bearer auth, except for Azure OpenAI resources, which take the key as `api-key`."""
    if (urlsplit(base_url).hostname or "").endswith(_AZURE_HOSTS):
        return {"api-key": key}
    return {"Authorization": f"Bearer {key}"}


def status_error(
    where: str,
    key_source: str,
    model: str,
    status: int,
    message: str,
    headers: Mapping[str, str],
    secrets: Secrets,
) -> Exception:
    """The error an HTTP status means for a run: retry it, stop the run, or fail the item.
    `message` comes redacted; the Location of a redirect is redacted of `secrets` here."""
    if 300 <= status < 400:
        return redirected(where, headers.get("location"), status, secrets)
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


def body_message(body: object, fallback: str, secrets: Secrets) -> str:
    """The human message in an error body (OpenAI's {"error": {"message": ...}} and variants),
    redacted of `secrets` and of credentials, then cut to a readable length."""
    message = fallback
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            message = inner["message"]
        elif isinstance(inner, str):
            message = inner
        elif (detail := _detail(body)) is not None:
            message = detail
    elif isinstance(body, str) and body.strip():
        message = body
    return secrets.cut(message)


def _detail(body: dict[Any, Any]) -> str | None:
    """FastAPI's `{"detail": ...}`: a message, or pydantic's errors, each with where it is
    ("body.response_format: Extra inputs are not permitted")."""
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail
    if not isinstance(detail, list):
        return None
    errors = [error for error in detail[:_DETAIL_ERRORS] if isinstance(error, dict)]
    shown = [
        f"{'.'.join(map(str, error.get('loc') or []))}: {error.get('msg')}" for error in errors
    ]
    return "; ".join(shown) or None


_DETAIL_ERRORS = 5


def served_model(raw: bytes, where: str, secrets: Secrets) -> str:
    """The model a server offers in its /models reply `raw` when it offers exactly one (vLLM,
    llama.cpp); else a UsageError asking for --model, naming (sanitised, redacted) what it
    serves. An id that holds a secret is never used: it would be printed and kept in run.json."""
    try:
        names = [entry.id for entry in _ModelList.model_validate_json(raw).data]
    except SchemaError:
        raise TransientBackendError(f"{where} sent a malformed model list") from None
    shown = [secrets.cut(name, 100) for name in names]
    if len(names) == 1 and secrets.found_in(names[0]):
        raise UsageError(
            f"{where} serves one model, {shown[0]!r}, whose id holds the API key or a "
            "password: name the model with --model"
        )
    if len(names) == 1 and names[0].isprintable():
        return names[0]
    if len(names) == 1:
        raise UsageError(
            f"{where} serves one model, {shown[0]!r}, whose id holds control characters: "
            "name the model with --model"
        )
    offered = f": it serves {', '.join(shown[:10])}" if names else ""
    raise UsageError(f"name a model with --model{offered}")


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


def json_or_text(raw: bytes) -> object:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", errors="replace")
