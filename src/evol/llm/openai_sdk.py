"""The `openai-sdk` backend: OpenAI-compatible chat through the official SDK.

Slower than the `openai` backend (the SDK's transport costs about 4 ms of CPU a call), but it
goes wherever the SDK goes. Built with `max_retries=0` and an explicit timeout; its errors map
onto the same ones as the `openai` backend's.
"""

from __future__ import annotations

import openai

from evol.errors import TransientBackendError, UsageError
from evol.llm import BackendSettings, Completion, GenerationParams, Message, display_url
from evol.llm.openai_compatible import DEFAULT_BASE_URL, body_message, status_error


class OpenAISDKBackend:
    """Chat completions through the official SDK."""

    def __init__(self, settings: BackendSettings):
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
        message = body_message(error.body, error.message)
        headers = error.response.headers
        return status_error(where, self.key_source, model, error.status_code, message, headers)
