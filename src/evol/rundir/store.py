"""The run directory's files: its layout, its record files, and the guards on what is written
there (the JSONL mechanics, the lock and atomic rewrites are evol.jsonl's).

Layout of `--out DIR`:

    gen_0.jsonl        seeds with their answers
    gen_<k>.jsonl      kept evolutions k steps from their seed
    eliminated.jsonl   failed evolutions (and failed seed answers), each with its `reason`
    dataset.jsonl      gen_0 .. gen_N concatenated: the training set (written at the end)
    run.json           the manifest (see evol.rundir.manifest)
    calls.jsonl        the call journal (see evol.rundir.journal)
    .evol.lock         held while a process writes the run (the file itself stays)

The directory is the user's: evol refuses a non-empty one that holds no run of its own, and
only ever writes, rewrites or deletes the files named above, never through a symbolic link
(every writer opens with O_NOFOLLOW). No command writes into those files for anything else:
`refuse_run_state` is the one guard every command calls on a path the user gives it.
Every record is appended as one line and flushed before it counts as done; lineages finish in
any order, so the record files are put in seed-file order when a run ends. On open, a torn
last line is cut off, and every record read is handed to the observers the caller passes (the
lineage index, the counts). Every command reads records through `read_records`, which checks
each line against the record model: a damaged one is a RunDirError naming its file and line.
The store knows file formats, not LLMs, nor what a round means.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from filelock import FileLock
from pydantic import ValidationError

from evol.errors import RunDirError, UsageError
from evol.jsonl import (
    LOCK_FILE,
    append_line,
    atomic_write,
    lock_directory,
    open_for_append,
    open_to_read,
    repair_torn_tail,
    scan,
)
from evol.rundir.records import EliminatedRecord, Record

MANIFEST = "run.json"
ELIMINATED = "eliminated.jsonl"
DATASET = "dataset.jsonl"
JOURNAL = "calls.jsonl"
# What `evol score` adds beside the run's records.
SCORES = "scores.jsonl"
METRICS = "metrics.json"
CONTAMINATION = "contamination.json"
BATCH_DIR = "batch"  # `evol run --batch`: the batches made and the rows they returned
SCORE_BATCH_DIR = "batch-score"  # `evol score --batch`: the same, for the scoring calls
# Every file evol may write in a run directory; nothing else there is ever touched.
_OWN_NAME = re.compile(
    r"(gen_\d+\.jsonl|eliminated\.jsonl|dataset\.jsonl|calls\.jsonl|run\.json"
    r"|scores\.jsonl|metrics\.json|contamination\.json)(\.tmp)?"
)

Observer = Callable[[dict[str, Any], str | None], None]
"""Called with each record (as written) and its elimination reason, or None when kept."""


def generation_file(generation: int) -> str:
    return f"gen_{generation}.jsonl"


def generation_files(run_dir: Path) -> list[Path]:
    """The gen_<k>.jsonl files of a run directory in generation order; a missing one is skipped
    (gen_0 is absent when every seed answer failed, yet gen_1 may exist)."""
    found = [p for p in run_dir.glob("gen_*.jsonl") if p.stem[4:].isdigit()]
    return sorted(found, key=lambda p: int(p.stem[4:]))


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
    model = _model_of(Path(path))

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


def _scan_records(
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


def _model_of(path: Path) -> type[Record]:
    return EliminatedRecord if path.name == ELIMINATED else Record


def _problems(error: ValidationError) -> str:
    """'wrong generation; missing round, output': the fields at fault, in the model's order."""
    missing, wrong = {}, {}
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "the record"
        (missing if problem["type"] == "missing" else wrong)[field] = None
    parts = [f"wrong {', '.join(wrong)}"] if wrong else []
    return "; ".join(parts + ([f"missing {', '.join(missing)}"] if missing else []))


def output_files(run_dir: Path) -> list[Path]:
    """The files that hold records, gen_0 first."""
    eliminated = run_dir / ELIMINATED
    return generation_files(run_dir) + ([eliminated] if eliminated.exists() else [])


