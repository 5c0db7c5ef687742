"""The run directory's files: JSONL record files, their lock, their repair, atomic rewrites.

Layout of `--out DIR`:

    gen_0.jsonl        seeds with their answers
    gen_<k>.jsonl      kept evolutions k steps from their seed
    eliminated.jsonl   failed evolutions (and failed seed answers), each with its `reason`
    dataset.jsonl      gen_0 .. gen_N concatenated: the training set (written at the end)
    run.json           the manifest (see evol.manifest)
    calls.jsonl        the call journal (see evol.journal)
    .evol.lock         held while a process writes the run (the file itself stays)

The directory is the user's: evol refuses a non-empty one that holds no run of its own, and
only ever writes, rewrites or deletes the files named above, never through a symbolic link
(every writer opens with O_NOFOLLOW). No command writes into those files for anything else:
`refuse_run_state` is the one guard every command calls on a path the user gives it.
Every record is appended as one line and flushed before it counts as done; lineages finish in
any order, so the record files are put in seed-file order when a run ends. On open, a torn
last line is cut off, and every record read is handed to the observers the caller passes (the
lineage index, the counts). Every command reads records through `read_records`, which checks
each line against the record model: a damaged one is a RunDirError naming its file and line. The store knows file formats, not LLMs, nor what a round means.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from filelock import FileLock, Timeout
from pydantic import ValidationError

from evol.errors import RunDirError, StorageError, UsageError
from evol.records import EliminatedRecord, Record

MANIFEST = "run.json"
ELIMINATED = "eliminated.jsonl"
DATASET = "dataset.jsonl"
JOURNAL = "calls.jsonl"
LOCK_FILE = ".evol.lock"
# What `evol score` adds beside the run's records.
SCORES = "scores.jsonl"
METRICS = "metrics.json"
CONTAMINATION = "contamination.json"
BATCH_DIR = "batch"  # `evol run --batch`: the batches made and the rows they returned
# Every file evol may write in a run directory; nothing else there is ever touched.
_OWN_NAME = re.compile(
    r"(gen_\d+\.jsonl|eliminated\.jsonl|dataset\.jsonl|calls\.jsonl|run\.json"
    r"|scores\.jsonl|metrics\.json|contamination\.json)(\.tmp)?"
)
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
# O_NONBLOCK: a FIFO in a file's place fails the open (ENXIO) rather than waiting for a reader.
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | _NO_FOLLOW
_FRESH_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW

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
        with open_record_file(path) as fp:
            for _number, _offset, _length, record in read_records(fp, path):
                yield record


def open_record_file(path: Path) -> BinaryIO:
    """Open a file of the run directory to read; one that is not a regular file (a FIFO, a
    directory, a device) is a RunDirError rather than a read that blocks or fails later."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise RunDirError(f"{path}: cannot read it: {error.strerror}") from None
    _refuse_irregular(fd, path)
    return open(fd, "rb", closefd=True)


def read_records(fp: BinaryIO, path: Path) -> Iterator[tuple[int, int, int, dict[str, Any]]]:
    """(line number, offset, length, record) of every whole line of an open record file.

    Blank lines are skipped, and so is a last line without its newline: a run killed mid-write
    leaves one, and its resume cuts it. Any other line that is not a record is an error.
    """
    model = EliminatedRecord if Path(path).name == ELIMINATED else Record
    offset = 0
    for number, line in enumerate(fp, start=1):
        start, offset = offset, offset + len(line)
        if not line.endswith(b"\n"):
            return
        if line.strip():
            yield number, start, len(line), parse_record(line, path, number, model)


def parse_record(
    line: bytes, path: Path, number: int, model: type[Record] = Record
) -> dict[str, Any]:
    """One line of a record file as written, checked against `model`: every command reads
    records through here, so a damaged one is one line naming its file and line, never a
    TypeError deep in whatever reads it first."""
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise RunDirError(f"{path}:{number}: corrupt record") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}:{number}: not an evol record (not a JSON object)")
    try:
        # Strict, from the JSON: "1" or 1.0 is no generation, though the lax mode would take it.
        model.model_validate_json(line, strict=True)
    except ValidationError as error:
        raise RunDirError(f"{path}:{number}: not an evol record ({_problems(error)})") from None
    return data


def _problems(error: ValidationError) -> str:
    """'wrong generation; missing round, output': the fields at fault, in the model's order."""
    missing, wrong = {}, {}
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "the record"
        (missing if problem["type"] == "missing" else wrong)[field] = None
    parts = [f"wrong {', '.join(wrong)}"] if wrong else []
    return "; ".join(parts + ([f"missing {', '.join(missing)}"] if missing else []))


def _refuse_irregular(fd: int, path: Path) -> None:
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return
    os.close(fd)
    raise _irregular(path)


