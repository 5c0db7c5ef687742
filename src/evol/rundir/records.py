"""The records a run writes: one JSON object per line in gen_<k>.jsonl and eliminated.jsonl."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from evol.method.elimination import Reason
from evol.method.verdicts import Verdict

# The most rounds a run may have (--generations): no record's id has more suffixes.
MAX_GENERATIONS = 100
# The fields of a record with verifiable constraints, left out where they are None.
CONSTRAINT_FIELDS = ("constraints", "attempts", "rejected_output", "unmet")


def compose(instruction: str, input_text: str) -> str:
    """The user message for an instruction with an optional Alpaca-style input: what the
    answering model is asked, and what chat-shaped exports put in the user turn."""
    return f"{instruction}\n\n{input_text}" if input_text.strip() else instruction


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
    # keeps the shape it always had.
    constraints: list[dict[str, Any]] | None = Field(
        None, description="IFEval ids with their kwargs, the parent's and any new one"
    )
    attempts: int | None = Field(None, description="answers drawn until one met the constraints")
    rejected_output: str | None = Field(
        None, description="the first answer that failed a constraint (for DPO pairs)"
    )
    unmet: dict[str, int] | None = Field(
        None, description="per constraint id, how many of the answers drawn failed it"
    )

    @model_serializer(mode="wrap")
    def _without_unset_constraints(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for key in CONSTRAINT_FIELDS:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class EliminatedRecord(Record):
    """An evolution, or a seed's answer, that failed; its parent goes back into the pool."""

    reason: Reason
    duplicate_of: str | None = Field(None, description="with reason duplicate: the id it repeats")
