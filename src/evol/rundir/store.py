"""The run directory's files written: `RunStore` opens a run directory under its lock, reads
its records once, appends each new one, and puts the files in order at the end. Its layout
and the guards on what is written there are `evol.rundir.layout`'s, the reading of a record
file `evol.rundir.record_files`'s, the JSONL mechanics, the lock and atomic rewrites
`evol.jsonl`'s.

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
`layout.refuse_run_state` is the one guard every command calls on a path the user gives it.
Every record is appended as one line and flushed before it counts as done; lineages finish in
any order, so the record files are put in seed-file order when a run ends. On open, a torn
last line is cut off, and every record read is handed to the observers the caller passes (the
lineage index, the counts). Every command reads records through `record_files.read_records`,
which checks each line against the record model: a damaged one is a RunDirError naming its
file and line.
The store knows file formats, not LLMs, nor what a round means.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from filelock import FileLock

from evol.errors import RunDirError
from evol.jsonl import (
    append_line,
    atomic_write,
    lock_directory,
    open_for_append,
    open_to_read,
    repair_torn_tail,
)
from evol.rundir.layout import (
    BATCH_DIR,
    CONTAMINATION,
    DATASET,
    ELIMINATED,
    JOURNAL,
    MANIFEST,
    METRICS,
    OWN_FILE_NAME,
    SCORE_BATCH_DIR,
    SCORE_JOURNAL,
    SCORES,
    generation_file,
    output_files,
    output_sizes,
    refuse_foreign,
    refuse_run_state,
)
from evol.rundir.record_files import iter_records, model_of, scan_records
from evol.rundir.records import EliminatedRecord, Record

Observer = Callable[[dict[str, Any], str | None], None]
"""Called with each record (as written) and its elimination reason, or None when kept."""


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
                if OWN_FILE_NAME.fullmatch(leftover.name):
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
            model = model_of(path)
            with open_to_read(path) as lines:
                for data in scan_records(lines, path, model, repair):
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
                    with open_to_read(path, follow_links=False) as source:
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
        refuse_foreign(self.out_dir)
        self._lock_file = lock_directory(
            self.out_dir, "another evol run is writing to this directory"
        )

    def _remove_outputs(self) -> None:
        for path in self.output_files():
            path.unlink()
        for name in (MANIFEST, DATASET, JOURNAL, SCORES, SCORE_JOURNAL, METRICS, CONTAMINATION):
            (self.out_dir / name).unlink(missing_ok=True)
        for folder in (BATCH_DIR, SCORE_BATCH_DIR):
            batches = self.out_dir / folder
            if batches.is_dir():  # not a link: refuse_foreign refused that
                shutil.rmtree(batches)

    def _append(self, name: str, data: dict[str, Any]) -> None:
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = open_for_append(self.out_dir / name)
        append_line(writer, data)


def _sort_lines(path: Path, key: Callable[[dict[str, Any]], tuple[int, int]]) -> None:
    """Rewrite a JSONL file with its lines ordered by `key`; holds offsets, not the lines."""
    with open_to_read(path, follow_links=False) as source:
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
