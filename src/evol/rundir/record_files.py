"""A run's record files read: every line checked against the record model, a damaged one a RunDirError naming its file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from pydantic import ValidationError

from evol.errors import RunDirError
from evol.jsonl import open_to_read, scan
from evol.rundir.layout import ELIMINATED, generation_files
from evol.rundir.records import EliminatedRecord, Record


def iter_records(run_dir: Path, *, eliminated: bool = False) -> Iterator[dict[str, Any]]:
    """Stream the kept records (gen_0 first) or, with `eliminated`, the eliminated ones, each
    checked against its model: a line that is not one is a RunDirError naming file and line."""
    paths = [run_dir / ELIMINATED] if eliminated else generation_files(run_dir)
    for path in paths:
        if not path.exists():
            continue
        with open_to_read(path) as fp:
            for _number, _offset, _length, record in read_records(fp, path):
                yield record


def read_records(fp: BinaryIO, path: Path) -> Iterator[tuple[int, int, int, dict[str, Any]]]:
    """(line number, offset, length, record) of every whole line of an open record file.

    Blank lines are skipped, and so is a last line without its newline: a run killed mid-write
    leaves one, and its resume cuts it. Any other line that is not a record is an error.
    """
    model = model_of(Path(path))

    def damaged(number: int, error: ValueError) -> RunDirError:
        return RunDirError(f"{path}:{number}: {error}")

    return scan(fp, lambda line: _record(line, model), damaged)


def parse_record(
    line: bytes, path: Path, number: int, model: type[Record] = Record
) -> dict[str, Any]:
    """One line of a record file as written, checked against `model`: every command reads
    records through here, so a damaged one is one line naming its file and line, never a
    TypeError deep in whatever reads it first."""
    try:
        return _record(line, model)
    except ValueError as error:
        raise RunDirError(f"{path}:{number}: {error}") from None


def _record(line: bytes, model: type[Record]) -> dict[str, Any]:
    """A line's record; a ValueError that says what is wrong with it."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ValueError("corrupt record") from None
    if not isinstance(data, dict):
        raise ValueError("not an evol record (not a JSON object)")
    try:
        # Strict, from the JSON: "1" or 1.0 is no generation, though the lax mode would take it.
        model.model_validate_json(line, strict=True)
    except ValidationError as error:
        raise ValueError(f"not an evol record ({_problems(error)})") from None
    return data


def scan_records(
    fp: BinaryIO, path: Path, model: type[Record], strict: bool
) -> Iterator[dict[str, Any]]:
    """The records of a file the store opens: a blank or damaged line is an error (`strict`,
    under the lock, after repair: no record file of evol's holds one) or passed over (a look
    from outside a run, which may meet a line being written)."""

    def damaged(number: int, error: ValueError) -> RunDirError | None:
        if not strict:
            return None  # a torn line: the next real run cuts it
        return RunDirError(f"{path}:{number}: {error}; use --overwrite to start afresh")

    for _number, _offset, _length, data in scan(
        fp, lambda line: _record(line, model), damaged, skip_blank=False
    ):
        yield data


def model_of(path: Path) -> type[Record]:
    return EliminatedRecord if path.name == ELIMINATED else Record


def _problems(error: ValidationError) -> str:
    """'wrong generation; missing round, output': the fields at fault, in the model's order."""
    missing, wrong = {}, {}
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "the record"
        (missing if problem["type"] == "missing" else wrong)[field] = None
    parts = [f"wrong {', '.join(wrong)}"] if wrong else []
    return "; ".join(parts + ([f"missing {', '.join(missing)}"] if missing else []))
