"""LLM backends: the Protocol a backend satisfies, its request and reply types, the registry.

    protocol.py           ChatBackend, LLMRequest, Message, GenerationParams, Completion, BackendSettings
    dispatch.py           every call of run and score: retries, limits, the journal, the counts
    registry.py           built-in backends, register_backend/unregister_backend, entry points, the default choice
    openai_api.py         the OpenAI chat-completions API: reply schema, statuses as errors
    transport.py          HTTP for the openai backend (aiohttp, every limit set)
    openai_compatible.py  the `openai` backend
    sdk_client.py         the openai SDK's client with evol's limits (openai-sdk, batch)
    openai_sdk.py         the `openai-sdk` backend
    local.py              the `local` backend (llama.cpp in-process)
    routing.py            several --base-url as one backend

Plugin authors import what they need from here.
"""

from evol.llm.protocol import (
    BackendFactory,
    BackendSettings,
    ChatBackend,
    Completion,
    GenerationParams,
    LLMRequest,
    Message,
)
from evol.llm.registry import (
    ENTRY_POINT_GROUP,
    backend_names,
    choose_backend,
    create_backend,
    local_backend_installed,
    missing_key_warning,
    open_backend,
    register_backend,
    registered_backends,
    unregister_backend,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendFactory",
    "BackendSettings",
    "ChatBackend",
    "Completion",
    "GenerationParams",
    "LLMRequest",
    "Message",
    "backend_names",
    "choose_backend",
    "create_backend",
    "local_backend_installed",
    "missing_key_warning",
    "open_backend",
    "register_backend",
    "registered_backends",
    "unregister_backend",
]
