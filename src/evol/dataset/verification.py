"""`evol verify`: check the answers of a dataset against its verifiable constraints, and say
how often each constraint id is met, strict and loose, as IFEval reports it.

What it reads, row by row (a JSON Lines file, a JSON array, a Parquet file with the `parquet`
extra, or an evol run directory):

    IFEval   `instruction_id_list` + `kwargs`, the answer in `response` (or --response-field)
    RLVR     `messages` + `ground_truth` (open-instruct's `ifeval` label), the answer in the last
             message when it is the assistant's (or in --response-field), checked after its
             `</think>` as open-instruct's verifier checks it
    evol     `constraints` (evol's records, `evol export --format jsonl`), the answer in `output`

Rows without constraints are counted and skipped. The first row that cannot be read stops the
check with one line naming the file and the line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field, ValidationError, computed_field

from evol.dataset.export_files import PARQUET_EXTRA
from evol.errors import ConstraintError, EvolError
from evol.jsonl import open_to_read
from evol.method.constraints import (
    Constraint,
    check,
    from_ground_truth,
    from_ifeval_columns,
    from_record,
)
from evol.rundir.layout import generation_files
from evol.rundir.record_files import read_records

RowFormat = Literal["ifeval", "rlvr", "evol"]
PARQUET_MAGIC = b"PAR1"
UTF8_BOM = b"\xef\xbb\xbf"


class VerifyError(EvolError):
    """A dataset row `evol verify` cannot check: where it is, and why."""

    def __init__(self, where: str, why: str):
        super().__init__(f"{where}: {why}")


class PassRate(BaseModel):
    """How many of `checked` met the constraint (or all of a row's constraints)."""

    checked: int = 0
    strict: int = 0
    loose: int = 0

    @computed_field
    @property
    def strict_rate(self) -> float | None:
        return self.strict / self.checked if self.checked else None

    @computed_field
    @property
    def loose_rate(self) -> float | None:
        return self.loose / self.checked if self.checked else None

    def add(self, strict: bool, loose: bool) -> None:
        self.checked += 1
        self.strict += strict
        self.loose += loose


class VerifyReport(BaseModel):
    """What `verify_dataset` found: per constraint id, per row (all of its constraints met:
    IFEval's prompt level) and per constraint (IFEval's instruction level)."""

    file: str
    formats: dict[str, int] = Field(description="rows checked per format found")
    rows_without_constraints: int
    rows_without_answer: int = Field(description="evol records kept without an answer")
    per_id: dict[str, PassRate]
    rows: PassRate
    constraints: PassRate


def verify_dataset(path: Path, response_field: str | None = None) -> VerifyReport:
    """Check every row of `path` with constraints, and count what passed."""
    report = VerifyReport(
        file=str(path),
        formats={},
        rows_without_constraints=0,
        rows_without_answer=0,
        per_id={},
        rows=PassRate(),
        constraints=PassRate(),
    )
    for where, row in _rows(path):
        found = _constraints_and_answer(row, response_field, where)
        if found is None:
            report.rows_without_constraints += 1
            continue
        row_format, constraints, answer = found
        if answer is None:
            report.rows_without_answer += 1
            continue
        try:
            verdicts = check(answer, constraints)
        except ConstraintError as error:
            raise VerifyError(where, str(error)) from None
        report.formats[row_format] = report.formats.get(row_format, 0) + 1
        for verdict in verdicts:
            report.per_id.setdefault(verdict.constraint.id, PassRate()).add(
                verdict.strict, verdict.loose
            )
            report.constraints.add(verdict.strict, verdict.loose)
        report.rows.add(all(v.strict for v in verdicts), all(v.loose for v in verdicts))
    if not report.rows.checked:
        raise VerifyError(str(path), f"no row to check: {NO_CONSTRAINTS}")
    report.per_id = dict(sorted(report.per_id.items()))
    return report


def format_verify(report: VerifyReport) -> str:
    """The table `evol verify` prints: pass rates per constraint id, then overall."""
    formats = ", ".join(f"{n} {name}" for name, n in report.formats.items()) or "none"
    lines = [f"{report.file}: {report.rows.checked} rows checked ({formats})"]
    if report.rows_without_constraints:
        lines.append(f"skipped {report.rows_without_constraints} rows without constraints")
    if report.rows_without_answer:
        lines.append(f"skipped {report.rows_without_answer} records without an answer")
    width = max([len(name) for name in report.per_id] + [len("all constraints of a row")])
    lines.append(f"{'constraint id':<{width}}  {'strict':>7}  {'loose':>7}  {'checked':>7}")
    for name, rate in report.per_id.items():
        lines.append(_rate_line(name, rate, width))
    lines.append(_rate_line("all constraints of a row", report.rows, width))
    lines.append(_rate_line("each constraint", report.constraints, width))
    return "\n".join(lines)


def _rate_line(name: str, rate: PassRate, width: int) -> str:
    def shown(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    return (
        f"{name:<{width}}  {shown(rate.strict_rate):>7}  {shown(rate.loose_rate):>7}"
        f"  {rate.checked:>7}"
    )


# -- reading ----------------------------------------------------------------------------------


def _rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """("file:line", row) for every row of a run directory, a JSON Lines file or a JSON array."""
    if path.is_dir():
        yield from _run_rows(path)
        return
    try:
        data = path.read_bytes()
    except OSError as error:
        raise VerifyError(str(path), f"cannot read it: {error.strerror}") from None
    if data.startswith(PARQUET_MAGIC):
        yield from _parquet_rows(path, data)
        return
    data = data.removeprefix(UTF8_BOM)  # Windows tools write one; datasets reads past it
    if data.lstrip()[:1] == b"[":
        yield from _array_rows(path, data)
        return
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            yield f"{path}:{number}", _object(line, f"{path}:{number}")


def _array_rows(path: Path, data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        rows = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise VerifyError(f"{path}:{error.lineno}", "not valid JSON") from None
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise VerifyError(f"{path}: row {number}", "not a JSON object")
        yield f"{path}: row {number}", row


def _parquet_rows(path: Path, data: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
    """The rows of a Parquet file (evol's rlvr export, allenai's RLVR sets), a batch at a time."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise VerifyError(str(path), f"reading Parquet needs pyarrow: {PARQUET_EXTRA}") from None
    try:
        batches = pq.ParquetFile(pa.BufferReader(data)).iter_batches()
        number = 0
        for batch in batches:
            for row in batch.to_pylist():
                number += 1
                yield f"{path}: row {number}", row
    except (pa.ArrowException, OSError) as error:
        raise VerifyError(str(path), f"not a readable Parquet file: {error}") from None


def _run_rows(run_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    files = generation_files(run_dir)
    if not files:
        raise VerifyError(str(run_dir), "not an evol run directory (no gen_<k>.jsonl)")
    for path in files:
        with open_to_read(path) as fp:
            for number, _offset, _length, record in read_records(fp, path):
                yield f"{path}:{number}", record


def _object(line: bytes, where: str) -> dict[str, Any]:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise VerifyError(where, "not valid JSON") from None
    if not isinstance(row, dict):
        raise VerifyError(where, "not a JSON object")
    return row


NO_CONSTRAINTS = (
    "expected instruction_id_list and kwargs (IFEval), messages and ground_truth (RLVR), "
    "or constraints (evol's records)"
)


def _constraints_and_answer(
    row: dict[str, Any], response_field: str | None, where: str
) -> tuple[RowFormat, list[Constraint], str | None] | None:
    """The row's format, constraints and answer (None: an evol record without one); None for a
    row without constraints."""
    try:
        if "ground_truth" in row and not _for_ifeval_verifier(row):
            return None  # a math or code row of a mixed RLVR set
        if "ground_truth" in row:
            found: tuple[RowFormat, list[Constraint]] = (
                "rlvr",
                from_ground_truth(row["ground_truth"]),
            )
        elif "instruction_id_list" in row:
            columns = from_ifeval_columns(row["instruction_id_list"], row.get("kwargs"))
            found = ("ifeval", columns)
        elif "constraints" in row:
            found = ("evol", from_record(row["constraints"]))
        else:
            return None
    except ValidationError as error:
        first = error.errors()[0]
        at = ".".join(str(part) for part in first["loc"])
        raise VerifyError(where, f"not a constraint: {at}: {first['msg']}") from None
    except (ValueError, SyntaxError, TypeError, KeyError, IndexError, RecursionError) as error:
        raise VerifyError(where, f"unreadable constraints: {error}") from None
    row_format, constraints = found
    if not constraints:
        return None
    return row_format, constraints, _answer(row, row_format, response_field, where)


def _for_ifeval_verifier(row: dict[str, Any]) -> bool:
    """Whether an RLVR row is for open-instruct's `ifeval` verifier (its `dataset` names the
    verifier, or a list of them; a row without it is taken to be)."""
    verifier = row.get("dataset", "ifeval")
    return verifier == "ifeval" or (isinstance(verifier, list) and "ifeval" in verifier)


def _answer(
    row: dict[str, Any], row_format: RowFormat, response_field: str | None, where: str
) -> str | None:
    if response_field is None and row_format == "rlvr":
        messages = row.get("messages")
        last = messages[-1] if isinstance(messages, list) and messages else None
        if not (isinstance(last, dict) and last.get("role") == "assistant"):
            raise VerifyError(
                where,
                "the last message is not the assistant's: name the answer's field "
                "with --response-field",
            )
        answer = last.get("content")
    else:
        name = response_field or ("output" if row_format == "evol" else "response")
        if name not in row:
            raise VerifyError(where, f"no {name!r} field: name the answer's with --response-field")
        answer = row[name]
    if answer is None and row_format == "evol":
        return None  # a seed kept without an answer (--no-answer-seeds)
    if not isinstance(answer, str):
        raise VerifyError(where, f"the answer is not a string: {type(answer).__name__}")
    return without_thinking(answer) if row_format == "rlvr" else answer


def without_thinking(answer: str) -> str:
    """What open-instruct's verifiers check of an RLVR answer (its remove_thinking_section):
    the text after the last `</think>`, without `<|assistant|>` and `<answer>` tags."""
    answer = answer.replace("<|assistant|>", "").strip().split("</think>")[-1]
    return answer.replace("<answer>", "").replace("</answer>", "").strip()
