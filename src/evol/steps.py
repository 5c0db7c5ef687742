"""What every step of a lineage shares: how it ends, its one call, and its reply read.

A step ends eliminated (`Eliminated`: the record goes to eliminated.jsonl) or failed for this
run (`ItemFailed`: the next resume does it again). Its reply is cleaned and checked off the
event loop when large, what cleaning took off is noted in the record, and a reply cut at the
token limit is not whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

from evol.errors import most_telling
from evol.llm import Completion, GenerationParams, Message
from evol.method.cleaning import Cleaned
from evol.method.elimination import Failure, Reason
from evol.rundir.records import Record

# Replies longer than this are cleaned and checked off the event loop (see `read_reply`).
LARGE_REPLY_CHARS = 64 * 1024
_Parsed = TypeVar("_Parsed")


class ItemFailed(Exception):
    """Ends one lineage for this run; already counted in `EngineStats` (failed or deferred)."""


class Eliminated(Exception):
    """A step failed a rule or was refused for good: the record goes to eliminated.jsonl."""

    def __init__(self, failure: Failure, duplicate_of: str | None = None):
        super().__init__(failure.detail)
        self.failure, self.duplicate_of = failure, duplicate_of


class StepCall(Protocol):
    """The engine's one request of a step (`Engine._call`): its tokens are added to `record`'s
    usage; `params` replace the role's own."""

    def __call__(
        self,
        role: str,
        messages: list[Message],
        record: Record,
        *,
        journal_as: str | None = None,
        params: GenerationParams | None = None,
    ) -> Awaitable[Completion]: ...


def user_message(content: str) -> list[Message]:
    return [{"role": "user", "content": content}]


async def read_reply(reply: str, read: Callable[[str], _Parsed]) -> _Parsed:
    """`read(reply)`, in a worker thread when the reply is large.

    The cleaning and the rules take time linear in it; on the loop, megabytes would hold up the
    replies to every request in flight (past `--timeout`, sent and paid for again). In a thread
    the loop runs between its steps; one regex call over the whole text still holds the GIL,
    so the longest stall is about halved, not gone (0.5 s to 0.2 s on a 4 MB verdict)."""
    if len(reply) <= LARGE_REPLY_CHARS:
        return read(reply)
    return await asyncio.to_thread(read, reply)


def note_cleaning(record: Record, cleaned: Cleaned, what: str) -> None:
    """Say in the record's detail what cleaning took off its `what` (rewrite or answer)."""
    if cleaned.stripped:
        note = f"from the {what}: {cleaned.detail}"
        record.detail = f"{record.detail}; {note}" if record.detail else note


def truncation(finish_reason: str | None, tokens: int, what: str) -> Failure | None:
    """A reply that stopped at the token limit is not whole (`tokens`: its call's)."""
    if finish_reason != "length":
        return None
    return Failure(
        Reason.TRUNCATED,
        f"the {what} stopped at the token limit after {tokens} tokens "
        "(finish_reason 'length'): raise its --*-max-tokens",
    )


def raise_if_truncated(completion: Completion, what: str) -> None:
    if failure := truncation(completion.finish_reason, completion.completion_tokens, what):
        raise Eliminated(failure)


async def all_at_once(*coroutines: Coroutine[Any, Any, Any]) -> list[Any]:
    """Await all at once; the first failure cancels the others and is raised as itself."""
    if len(coroutines) == 1:
        return [await coroutines[0]]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except BaseExceptionGroup as errors:
        raise most_telling(errors) from None
    return [task.result() for task in tasks]
