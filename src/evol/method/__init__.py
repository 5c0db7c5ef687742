"""Evol-Instruct's method: the operations and their prompts, what is taken off a reply,
the rules that eliminate, the judge's schema, duplicates, verifiable constraints. Nothing here
knows of files, runs or LLM calls."""
