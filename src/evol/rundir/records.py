"""The records a run writes: one JSON object per line in gen_<k>.jsonl and eliminated.jsonl."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from evol.method.elimination import Reason
from evol.method.verdicts import Verdict

# The most rounds a run may have (--generations): no record's id has more suffixes.
MAX_GENERATIONS = 100


def compose(instruction: str, input_text: str) -> str:
    """The user message for an instruction with an optional Alpaca-style input: what the
    answering model is asked, and what chat-shaped exports put in the user turn."""
    return f"{instruction}\n\n{input_text}" if input_text.strip() else instruction


def _is_none(value: object) -> bool:
    return value is None


class TokenUsage(BaseModel):
    """Tokens one role spent on one record, as the server reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


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
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="the seed's other fields; on the seed's record only"
    )
    usage: dict[str, TokenUsage] = Field(default_factory=dict)
    detail: str | None = Field(
        None, description="what cleaning took off the replies; for an elimination, why first"
    )
    # Verifiable constraints (#26), written only on records that carry them: a record without
    # keeps the shape it always had. (`exclude_if` is decided in pydantic-core: a serializer
    # of our own around the whole record took twice as long as the dump itself.)
    constraints: list[dict[str, Any]] | None = Field(
        None,
        description="IFEval ids with their kwargs, the parent's and any new one",
        exclude_if=_is_none,
    )
    attempts: int | None = Field(
        None, description="answers drawn until one met the constraints", exclude_if=_is_none
    )
    rejected_output: str | None = Field(
        None,
        description="the first answer that failed a constraint (for DPO pairs)",
        exclude_if=_is_none,
    )
    unmet: dict[str, int] | None = Field(
        None,
        description="per constraint id, how many of the answers drawn failed it",
        exclude_if=_is_none,
    )


class EliminatedRecord(Record):
    """An evolution, or a seed's answer, that failed; its parent goes back into the pool."""

    reason: Reason
    duplicate_of: str | None = Field(None, description="with reason duplicate: the id it repeats")
