"""The Batch API backend (evol.llm.batch)."""
