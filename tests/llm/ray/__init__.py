"""`--engine ray` (evol.llm.ray): a test module per module, one local Ray for the package."""
