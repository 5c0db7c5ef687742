"""Append-only JSON Lines files: the one place evol opens, appends to, repairs, reads and
replaces them, and takes a run directory's lock; and the JSON files that hold one model
(`write_model`, `read_model`: metrics.json, contamination.json).

Every command's files go through here: the run's records (`evol.rundir.store`), the call journal
(`evol.rundir.journal`), the batch state (`evol.llm.batch`) and the scores (`evol.quality.scoring`).

Links: every file is opened for writing with O_NOFOLLOW (a symbolic link in its place is
refused, its target untouched) and O_NONBLOCK (a FIFO in its place fails the open rather than
waiting for a reader); a file read or repaired must be a regular file. A file evol reads back
to rewrite, join or ingest is read with O_NOFOLLOW too (`open_to_read(..., follow_links=False)`),
and `refuse_symlinks` is the one check of the names evol writes before it uses a directory.

Durability, one policy for every file:

- `append_line` hands each line to the OS in unbuffered writes before it returns, so a kill -9
  of evol cannot lose it, and a write that fails part-way is taken back whole;
- `append_line(..., sync=True)` and `sync` also fsync, at the commit points a caller names:
  each line of batch/batches.jsonl (an intent is on disk before the create call that pays for a
  batch) and the end of each ingest of a batch's rows (paid rows are not lost to a power cut).
  The records, the call journal and the scores are not synced per line: a power cut may lose
  their last lines, which a resume redoes, while an fsync per line would put a disk flush on
  every call of a run;
- `atomic_write` fsyncs the new file and its directory around the rename.

A torn tail is what a crash leaves: the last line of a file, short of its newline or (after a
power cut) not JSON. `repair_torn_tail` cuts that line and nothing else; `scan` never parses a
final line without its newline, and with `torn_last` also passes over a last whole line its
parser refuses. Any other line a parser refuses is reported as the caller says (`on_bad`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import orjson
from filelock import FileLock, Timeout
from pydantic import BaseModel

from evol.errors import RunDirError, StorageError

LOCK_FILE = ".evol.lock"  # held while a process writes a run directory (the file itself stays)

_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
# O_NONBLOCK: a FIFO in a file's place fails the open (ENXIO) rather than waiting for a reader.
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | _NO_FOLLOW
_FRESH_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW
_WINDOW = 1 << 16  # bytes read from the end at first to find the last line; then 1 MiB more

T = TypeVar("T")
ModelT = TypeVar("ModelT", bound=BaseModel)

# -- opening ---------------------------------------------------------------------------------


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


def open_to_read(path: Path, *, follow_links: bool = True, remedy: str | None = None) -> BinaryIO:
    """Open a file to read; one that is not a regular file (a FIFO, a directory, a device)
    is a RunDirError rather than a read that blocks or fails later. Without `follow_links`
    (a file evol wrote and reads back to rewrite, join or ingest), a symbolic link in its
    place is refused too. `remedy`: what the refusal of an irregular file tells the user to do
    (default: restore the run directory, or --overwrite)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow_links else _NO_FOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if not follow_links and path.is_symlink():
            raise _link(path, OWN_LINK_REMEDY) from None
        raise RunDirError(f"{path}: cannot read it: {error.strerror}") from None
    _refuse_irregular(fd, path, remedy)
    return open(fd, "rb", closefd=True)


OWN_LINK_REMEDY = "remove it (evol made none)"


def read_back(path: Path, *, remedy: str | None = None) -> bytes | None:
    """The bytes of a file evol wrote and reads back before it rewrites it (None where there is
    none): a symbolic link in its place is refused (`open_to_read(..., follow_links=False)`),
    never read through, so the rewrite is never skipped for what lies elsewhere."""
    if not path.exists() and not path.is_symlink():
        return None
    with open_to_read(path, follow_links=False, remedy=remedy) as file:
        return file.read()


def refuse_symlinks(paths: Iterable[Path], remedy: str) -> None:
    """Refuse the first of `paths` that is a symbolic link, with a RunDirError that names it
    and says `remedy`: for the files and folders evol cuts, rewrites or deletes, where a link
    would carry the change elsewhere. The check before a whole directory is used; each open
    refuses a link again (O_NOFOLLOW)."""
    for path in paths:
        if path.is_symlink():
            raise _link(path, remedy)


def _link(path: Path, remedy: str) -> RunDirError:
    return RunDirError(f"{path}: is a symbolic link; {remedy}")


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


def _refuse_irregular(fd: int, path: Path, remedy: str | None = None) -> None:
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return
    os.close(fd)
    raise _irregular(path, remedy)


