"""The LLM call layer: backends, the dispatcher, the HTTP transport, retries and limits (evol.llm)."""
