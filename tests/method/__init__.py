"""The method: elimination, cleaning, dedup, operations, prompts, judging, verifiable constraints (evol.method)."""
