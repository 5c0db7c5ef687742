"""The `openai` backend: any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp).

It POSTs `/chat/completions` through `evol.llm.transport` (aiohttp, every limit set) and
reads the reply with `evol.llm.openai_api`. Every text a server sends is redacted of the
backend's secrets (the key, the password) before it is shown; a `user:password@` in the base
URL goes as HTTP Basic auth.
"""

from __future__ import annotations

from typing import Any

import orjson

from evol.llm.openai_api import (
    DEFAULT_BASE_URL,
    ResponseFormats,
    auth_headers,
    body_message,
    json_or_text,
    parse_reply,
    served_model,
    status_error,
)
from evol.llm.protocol import BackendSettings, Capabilities, Completion, LLMRequest, Message
from evol.llm.transport import JsonTransport, url_login
from evol.secrets import check_api_key, display_url


class OpenAICompatibleBackend:
    """Chat completions over HTTP, one pool of keep-alive connections for the run."""

    capabilities = Capabilities(needs_key=True, several_choices=True)

    def __init__(self, settings: BackendSettings):
        base_url = (settings.base_urls[0] if settings.base_urls else DEFAULT_BASE_URL).rstrip("/")
        self.where = display_url(base_url)
        self.key_source = settings.api_key_source
        self.key = settings.api_key.get_secret_value() if settings.api_key else None
        self.secrets = settings.secrets()
        base_url, login = url_login(base_url, self.key, self.key_source)
        headers = {"Content-Type": "application/json"} | login
        if self.key is not None:
            check_api_key(self.key, self.key_source)
            headers |= auth_headers(base_url, self.key)
        self.formats = ResponseFormats()
        self.http = JsonTransport(
            base_url,
            headers,
            timeout=settings.timeout,
            max_response_bytes=settings.max_response_bytes,
            secrets=self.secrets,
        )

    async def complete(self, request: LLMRequest) -> Completion:
        reply = await self.formats.send(
            request.params, lambda options: self._chat(request.model, request.messages, options)
        )
        return parse_reply(reply, self.where, self.secrets)

    async def _chat(self, model: str, messages: list[Message], options: dict[str, Any]) -> bytes:
        body = orjson.dumps({"model": model, "messages": messages, **options})
        return await self._request("POST", "/chat/completions", model, body)

    async def default_model(self) -> str:
        """The server's model when it serves exactly one (vLLM, llama.cpp); else ask for --model."""
        listing = await self._request("GET", "/models", "", None)
        return served_model(listing, self.where, self.secrets)

    async def aclose(self) -> None:
        await self.http.close()

    async def _request(self, method: str, path: str, model: str, body: bytes | None) -> bytes:
        response = await self.http.request(method, path, body)
        if response.status >= 400 or response.status < 200:
            message = body_message(json_or_text(response.body), "", self.secrets)
            raise status_error(
                self.where,
                self.key_source,
                model,
                response.status,
                message,
                response.headers,
                self.secrets,
            )
        return response.body
