"""`evol export`: a run's kept records in the shapes trainers read, in the files they load.

Shapes (`shape`, `--format`):

    alpaca       {"instruction", "input", "output"}, plus "system" when there is a system prompt
    sharegpt     {"conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}
    openai-chat  {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}
    jsonl        the records as evol wrote them
    ifeval       {"key", "prompt", "instruction_id_list", "kwargs", "response"}: IFEval's input
                 rows (google-research, lm-eval, NeMo Gym read the first four), plus the answer
    rlvr         {"messages": [..., user, assistant], "ground_truth", "dataset": "ifeval"}
    dpo          {"prompt", "chosen", "rejected"}: TRL's standard preference rows

ifeval and rlvr write the records that carry verifiable `constraints` (see evol.method.constraints)
and count the others left out. dpo writes the records whose answer met their constraints after
an earlier one failed them: `chosen` is the kept answer, `rejected` the first that failed
(`rejected_output`), both to the same `prompt`; it counts the others left out (no pair). Like
ifeval it has no system turn. rlvr follows open-instruct's `ifeval` verifier, the one its
current IF datasets use: `ground_truth` is a list holding {"instruction_id": [...], "kwargs":
[...]}, read with ast.literal_eval. The older allenai/RLVR-IFeval rows (one constraint each,
as {"func_name": ...} of open-instruct's own functions, its `ifeval_old` verifier) cannot hold
several IFEval ids with their kwargs. The messages end with the kept answer: open-instruct
drops a last message from the prompt it samples from, and `evol verify` checks it.

Files (`file_format`, `--file-format`; by default from the name of `out`): `.parquet` is Parquet,
written through pyarrow's ParquetWriter one row group of ROW_GROUP_ROWS at a time (pyarrow is the
`parquet` extra); `.json` is ONE JSON array; anything else JSON Lines. In Parquet, sharegpt's and
openai-chat's turns are lists of structs; evol's own records keep every top-level field whose
values share one JSON scalar type as a typed column, and write the others (`metadata`, `usage`,
...) as JSON text, because a Parquet column holds one type: `json.loads` gives them back.

System turn: the run's system prompt (`config.system_prompt` in run.json) leads sharegpt's
conversation as {"from": "system"} and openai-chat's as {"role": "system"}, and is alpaca's
`system` field; `system_prompt` (`--system-prompt`) replaces it, and "" leaves it out. The
jsonl shape is evol's records as they are, so it takes no `--system-prompt`.

Splits (`split`, e.g. train=0.9,test=0.1) keep lineages whole: every record of one seed (one
`root_id`) lands in the same part, so no rewrite of a test item sits in train. The lineages,
sorted by root id and shuffled by `seed`, are dealt one at a time to the part furthest below
its target (its fraction of the records): sizes count records, and each part ends less than
one lineage above its target (with two parts, also less than one below). Each part goes to
<stem>.<part><suffix>. With `shuffle`, records are shuffled within each part (by `seed` and
the part's name); otherwise they keep the dataset's order, gen_0 first.

Records without an answer (--no-answer-seeds) are left out and counted. A run that is not
complete (interrupted, failed, running or killed) is exported as far as it got, and its status
is in the result for the CLI to warn about. The record files are read twice by byte offset and
never held whole: the first pass checks every record and counts the lineages, the second writes.
They stay open in between, so a run that finishes meanwhile (and replaces its files sorted)
cannot shift the offsets, and a torn last line (a run killed mid-write) is skipped, as a resume
would cut it. Every file is written beside its target and renamed into place once all are whole;
none is written into a run directory's own files (`layout.refuse_run_state`) or through a link.
"""

from __future__ import annotations

import random
import re
from array import array
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    computed_field,
    model_serializer,
)

from evol.dataset.export_files import (
    EXPORT_ONLY_SHAPES,
    PAIRED_SHAPES,
    ROW_GROUP_ROWS,
    ExportFormat,
    FileFormat,
    file_format_of,
    parquet_schema,
    record_columns,
    require_pyarrow,
    row_maker,
    typed_columns,
    write_file,
)
from evol.dataset.export_scan import check_target, members_of, part_file, scan_export
from evol.errors import RunDirError, UsageError
from evol.jsonl import write_error
from evol.rundir.layout import generation_files
from evol.rundir.manifest import Manifest, load_manifest

