"""An evol backend that echoes: the README's plugin example, run by the plugin test."""

from evol.llm import BackendSettings, Completion, LLMRequest


class EchoBackend:
    def __init__(self, settings: BackendSettings):
        self.settings = settings

    async def complete(self, request: LLMRequest) -> Completion:
        messages, model = request.messages, request.model
        text = messages[-1]["content"]
        return Completion(text=f"Echo from {model}: {text}", completion_tokens=len(text.split()))

    async def default_model(self) -> str:
        return "echo-1"

    async def aclose(self) -> None:
        pass
