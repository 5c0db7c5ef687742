"""The `openai-sdk` backend: OpenAI-compatible chat through the official SDK.

Slower than the `openai` backend (the SDK's transport costs about 2 ms of CPU a call), but it
goes wherever the SDK goes. It gets the same limits as `openai` (`evol.llm.sdk_client` builds
its client: no SDK retries, one deadline for the whole request, a cap on the reply body, no
redirects followed, the environment's proxy chosen as for `openai`), the same reply schema
and the same error mapping.
"""

from __future__ import annotations

from typing import Any

from evol.llm.openai_api import ResponseFormats, parse_reply, served_model
from evol.llm.protocol import BackendSettings, Capabilities, Completion, LLMRequest, Message
from evol.llm.sdk_client import SdkEndpoint


class OpenAISDKBackend:
    """Chat completions through the official SDK."""

    capabilities = Capabilities(needs_key=True, several_choices=True)

    def __init__(self, settings: BackendSettings):
        self.endpoint = SdkEndpoint(settings)
        self.where = self.endpoint.where
        self.secrets = self.endpoint.secrets
        self.formats = ResponseFormats()
        self.client = self.endpoint.client(timeout=settings.timeout)

    async def complete(self, request: LLMRequest) -> Completion:
        reply = await self.formats.send(
            request.params, lambda options: self._chat(request.model, request.messages, options)
        )
        return parse_reply(reply, self.where, self.secrets)

    async def _chat(self, model: str, messages: list[Message], options: dict[str, Any]) -> bytes:
        async def send() -> bytes:
            response = await self.client.chat.completions.with_raw_response.create(
                model=model,
                messages=messages,
                extra_headers=self.endpoint.request_headers,
                **options,
            )
            return await response.http_response.aread()

        return await self.endpoint.call(send, model=model)

    async def default_model(self) -> str:
        """The server's model when it serves exactly one (vLLM, llama.cpp); else ask for --model."""

        async def send() -> bytes:
            # Read raw, as a completion is: the SDK's own parse trips on a list off-schema.
            response = await self.client.models.with_raw_response.list(
                extra_headers=self.endpoint.request_headers
            )
            return await response.http_response.aread()

        return served_model(await self.endpoint.call(send), self.where, self.secrets)

    async def aclose(self) -> None:
        await self.client.close()