_PART_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class ExportPart(BaseModel):
    """One file written: a part of the split, or the whole export."""

    name: str | None = Field(description="the --split part; None without --split")
    file: str
    records: int
    lineages: int = Field(description="seeds (root ids) whose records are in this part")


class ExportResult(BaseModel):
    """What `export_run` wrote, and the state of the run it read."""

    run: str
    status: str = Field(description="run.json's status: complete, failed, interrupted or running")
    shape: ExportFormat
    file_format: FileFormat
    system_prompt: str | None = Field(description="the system turn written; None for none")
    parts: list[ExportPart]
    left_out_without_output: int
    left_out_without_constraints: int = 0
    left_out_without_pair: int = Field(
        0, description="dpo: records without a failed answer before the kept one"
    )

    @model_serializer(mode="wrap")
    def _pairs_for_dpo(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.shape not in PAIRED_SHAPES:
            data.pop("left_out_without_pair", None)  # the other shapes print as they did
        return data

    @computed_field
    @property
    def files(self) -> dict[str, int]:
        """Records per file written."""
        return {part.file: part.records for part in self.parts}

    @property
    def records(self) -> int:
        return sum(part.records for part in self.parts)


def parse_generations(spec: str | None) -> set[int] | None:
    """`1-4`, `0,2` or `3` into a set of generations; None means all."""
    if not spec:
        return None
    chosen: set[int] = set()
    try:
        for part in spec.split(","):
            low, _, high = part.strip().partition("-")
            first, last = int(low), int(high or low)
            if first > last:
                raise ValueError
            chosen.update(range(first, last + 1))
    except ValueError:
        raise UsageError(
            f"--generations: expected a range like 1-4 or a list like 0,2, got {spec!r}"
        ) from None
    return chosen


def parse_split(spec: str | None) -> dict[str, float]:
    """`train=0.95,test=0.05` into fractions that add up to 1, in the order given."""
    if not spec:
        return {}
    parts: dict[str, float] = {}
    for item in spec.split(","):
        name, _, value = (text.strip() for text in item.partition("="))
        try:
            fraction = float(value)
        except ValueError:
            raise UsageError(f"--split: expected name=fraction, got {item!r}") from None
        if not _PART_NAME.fullmatch(name):
            raise UsageError(
                f"--split: a part's name is letters, digits, - and _ (it names a file), got {name!r}"
            )
        if name in parts:
            raise UsageError(f"--split: the part {name!r} is named twice")
        parts[name] = fraction
    total = sum(parts.values())
    if not all(0 <= f <= 1 for f in parts.values()) or not abs(total - 1) <= 1e-6:
        raise UsageError(f"--split: fractions must be >= 0 and add up to 1, got {spec!r}")
    return parts


def export_run(
    run_dir: Path,
    out: Path,
    *,
    shape: ExportFormat = "alpaca",
    file_format: FileFormat | None = None,
    generations: set[int] | None = None,
    split: dict[str, float] | None = None,
    shuffle: bool = False,
    seed: int = 0,
    system_prompt: str | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> ExportResult:
    """Write the kept records of `run_dir` to `out` (or one file per part of `split`)."""
    manifest = load_manifest(run_dir)
    file_format = file_format or file_format_of(out)
    if file_format == "parquet":
        if shape == "ifeval":
            raise UsageError(
                "--format ifeval: its kwargs differ per constraint, which one Parquet column "
                "cannot hold; write JSON Lines (or rlvr to Parquet)"
            )
        require_pyarrow()
    system = _system_turn(manifest, shape, system_prompt)
    fractions = split or {}
    targets = {name: part_file(out, name) for name in fractions} or {None: out}
    for target in targets.values():
        check_target(target)
    if not generation_files(run_dir):
        raise RunDirError(f"{run_dir}: the run has no records yet")

    with ExitStack() as stack:
        records_to_parquet = shape == "jsonl" and file_format == "parquet"
        scan = scan_export(
            run_dir,
            generations,
            stack,
            fields=records_to_parquet,
            constrained=shape in EXPORT_ONLY_SHAPES,
            paired=shape in PAIRED_SHAPES,
        )
        members = members_of(scan, fractions, seed)
        if shuffle:
            for name, indices in members.items():
                random.Random(f"{seed}:{name or ''}").shuffle(indices)
        columns = record_columns(scan) if records_to_parquet else {}
        make_row = row_maker(shape, system, columns)
        schema = parquet_schema(shape, system, columns) if file_format == "parquet" else None

        def write(path: Path, indices: array) -> None:
            write_file(path, file_format, scan.chunks(indices, make_row, row_group_rows), schema)

        _write_all({target: members[name] for name, target in targets.items()}, write)
    parts = [
        ExportPart(
            name=name,
            file=str(target),
            records=len(members[name]),
            lineages=len({scan.lineage[i] for i in members[name]}),
        )
        for name, target in targets.items()
    ]
    return ExportResult(
        run=str(run_dir),
        status=manifest.status or "unknown",
        shape=shape,
        file_format=file_format,
        system_prompt=system,
        parts=parts,
        left_out_without_output=scan.left_out,
        left_out_without_constraints=scan.left_out_unconstrained,
        left_out_without_pair=scan.left_out_unpaired,
    )


def _system_turn(manifest: Manifest, shape: ExportFormat, option: str | None) -> str | None:
    """The system prompt to write: the option's, else the run's; "" and None mean none."""
    if shape in ("jsonl", "ifeval", "dpo"):
        if option:
            what = "writes evol's records as they are" if shape == "jsonl" else "has no system turn"
            raise UsageError(
                f"--system-prompt: the {shape} format {what}; "
                "use alpaca, sharegpt or openai-chat (or rlvr) for a system turn"
            )
        return None
    if option is None:
        option = manifest.config.system_prompt
    return option or None


def _write_all(files: dict[Path, array], write: Callable[[Path, array], None]) -> None:
    """`write` each file's records beside it, then rename them into place. Writing is all or
    none; the renames are not (one fails only in rare cases, such as a target that became a
    folder meanwhile), so a failed one leaves the parts before it replaced and names its own."""
    written: list[tuple[Path, Path]] = []
    try:
        for target, indices in files.items():
            temporary = target.with_name(target.name + ".tmp")
            written.append((temporary, target))
            try:
                write(temporary, indices)
            except OSError as error:
                shown = temporary if temporary.is_symlink() else target
                raise UsageError(write_error(shown, error)) from None
    except BaseException:
        for temporary, _target in written:
            if temporary.is_file() and not temporary.is_symlink():  # a link is the user's
                temporary.unlink()
        raise
    try:
        for temporary, target in written:
            temporary.replace(target)
    except OSError as error:
        for temporary, _target in written:
            temporary.unlink(missing_ok=True)
        raise UsageError(f"{target}: cannot write it: {error.strerror}") from None


def write_rows(out: Path, records: list[dict[str, Any]], shape: ExportFormat) -> None:
    """Write records as rows of `shape` to `out` (its extension picks the file format), all
    or nothing, never over a file of a run nor through a link: what `evol select` writes."""
    check_target(out)
    file_format = file_format_of(out)
    columns: dict[str, str] = {}
    if file_format == "parquet":
        require_pyarrow()
        if shape == "jsonl":
            fields = dict.fromkeys(key for record in records for key in record)
            kinds = {(key, type(value)) for record in records for key, value in record.items()}
            columns = typed_columns(fields, kinds)
    make_row = row_maker(shape, None, columns)
    rows = [make_row(dict(record)) for record in records]
    schema = parquet_schema(shape, None, columns) if file_format == "parquet" else None
    _write_all({out: array("q")}, lambda path, _: write_file(path, file_format, [rows], schema))


def status_warning(result: ExportResult) -> str | None:
    """The plain warning for a run that is not complete; None for a complete one."""
    if result.status == "complete":
        return None
    state = {
        "running": "is still running, or was killed before it finished",
        "failed": "is incomplete (some steps failed after all retries)",
    }.get(result.status, f"is {result.status}")
    return f"{result.run} {state}: exporting the {result.records} records written so far"


def format_export(result: ExportResult) -> str:
    """What `evol export` prints: the run's status, then records and lineages per file."""
    lines = [f"{result.run} ({result.status}): {result.records} records exported"]
    for part in result.parts:
        lines.append(f"{part.file}: {part.records} records, {part.lineages} lineages")
    return "\n".join(lines)