def _irregular(path: Path) -> RunDirError:
    return RunDirError(
        f"{path}: not a regular file: the run directory is damaged: restore it, or start "
        "again with --overwrite"
    )


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
            model = EliminatedRecord if path.name == ELIMINATED else Record
            with open_record_file(path) as lines:
                for number, line in enumerate(lines, start=1):
                    try:
                        data = parse_record(line, path, number, model)
                    except RunDirError as error:
                        if not repair:
                            continue  # a torn line: the next real run cuts it
                        raise RunDirError(f"{error}; use --overwrite to start afresh") from None
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
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._lock_file = FileLock(self.out_dir / LOCK_FILE)
            self._lock_file.acquire(timeout=0)
        except Timeout:
            raise RunDirError(
                f"{self.out_dir}: another evol run is writing to this directory"
            ) from None
        except OSError as error:
            raise RunDirError(
                f"{self.out_dir}: cannot write the run directory: {error.strerror}"
            ) from None

    def _remove_outputs(self) -> None:
        for path in self.output_files():
            path.unlink()
        for name in (MANIFEST, DATASET, JOURNAL, SCORES, METRICS, CONTAMINATION):
            (self.out_dir / name).unlink(missing_ok=True)
        batches = self.out_dir / BATCH_DIR
        if batches.is_dir():  # not a link: _refuse_foreign refused that
            shutil.rmtree(batches)

    def _append(self, name: str, data: dict[str, Any]) -> None:
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = open_for_append(self.out_dir / name)
        append_line(writer, data)


# -- file helpers, for the store and the journal -------------------------------------------


def open_for_append(path: Path) -> BinaryIO:
    """Open for appending (made if need be), unbuffered, refusing to follow a symbolic link
    (where the OS can say so): a link in its place is refused, its target untouched."""

    def opener(name: str, _flags: int) -> int:
        return os.open(name, _APPEND_FLAGS, 0o644)

    try:
        # open() with an opener, not os.fdopen: the file keeps its path as `name` for messages.
        return open(path, "ab", buffering=0, opener=opener)
    except OSError as error:
        raise write_failure(path, error) from None


def open_fresh(path: Path) -> BinaryIO:
    """Create `path` as a new, empty file to write, never landing on an existing one.

    O_NOFOLLOW stops symbolic links only: a hard link or a FIFO planted at the name would be
    written through (or block the open). So whatever is there is unlinked first (that drops
    the name, never what it points at) and the file is made with O_EXCL. A symbolic link in
    its place is refused (OSError), left as it is: it is the user's.
    """
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        os.unlink(path)  # a directory refuses: EISDIR

    def opener(name: str, _flags: int) -> int:
        return os.open(name, _FRESH_FLAGS, 0o644)

    return open(path, "wb", opener=opener)


def write_failure(path: Path, error: OSError) -> RunDirError:
    """The error for a file evol cannot write: a link in its place is refused by name, any
    other failure (a full disk, a limit) says what to do."""
    if path.is_symlink():
        return RunDirError(link_refusal(path))
    return StorageError(path, error)


def write_error(path: Path, error: OSError) -> str:
    """The one line for a file evol cannot write; a symbolic link in its place is named."""
    return str(write_failure(path, error))


def link_refusal(path: Path) -> str:
    return (
        f"{path}: is a symbolic link; evol writes no file through a link: remove it or choose "
        "another name"
    )


def append_line(writer: BinaryIO, data: dict[str, Any]) -> None:
    """One line, handed to the OS: a kill -9 after this returns cannot lose it.

    A write that fails part-way (disk full, file-size limit) is cut off again, so that no
    half line is left between whole ones should a later write succeed.
    """
    line = orjson.dumps(data) + b"\n"
    start = writer.seek(0, os.SEEK_END)
    try:
        written = 0
        while written < len(line):  # a write may stop short, at a limit, before it fails
            written += writer.write(line[written:])
    except OSError as error:
        with contextlib.suppress(OSError):
            writer.truncate(start)
        raise StorageError(writer.name, error) from None


def is_own_name(name: str) -> bool:
    """Whether `name` is one evol gives a file (or the batch folder) in a run directory."""
    return bool(_OWN_NAME.fullmatch(name)) or name in (LOCK_FILE, BATCH_DIR)


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


def repair_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left without its newline or half-written."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | _NO_FOLLOW)
    except IsADirectoryError:
        raise _irregular(path) from None
    except OSError as error:
        raise write_failure(path, error) from None
    _refuse_irregular(fd, path)
    try:
        _cut_torn_tail(fd)
    except OSError as error:
        raise StorageError(path, error) from None


def _cut_torn_tail(fd: int) -> None:
    with os.fdopen(fd, "rb+") as fp:
        size = fp.seek(0, os.SEEK_END)
        if size == 0:
            return
        start = max(0, size - (1 << 16))
        while True:
            fp.seek(start)
            tail = fp.read(size - start)
            cut = tail.rfind(b"\n", 0, len(tail) - 1)
            if cut >= 0 or start == 0:
                break
            start = max(0, start - (1 << 20))
        last_start = start + cut + 1 if cut >= 0 else 0
        last = tail[last_start - start :]
        if last.endswith(b"\n") and _parses(last):
            return
        fp.truncate(last_start)


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True


def atomic_write(path: Path, content: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Replace `path` with `content` (bytes, text, or a writer of bytes) atomically: a crash
    leaves the old file or the new one, never half of either. The temporary is made afresh
    (`open_fresh`), and `path` is renamed over, never opened: a hard link there keeps its
    content."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        if path.is_symlink():  # os.replace would not follow it, but nor may evol drop it
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        out = open_fresh(temporary)
    except OSError as error:
        raise write_failure(temporary if temporary.is_symlink() else path, error) from None
    try:
        with out:
            if isinstance(content, str):
                out.write(content.encode("utf-8"))
            elif isinstance(content, bytes):
                out.write(content)
            else:
                content(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
        _fsync_dir(path.parent)
    except (OSError, RunDirError) as error:  # RunDirError: a writer met a damaged record
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)  # made by this call: never a user's link
        if isinstance(error, OSError):
            raise StorageError(path, error) from None
        raise


def _fsync_dir(directory: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
