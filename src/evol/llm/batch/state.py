"""The batch backend's files in `state_dir`: `batches.jsonl`, the journal of each batch's
intent, creation and end (a line is synced before it counts), and `results.jsonl`, each
answered row once, found again by its offset. Both are read through `evol.jsonl`: a torn last
line is cut, a damaged one before it is an error that names the file and the line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from evol.errors import RunDirError, StorageError
from evol.jsonl import (
    append_line,
    open_for_append,
    open_to_read,
    repair_torn_tail,
    scan,
    sync_file,
)
from evol.llm.batch.rows import bounded_lines, is_final, row_outcome
from evol.llm.openai_api import ReplyReader, SchemaError, body_message
from evol.secrets import Secrets


def _read_lines(path: Path, repair: bool = True) -> Iterator[tuple[int, int, int, Any]]:
    """(line number, offset, length, its JSON) of each whole line; a last line a crash left
    torn is skipped, and with `repair` cut off. Any other line that is not JSON is an error."""
    if not path.exists():
        return
    if repair:
        repair_torn_tail(path)

    def damaged(number: int, _error: ValueError) -> RunDirError:
        return RunDirError(
            f"{path}:{number}: a damaged line before the last one: restore the file, or remove "
            "the batch state (what it held is then paid again)"
        )

    with open_to_read(path) as lines:
        # A blank line is damage too: evol writes none. Once repaired, the file has no torn
        # tail left: a bad last line then is one that stood before it, and is refused.
        yield from scan(lines, orjson.loads, damaged, skip_blank=False, torn_last=not repair)


class Entry(BaseModel):
    """One line of batches.jsonl."""

    model_config = ConfigDict(extra="ignore")

    event: Literal["intent", "created", "ended", "abandoned"]
    token: str
    model: str = ""
    input_file_id: str | None = None
    custom_ids: list[str] = Field(default_factory=list)
    at: float = 0.0
    batch_id: str | None = None
    status: str | None = None
    request_counts: dict[str, int] = Field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None


class Journal:
    """batches.jsonl: what was submitted, created and ended; a line is synced before it counts."""

    def __init__(self, path: Path):
        self.path = path
        self._file: BinaryIO | None = None

    def read(self, *, repair: bool = True) -> list[Entry]:
        entries = []
        for number, _offset, _length, data in _read_lines(self.path, repair):
            try:
                entries.append(Entry.model_validate(data))
            except SchemaError:
                raise RunDirError(f"{self.path}:{number}: not a batch state line") from None
        return entries

    def append(self, **entry: Any) -> None:
        if self._file is None:
            self._file = open_for_append(self.path)
        append_line(self._file, entry, sync=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Results:
    """results.jsonl: each answered row once, {custom_id, status_code, body}, found by offset."""

    def __init__(self, path: Path):
        self.path = path
        # custom_id -> offset << 32 | length: about 170 bytes of memory an answered request.
        self.index: dict[str, int] = {}
        for number, offset, length, data in _read_lines(path):
            custom_id = data.get("custom_id") if isinstance(data, dict) else None
            if not isinstance(custom_id, str):
                continue
            if not isinstance(data.get("status_code"), int) or "body" not in data:
                raise RunDirError(
                    f"{path}:{number}: not a stored answer (no status_code or body): restore "
                    "the file, or remove the batch state (what it held is then paid again)"
                )
            self.index.setdefault(custom_id, offset << 32 | length)
        self._reader: BinaryIO | None = None

    def get(self, custom_id: str) -> tuple[int, Any] | None:
        """The stored (status_code, body) of a request, or None if it has none."""
        place = self.index.get(custom_id)
        if place is None:
            return None
        if self._reader is None:
            self._reader = open_to_read(self.path)
        self._reader.seek(place >> 32)
        row = orjson.loads(self._reader.read(place & 0xFFFFFFFF))
        return row["status_code"], row["body"]

    def ingest(
        self, paths: list[Path], expected: frozenset[str], model: str, reader: ReplyReader
    ) -> dict[str, int | Exception]:
        """Read downloaded output/error files (run in a thread); append the final rows here.

        Returns, for each expected custom_id that has a row, its place in this file or the
        error that says why it has no answer. Rows of other requests and garbled lines are
        ignored (a garbled row's request gets no answer and is asked again). The downloaded
        files are removed afterwards.
        """
        try:
            return self._ingest(paths, expected, model, reader)
        except OSError as error:
            raise StorageError(self.path, error) from None
        finally:
            for path in paths:
                path.unlink(missing_ok=True)

    def _ingest(
        self, paths: list[Path], expected: frozenset[str], model: str, reader: ReplyReader
    ) -> dict[str, int | Exception]:
        outcomes: dict[str, int | Exception] = {}
        with open_for_append(self.path) as out:
            for path in paths:
                with open_to_read(path, follow_links=False) as lines:
                    for raw in bounded_lines(lines, reader.max_reply_bytes):
                        try:
                            custom_id, outcome = row_outcome(raw, model, reader)
                        except ValueError:
                            continue
                        if custom_id not in expected or isinstance(outcomes.get(custom_id), int):
                            continue
                        if not is_final(outcome):
                            outcomes[custom_id] = outcome  # type: ignore[assignment]
                            continue
                        response = orjson.loads(raw)["response"]
                        stored = _stored_row(custom_id, response, reader.secrets)
                        start = append_line(out, stored)
                        outcomes[custom_id] = start << 32 | (len(stored) + 1)
            sync_file(out)  # the rows are paid for: kept through a power cut
        return outcomes

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _stored_row(custom_id: str, response: dict[str, Any], secrets: Secrets) -> bytes:
    """A final row as results.jsonl keeps it. An error row's body is a server's words, which
    may echo a secret in pieces (split by an escaped newline): it keeps only what is read from
    it again, its message, redacted as it is shown."""
    status, body = response["status_code"], response["body"]
    if status >= 400:
        body = {"error": {"message": body_message(body, f"status {status}", secrets)}}
    return orjson.dumps({"custom_id": custom_id, "status_code": status, "body": body})
