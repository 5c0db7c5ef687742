"""The records a run writes: one JSON object per line in gen_<k>.jsonl and eliminated.jsonl."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from evol.elimination import Reason, Verdict

ROLES = ("evolve", "answer", "judge")


class TokenUsage(BaseModel):
    """Tokens one role spent on one record, as the server reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: TokenUsage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


class Record(BaseModel):
    """A kept instruction: a seed (generation 0) or an evolution of its parent."""

    id: str
    parent_id: str | None = Field(description="None for a seed")
    root_id: str = Field(description="the seed this lineage started from")
    generation: int = Field(description="steps from the seed: the parent's generation + 1")
    round: int = Field(description="the evolution round that produced it; 0 for a seed")
    operation: str | None = Field(description="the mutation applied; None for a seed")
    instruction: str
    input: str = ""
    output: str | None
    judge: Verdict | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    usage: dict[str, TokenUsage] = Field(default_factory=dict)


class EliminatedRecord(Record):
    """An evolution that failed; its parent goes back into the pool."""

    reason: Reason
    detail: str | None = None
    duplicate_of: str | None = Field(None, description="with reason duplicate: the id it repeats")
