"""The call journal (calls.jsonl): the reply of every call whose step is not recorded yet.

A step takes several calls (evolve, then answer and judge), so each reply is journalled the
moment it arrives, flushed before the next request can go out: after a crash the step replays
the journalled replies and pays only for the calls that were in flight. On open, replies of
steps already recorded are dropped; when a run completes, the journal goes. A torn last line
is what a crash leaves and is cut; any other line that is not an entry is damage, refused.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydantic import BaseModel, ConfigDict

from evol.errors import RunDirError
from evol.jsonl import (
    append_line,
    atomic_write,
    open_for_append,
    open_to_read,
    repair_torn_tail,
    scan,
)
from evol.llm.protocol import Completion


class JournalEntry(BaseModel):
    """One line of calls.jsonl: the reply to the call `role` made for the step `item`."""

    model_config = ConfigDict(strict=True)

    item: str
    role: str
    reply: Completion


class CallJournal:
    """Replies kept until their step is recorded; each is replayed at most once."""

    def __init__(self, path: Path):
        self.path = path
        self._replies: dict[tuple[str, str], dict[str, Any]] = {}
        self._writer: BinaryIO | None = None

    @classmethod
    def open(cls, path: Path, recorded: Container[str]) -> CallJournal:
        """Load the replies of steps not in `recorded` (record ids), and keep only those."""
        journal = cls(path)
        if not path.exists():
            return journal
        repair_torn_tail(path)
        with open_to_read(path) as lines:
            # A blank line is damage too: the journal never holds one.
            entries = scan(lines, _entry, _damaged(path), skip_blank=False)
            for _number, _offset, _length, entry in entries:
                if entry["item"] not in recorded:
                    journal._replies[(entry["item"], entry["role"])] = entry["reply"]
        atomic_write(
            path,
            "".join(
                orjson.dumps({"item": item, "role": role, "reply": reply}).decode() + "\n"
                for (item, role), reply in journal._replies.items()
            ),
        )
        return journal

    def remember(self, item_id: str, role: str, reply: dict[str, Any]) -> None:
        """Journal one call's reply; flushed to the OS before this returns."""
        if self._writer is None:
            self._writer = open_for_append(self.path)
        append_line(self._writer, {"item": item_id, "role": role, "reply": reply})

    def recall(self, item_id: str, role: str) -> dict[str, Any] | None:
        """The journalled reply of a call made before a crash, if any (once)."""
        return self._replies.pop((item_id, role), None)

    def clear(self) -> None:
        """Drop the journal once every step is recorded: it holds nothing left to replay."""
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _entry(line: bytes) -> dict[str, Any]:
    """A line of the journal as written; a ValueError when it is not an entry."""
    entry = orjson.loads(line)
    JournalEntry.model_validate(entry)
    return entry


def _damaged(path: Path) -> Callable[[int, ValueError], RunDirError]:
    """A damaged line of the journal, refused with where and why."""

    def refusal(number: int, error: ValueError) -> RunDirError:
        what = "not JSON" if isinstance(error, orjson.JSONDecodeError) else "not a call's reply"
        return RunDirError(
            f"{path}:{number}: damaged line ({what}): the journal only saves paying twice for "
            "calls made before a crash: delete it to make them again, or start again with "
            "--overwrite"
        )

    return refusal