RUN_DIR_REMEDY = "the run directory is damaged: restore it, or start again with --overwrite"


def _irregular(path: Path, remedy: str | None = None) -> RunDirError:
    return RunDirError(f"{path}: not a regular file: {remedy or RUN_DIR_REMEDY}")


# -- appending -------------------------------------------------------------------------------


def append_line(writer: BinaryIO, data: Mapping[str, Any] | bytes, *, sync: bool = False) -> int:
    """Append one line (`data` as JSON, or bytes already encoded, without their newline) to a
    file from `open_for_append`, handed to the OS before this returns (fsynced too with
    `sync`); returns the offset where the line starts.

    A write that fails part-way (disk full, file-size limit) is cut off again, so that no
    half line is left between whole ones should a later write succeed.
    """
    line = (data if isinstance(data, bytes) else orjson.dumps(data)) + b"\n"
    start = writer.seek(0, os.SEEK_END)
    try:
        written = 0
        while written < len(line):  # a write may stop short, at a limit, before it fails
            written += writer.write(line[written:])
    except OSError as error:
        with contextlib.suppress(OSError):
            writer.truncate(start)
        raise StorageError(writer.name, error) from None
    if sync:
        sync_file(writer)
    return start


def sync_file(writer: BinaryIO) -> None:
    """Ask the disk to keep what was appended (fsync): a caller's commit point."""
    try:
        writer.flush()
        os.fsync(writer.fileno())
    except OSError as error:
        raise StorageError(writer.name, error) from None


# -- repairing and reading -------------------------------------------------------------------


def repair_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left without its newline or half-written (not JSON);
    every line before it stays as it is."""
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
        start = max(0, size - _WINDOW)
        while True:  # read back from the end until the newline before the last line
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


def scan(
    fp: BinaryIO,
    parse: Callable[[bytes], T],
    on_bad: Callable[[int, ValueError], Exception | None],
    *,
    skip_blank: bool = True,
    torn_last: bool = False,
) -> Iterator[tuple[int, int, int, T]]:
    """(line number from 1, offset, length, `parse(line)`) of each whole line of `fp`, read
    from its start; the offsets let a caller read a line again without holding it.

    A final line without its newline is a torn write: never parsed nor yielded. Blank lines
    are passed over (with `skip_blank`; otherwise `parse` meets them). A line `parse` refuses
    (ValueError) is bad: with `torn_last`, a bad line that ends the file is a torn write too
    (its newline came, the rest did not) and ends the scan; any other bad line goes to
    `on_bad(number, error)`, which returns the exception to raise, or None to read on.
    """
    offset, number = 0, 0
    line = fp.readline()
    while line:
        number += 1
        following = fp.readline()
        if not line.endswith(b"\n"):
            return
        if not (skip_blank and line.isspace()):
            try:
                value = parse(line)
            except ValueError as error:
                if torn_last and not following:
                    return
                problem = on_bad(number, error)
                if problem is not None:
                    raise problem from None
            else:
                yield number, offset, len(line), value
        offset += len(line)
        line = following


# -- replacing -------------------------------------------------------------------------------


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


def write_model(path: Path, model: BaseModel) -> Path:
    """Replace a JSON file (metrics.json, contamination.json) with `model`, indented,
    atomically; returns its path."""
    atomic_write(path, model.model_dump_json(indent=2) + "\n")
    return path


def read_model(path: Path, model: type[ModelT], remedy: str) -> ModelT | None:
    """A JSON file written by `write_model`, read as `model`; None when there is no such file.
    One that is not JSON, or not the model, is a RunDirError of one line that says `remedy`."""
    if not path.is_file():
        return None
    try:
        return model.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except ValueError as error:
        why = str(error).strip().splitlines()[0]
        raise RunDirError(f"{path}: unreadable ({why}); {remedy}") from None


# -- the lock --------------------------------------------------------------------------------


def lock_directory(directory: Path, busy: str) -> FileLock:
    """Hold `directory`'s lock (LOCK_FILE in it; the directory is made if need be, as
    filelock would) without waiting: while one process holds it, another is refused with
    `busy`. filelock opens the lock file following links: a link in its place is refused."""
    lock_path = directory / LOCK_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if lock_path.is_symlink():
            raise RunDirError(link_refusal(lock_path))
        lock = FileLock(lock_path)
        lock.acquire(timeout=0)
    except Timeout:
        raise RunDirError(f"{directory}: {busy}") from None
    except OSError as error:
        raise RunDirError(
            f"{directory}: cannot write the run directory: {error.strerror}"
        ) from None
    return lock