def output_sizes(run_dir: Path) -> dict[str, int]:
    """Bytes of each file holding records, dataset.jsonl included (recorded in run.json)."""
    paths = output_files(run_dir) + [run_dir / DATASET, run_dir / JOURNAL]
    return {path.name: path.stat().st_size for path in paths if path.exists()}


class RunStore:
    """One run directory, opened for appending by one process at a time."""

    def __init__(self, out_dir: Path, generations: int, observers: Iterable[Observer] = ()):
        self.out_dir = out_dir
        self.generations = generations
        self.observers = list(observers)  # told of every record read or written
        self._writers: dict[str, BinaryIO] = {}
        self._lock_file: FileLock | None = None

    @classmethod
    def open(
        cls,
        out_dir: Path,
        *,
        generations: int,
        overwrite: bool,
        observers: Iterable[Observer] = (),
    ) -> RunStore:
        """Lock `out_dir` (made if need be), refusing a directory that is not a run's; with
        `overwrite`, delete the run it holds. Its records are read by `scan`."""
        store = cls(out_dir, generations, observers)
        try:
            store._prepare_dir()
            for leftover in out_dir.glob("*.tmp"):  # a crash mid atomic write leaves these
                if _OWN_NAME.fullmatch(leftover.name):
                    leftover.unlink()
            if overwrite:
                store._remove_outputs()
        except BaseException:
            store.close()
            raise
        return store

    def scan(self, *, repair: bool = True, also: Iterable[Observer] = ()) -> None:
        """Read every record on disk once, handing each to the observers and to `also`.

        With `repair` (under the lock), a torn last line is cut first and a line that is not
        a record is an error; without it (a look from outside a run), such lines are skipped.
        """
        readers = [*self.observers, *also]
        for path in self.output_files():
            if repair:
                repair_torn_tail(path)
            model = _model_of(path)
            with open_to_read(path) as lines:
                for data in _scan_records(lines, path, model, repair):
                    reason = data.get("reason") if model is EliminatedRecord else None
                    for reader in readers:
                        reader(data, reason)

    def output_sizes(self) -> dict[str, int]:
        return output_sizes(self.out_dir)

    def output_files(self) -> list[Path]:
        return output_files(self.out_dir)

    def kept_instructions(self) -> Iterator[tuple[str, str, str]]:
        """(id, root id, instruction) of every kept record on disk, streamed, gen_0 first."""
        for data in iter_records(self.out_dir):
            yield data["id"], data["root_id"], data["instruction"]

    def add(self, record: Record) -> None:
        """Append a kept record to its generation's file."""
        data = record.model_dump(mode="json")
        self._append(generation_file(record.generation), data)
        self._notify(data, None)

    def add_eliminated(self, record: EliminatedRecord) -> None:
        """Append a failed evolution (or a failed seed answer) to eliminated.jsonl."""
        data = record.model_dump(mode="json")
        self._append(ELIMINATED, data)
        self._notify(data, record.reason)

    def sort_outputs(self, seed_order: dict[str, int]) -> None:
        """Put every record file in seed-file order (then round): lineages finish in any order.

        Each file is rewritten atomically, and only if it is out of order, so a crash part-way
        leaves every file whole and the next finish sorts what is left.
        """
        self._close_writers()
        unknown = len(seed_order)
        for path in self.output_files():
            _sort_lines(
                path, lambda data: (seed_order.get(data["root_id"], unknown), data["round"])
            )

    def write_dataset(self) -> int:
        """Write dataset.jsonl as gen_0 .. gen_N in order, atomically; return its line count.

        A generation that kept nothing gets an empty file, so that a script may read gen_k for
        every k of a finished run.
        """
        lines = 0
        for generation in range(self.generations + 1):
            path = self.out_dir / generation_file(generation)
            if not path.exists():
                open_for_append(path).close()

        def concatenated(out: BinaryIO) -> None:
            nonlocal lines
            for generation in range(self.generations + 1):
                path = self.out_dir / generation_file(generation)
                if path.exists():
                    with path.open("rb") as source:
                        for line in source:
                            out.write(line)
                            lines += 1

        atomic_write(self.out_dir / DATASET, concatenated)
        return lines

    def close(self) -> None:
        self._close_writers()
        if self._lock_file:
            self._lock_file.release()
            self._lock_file = None

    # -- internals ---------------------------------------------------------------------------

    def _notify(self, data: dict[str, Any], reason: str | None) -> None:
        for observer in self.observers:
            observer(data, reason)

    def _close_writers(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _prepare_dir(self) -> None:
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise RunDirError(f"{self.out_dir}: --out is a file; give a directory")
        refuse_run_state(self.out_dir, "--out")
        _refuse_foreign(self.out_dir)
        self._lock_file = lock_directory(
            self.out_dir, "another evol run is writing to this directory"
        )

    def _remove_outputs(self) -> None:
        for path in self.output_files():
            path.unlink()
        for name in (MANIFEST, DATASET, JOURNAL, SCORES, METRICS, CONTAMINATION):
            (self.out_dir / name).unlink(missing_ok=True)
        for folder in (BATCH_DIR, SCORE_BATCH_DIR):
            batches = self.out_dir / folder
            if batches.is_dir():  # not a link: _refuse_foreign refused that
                shutil.rmtree(batches)

    def _append(self, name: str, data: dict[str, Any]) -> None:
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = open_for_append(self.out_dir / name)
        append_line(writer, data)


def is_own_name(name: str) -> bool:
    """Whether `name` is one evol gives a file (or a batch folder) in a run directory."""
    return bool(_OWN_NAME.fullmatch(name)) or name in (LOCK_FILE, BATCH_DIR, SCORE_BATCH_DIR)


def refuse_run_state(target: Path, option: str) -> None:
    """Refuse to write `target` (a file or a folder a command is given) when it is, or lies
    inside, one of the files evol keeps in a run directory (records, run.json, the journal,
    the lock, the scores, batch/), links and `..` resolved first. Every command that writes
    where the user says calls this."""
    try:
        resolved = target.resolve()
    except (RuntimeError, OSError) as error:  # a loop: RuntimeError up to Python 3.12
        if isinstance(error, OSError) and error.errno != errno.ELOOP:
            raise
        raise UsageError(
            f"{target}: a loop of symbolic links; give {option} another path"
        ) from None
    for entry, folder in zip((resolved, *resolved.parents), resolved.parents, strict=False):
        if is_own_name(entry.name) and _holds_a_run(folder):
            raise UsageError(
                f"{target}: is {'' if entry == resolved else 'inside '}{entry.name} of the run "
                f"in {folder}; give {option} a path outside the run's own files"
            )


def refuse_links(run_dir: Path) -> None:
    """Refuse a run directory where a name evol writes is a symbolic link."""
    for entry in run_dir.iterdir():
        if is_own_name(entry.name) and entry.is_symlink():
            raise RunDirError(
                f"{entry}: is a symbolic link; evol writes only regular files in its run "
                "directory: remove the link or choose another --out"
            )


def _holds_a_run(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() or (folder / LOCK_FILE).exists()


def _refuse_foreign(out_dir: Path) -> None:
    """Refuse a directory that holds things but no evol run, and any link among evol's files.

    evol writes run.json before its first record, so a run directory without one holds
    nothing of evol's but a lock or a leftover temporary file.
    """
    if not out_dir.is_dir():
        return
    refuse_links(out_dir)
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        return
    others = [
        entry.name
        for entry in out_dir.iterdir()
        if entry.name != LOCK_FILE and not entry.name.endswith(".tmp")
    ]
    if others:
        shown = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        raise RunDirError(
            f"{out_dir}: not empty ({shown}) and holds no evol run (no run.json): choose a new "
            "or empty directory for --out"
        )


def _sort_lines(path: Path, key: Callable[[dict[str, Any]], tuple[int, int]]) -> None:
    """Rewrite a JSONL file with its lines ordered by `key`; holds offsets, not the lines."""
    with path.open("rb") as source:
        places: list[tuple[tuple[int, int], int, int]] = []
        offset = 0
        for line in source:
            places.append((key(orjson.loads(line)), offset, len(line)))
            offset += len(line)
        if all(places[i][0] <= places[i + 1][0] for i in range(len(places) - 1)):
            return
        places.sort()

        def in_order(out: BinaryIO) -> None:
            for _key, start, length in places:
                source.seek(start)
                out.write(source.read(length))

        atomic_write(path, in_order)
