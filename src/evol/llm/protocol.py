"""What a backend is: a small async Protocol, and the types a request and a reply are made of.

A backend only turns an `LLMRequest` into a `Completion` and maps its failures onto
`evol.errors`; retries, rate limits, concurrency and the journal live once, in
`evol.llm.dispatch`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypedDict, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from evol.secrets import Secrets


class Message(TypedDict):
    role: str
    content: str


class GenerationParams(BaseModel):
    """Sampling options sent with every request; None means the provider's default (not sent)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    # Scorers read a digit's probability from these (OpenAI's `logprobs`/`top_logprobs`).
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # A JSON schema the reply must follow (OpenAI's json_schema form), set by the engine for
    # the judge model's calls; not a user option, so not in run.json's config.
    response_format: dict[str, Any] | None = Field(None, exclude=True)
    # Choices asked for in one request (OpenAI's `n`), set by the engine for the further
    # answers of --answer-n; not a user option either.
    n: int | None = Field(None, ge=1, exclude=True)

    def to_request(self) -> dict[str, Any]:
        """Only the options that were set."""
        options = self.model_dump(exclude_none=True)
        if self.response_format is not None:
            options["response_format"] = self.response_format
        if self.n is not None:
            options["n"] = self.n
        return options

    @cached_property
    def request(self) -> dict[str, Any]:
        """`to_request()`, computed once: it goes into every request a run sends."""
        return self.to_request()


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One call to a model: what to send, and which step of the work it answers.

    `item` and `key` name the call within a run ("s1.2" and "judge", or "judge_again" for the
    judge asked a second time; `key` defaults to `role`): the journal replays a reply by them
    after a crash, and a backend that keeps replies beyond one call (the batch backend) keys
    them by `step`, so that two steps sending the same text get an answer each, as they
    would live. `item` is None for a call that nothing replays.
    """

    messages: list[Message]
    model: str
    params: GenerationParams
    role: str = ""
    item: str | None = None
    key: str | None = None

    @property
    def step(self) -> str | None:
        """ "s1.2/judge": the call's name within the run, or None."""
        return None if self.item is None else f"{self.item}/{self.key or self.role}"

    def with_params(self, params: GenerationParams) -> LLMRequest:
        """The same request with other options (a response_format a server refused, dropped)."""
        return LLMRequest(self.messages, self.model, params, self.role, self.item, self.key)


class Completion(BaseModel):
    """What a backend returns for one request. The tokens are the whole call's, every choice
    included."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    # With `logprobs` asked for: for each generated token, the most likely tokens at that
    # position and their log-probabilities (the chosen one included).
    top_logprobs: list[dict[str, float]] | None = None
    # A reply with several choices (`n` asked for): each one's (text, finish_reason), in the
    # server's order, the first being `text` again. Empty for one choice, as in journals
    # written before there were several.
    choices: list[tuple[str, str | None]] = Field(default_factory=list)

    def every_choice(self) -> list[tuple[str, str | None]]:
        """Each choice's (text, finish_reason): one, or as many as the server returned."""
        return self.choices or [(self.text, self.finish_reason)]


class BackendSettings(BaseModel):
    """How to reach a backend; built by the engine from the run's config."""

    model_config = ConfigDict(extra="forbid")

    base_urls: list[str] = Field(default_factory=list)
    api_key: SecretStr | None = None
    api_key_source: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    max_response_bytes: int = 16 * 1024 * 1024
    model_path: Path | None = None

    def secrets(self) -> Secrets:
        """What no message may show: the API key and the passwords in `base_urls`."""
        key = self.api_key.get_secret_value() if self.api_key else None
        return Secrets.of(key, self.base_urls)


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do beyond `complete`, declared on its class as `capabilities`.

    The registry and the pipeline read these, never a backend's name, so a plugin can do what
    the built-in backends do; a class that declares nothing gets these defaults.
    """

    # Its model runs in this process: no server, --base-url ignored, nothing to pay.
    in_process: bool = False
    # It sends an API key: a hosted API (api.openai.com...) refuses it without one.
    needs_key: bool = False
    # It takes requests in batches that outlive the process; `batches()` lists them.
    batchable: bool = False
    # It spreads requests over several endpoints; `endpoint_stats()` says what each did.
    endpoint_stats: bool = False
    # It sends `n` and returns every choice the server gave (`Completion.choices`).
    several_choices: bool = False


def capabilities_of(backend: object) -> Capabilities:
    """The capabilities a backend (or its class, or its factory) declares."""
    declared = getattr(backend, "capabilities", None)
    return declared if isinstance(declared, Capabilities) else Capabilities()


@runtime_checkable
class ChatBackend(Protocol):
    """An LLM that answers chat messages."""

    async def complete(self, request: LLMRequest) -> Completion:
        """Answer one request, raising `TransientBackendError` for what is worth retrying."""
        ...

    async def default_model(self) -> str:
        """The model to use when the user names none."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads or loaded weights."""
        ...


BackendFactory = Callable[[BackendSettings], ChatBackend]


@runtime_checkable
class BatchingBackend(ChatBackend, Protocol):
    """A backend that declares `batchable`: its batches, for progress lines and run.json."""

    def batches(self) -> list[Any]:
        """Every batch it knows of, oldest first (`evol.llm.batch.BatchInfo`)."""
        ...


@runtime_checkable
class SeveralEndpoints(ChatBackend, Protocol):
    """A backend that declares `endpoint_stats`: what each of its endpoints did."""

    def endpoint_stats(self) -> list[dict[str, object]]:
        """Requests and failures per endpoint, for run.json."""
        ...
