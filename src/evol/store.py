"""The run directory: append-only JSONL files, the run.json manifest, and resume.

Layout of `--out DIR`:

    gen_0.jsonl        seeds with their answers
    gen_<k>.jsonl      kept evolutions k steps from their seed
    eliminated.jsonl   failed evolutions, each with its `reason`
    dataset.jsonl      gen_0 .. gen_N concatenated: the training set (written at the end)
    run.json           config without secrets, counts, usage, timings, versions
    calls.jsonl        replies of calls whose step is not finished yet (the call journal)
    .evol.lock         held while a process writes the run (the file itself stays)

The directory is the user's: evol refuses a non-empty one that holds no run of its own, and
only ever writes, rewrites or deletes the files named above, never through a symbolic link.

Every record is appended as one line and flushed before it counts as done; lineages finish in
any order, so the record files are put in seed-file order when a run ends. A step takes several
calls (evolve, then answer and judge), so each reply is also journalled the moment it arrives:
after a crash the step replays the journalled replies and pays only for the calls that were in
flight. On open, a torn last line is cut off and the files are read once to rebuild where each
lineage stands, unless run.json shows the run complete and its files untouched since. The
store knows file formats, not LLMs.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from filelock import FileLock, Timeout

from evol.errors import ConfigMismatch, RunDirError
from evol.records import EliminatedRecord, Record

MANIFEST = "run.json"
ELIMINATED = "eliminated.jsonl"
DATASET = "dataset.jsonl"
JOURNAL = "calls.jsonl"
_LOCK = ".evol.lock"
# Every file evol may write in a run directory; nothing else there is ever touched.
_OWN_NAME = re.compile(
    r"(gen_\d+\.jsonl|eliminated\.jsonl|dataset\.jsonl|calls\.jsonl|run\.json)(\.tmp)?"
)
_WRITE_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)


def generation_file(generation: int) -> str:
    return f"gen_{generation}.jsonl"


def generation_files(run_dir: Path) -> list[Path]:
    """The gen_<k>.jsonl files of a run directory in generation order; a missing one is skipped
    (gen_0 is absent when every seed answer failed, yet gen_1 may exist)."""
    found = [p for p in run_dir.glob("gen_*.jsonl") if p.stem[4:].isdigit()]
    return sorted(found, key=lambda p: int(p.stem[4:]))


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """run.json of a finished or interrupted run, for the tools that read a run directory."""
    path = run_dir / MANIFEST
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no run here (run.json is missing)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunDirError(f"{path}: unreadable manifest ({error})") from None


def iter_records(run_dir: Path, *, eliminated: bool = False) -> Iterator[dict[str, Any]]:
    """Stream the kept records (gen_0 first) or, with `eliminated`, the eliminated ones."""
    paths = [run_dir / ELIMINATED] if eliminated else generation_files(run_dir)
    for path in paths:
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    yield json.loads(line)


@dataclass(slots=True)
class Tip:
    """The newest kept instruction of a lineage: what its next round evolves."""

    id: str
    instruction: str
    input: str
    generation: int


@dataclass(slots=True)
class LineageProgress:
    """Where one seed's lineage stands."""

    seed_done: bool = False
    rounds_done: int = 0
    tip: Tip | None = None  # None while the seed itself is the tip


@dataclass
class RunCounts:
    """Totals over every record on disk, kept current as records are added."""

    kept: Counter[int] = field(default_factory=Counter)
    eliminated: Counter[str] = field(default_factory=Counter)
    operations: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    usage: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def add(self, record: dict[str, Any], reason: str | None) -> None:
        if reason:
            self.eliminated[reason] += 1
        else:
            self.kept[record["generation"]] += 1
        if record.get("operation"):
            self.operations[record["operation"]]["eliminated" if reason else "kept"] += 1
        for role, tokens in (record.get("usage") or {}).items():
            self.usage[role].update({k: v for k, v in tokens.items() if isinstance(v, int)})

    def as_dict(self) -> dict[str, Any]:
        return {
            "kept_per_generation": {str(k): v for k, v in sorted(self.kept.items())},
            "kept": sum(self.kept.values()),
            "eliminated_per_reason": dict(sorted(self.eliminated.items())),
            "eliminated": sum(self.eliminated.values()),
            "operations": {op: dict(c) for op, c in sorted(self.operations.items())},
            "usage": {role: dict(c) for role, c in sorted(self.usage.items())},
        }


class RunStore:
    """One run directory, opened for appending by one process at a time."""

    def __init__(self, out_dir: Path, generations: int):
        self.out_dir = out_dir
        self.generations = generations
        self.counts = RunCounts()
        self.previous_manifest: dict[str, Any] | None = None
        self._progress: dict[str, LineageProgress] = {}
        self._journal: dict[tuple[str, str], dict[str, Any]] = {}
        self._recorded: set[str] = set()
        self._writers: dict[str, BinaryIO] = {}
        self._lock_file: Any = None
        self.finished = False  # complete, and untouched since: nothing to index or run

    @classmethod
    def open(
        cls, out_dir: Path, *, fingerprint: dict[str, Any], generations: int, overwrite: bool
    ) -> RunStore:
        """Lock `out_dir`, check it holds the same run (or none), repair it and index it."""
        store = cls(out_dir, generations)
        try:
            store._prepare_dir()
            for leftover in out_dir.glob("*.tmp"):  # a crash mid atomic write leaves these
                if _OWN_NAME.fullmatch(leftover.name):
                    leftover.unlink()
            if overwrite:
                store._remove_outputs()
            store.previous_manifest = store._read_manifest()
            if store.previous_manifest is not None:
                _check_fingerprint(out_dir, store.previous_manifest, fingerprint, generations)
                store.finished = store._finished(store.previous_manifest)
                if store.finished:
                    return store
            store._rebuild_index()
            store._load_journal()
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def peek(cls, out_dir: Path, *, generations: int) -> RunStore:
        """Read where a run stands without locking or repairing anything (for planning)."""
        store = cls(out_dir, generations)
        if out_dir.is_dir():
            store._rebuild_index(repair=False)
        return store

    @classmethod
    def finished_as_recorded(cls, out_dir: Path, generations: int, seeds_digest: str) -> bool:
        """True when run.json says this seed file's run is complete and its files are as it
        left them (checked again under the lock by `open`)."""
        try:
            manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        same_seeds = manifest.get("fingerprint", {}).get("seeds file content") == seeds_digest
        return same_seeds and cls(out_dir, generations)._finished(manifest)

    def output_sizes(self) -> dict[str, int]:
        """Bytes of each file holding records, dataset.jsonl included (recorded in run.json)."""
        paths = self._output_files() + [self.out_dir / DATASET, self.out_dir / JOURNAL]
        return {path.name: path.stat().st_size for path in paths if path.exists()}

    def _finished(self, manifest: dict[str, Any]) -> bool:
        return (
            manifest.get("status") == "complete"
            and manifest.get("config", {}).get("generations") == self.generations
            and manifest.get("outputs") == self.output_sizes()
        )

    def progress(self, root_id: str) -> LineageProgress:
        """Where the lineage of seed `root_id` stands (fresh if never seen)."""
        return self._progress.get(root_id) or LineageProgress()

    def kept_instructions(self) -> Iterator[tuple[str, str, str]]:
        """(id, root id, instruction) of every kept record on disk, streamed, gen_0 first."""
        for data in iter_records(self.out_dir):
            yield data["id"], data["root_id"], data["instruction"]

    def steps_done(self) -> int:
        """Seed answers plus evolution rounds already on disk (for progress after a resume)."""
        return sum(
            p.seed_done + min(p.rounds_done, self.generations) for p in self._progress.values()
        )

    def add(self, record: Record) -> None:
        """Append a kept record to its generation's file."""
        data = record.model_dump(mode="json")
        self._append(generation_file(record.generation), data)
        self._index(data, reason=None)

    def add_eliminated(self, record: EliminatedRecord) -> None:
        """Append a failed evolution to eliminated.jsonl."""
        data = record.model_dump(mode="json")
        self._append(ELIMINATED, data)
        self._index(data, reason=record.reason)

    def remember_call(self, item_id: str, role: str, reply: dict[str, Any]) -> None:
        """Journal one call's reply until the record of its step is written."""
        self._append(JOURNAL, {"item": item_id, "role": role, "reply": reply})

    def recall_call(self, item_id: str, role: str) -> dict[str, Any] | None:
        """The journalled reply of a call made before a crash, if any (each is replayed once)."""
        return self._journal.pop((item_id, role), None)

    def clear_journal(self) -> None:
        """Drop the call journal once every step is recorded: it holds nothing left to replay."""
        writer = self._writers.pop(JOURNAL, None)
        if writer:
            writer.close()
        (self.out_dir / JOURNAL).unlink(missing_ok=True)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Replace run.json atomically: a crash leaves the old or the new one, never half."""
        _atomic_write(
            self.out_dir / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        )

    def sort_outputs(self, seed_order: dict[str, int]) -> None:
        """Put every record file in seed-file order (then round): lineages finish in any order.

        Each file is rewritten atomically, and only if it is out of order, so a crash part-way
        leaves every file whole and the next finish sorts what is left.
        """
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        unknown = len(seed_order)
        for path in self._output_files():
            _sort_lines(
                path, lambda data: (seed_order.get(data["root_id"], unknown), data["round"])
            )

    def write_dataset(self) -> int:
        """Write dataset.jsonl as gen_0 .. gen_N in order, atomically; return its line count."""
        target = self.out_dir / DATASET
        temporary = target.with_suffix(".jsonl.tmp")
        lines = 0
        with temporary.open("wb") as out:
            for generation in range(self.generations + 1):
                path = self.out_dir / generation_file(generation)
                if not path.exists():
                    continue
                with path.open("rb") as source:
                    for line in source:
                        out.write(line)
                        lines += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
        _fsync_dir(self.out_dir)
        return lines

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        if self._lock_file:
            self._lock_file.release()
            self._lock_file = None

    # -- internals ---------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise RunDirError(f"{self.out_dir}: --out is a file; give a directory")
        _refuse_foreign(self.out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._lock_file = FileLock(self.out_dir / _LOCK)
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
        for path in self._output_files():
            path.unlink()
        for name in (MANIFEST, DATASET, JOURNAL):
            (self.out_dir / name).unlink(missing_ok=True)

    def _output_files(self) -> list[Path]:
        """The files that hold records, gen_0 first."""
        eliminated = self.out_dir / ELIMINATED
        return generation_files(self.out_dir) + ([eliminated] if eliminated.exists() else [])

    def _read_manifest(self) -> dict[str, Any] | None:
        path = self.out_dir / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise RunDirError(
                f"{path}: unreadable manifest ({error}); use --overwrite to start afresh"
            ) from None

    def _rebuild_index(self, repair: bool = True) -> None:
        for path in self._output_files():
            if repair:
                _repair_torn_tail(path)
            reason_file = path.name == ELIMINATED
            with path.open("rb") as lines:
                for number, line in enumerate(lines, start=1):
                    try:
                        data = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        if not repair:
                            continue  # a torn line: the next real run cuts it
                        raise RunDirError(
                            f"{path}:{number}: corrupt record; use --overwrite to start afresh"
                        ) from None
                    if not _is_record(data):
                        raise RunDirError(
                            f"{path}:{number}: not an evol record; use --overwrite to start afresh"
                        )
                    self._recorded.add(data["id"])
                    self._index(data, reason=data.get("reason") if reason_file else None)

    def _load_journal(self) -> None:
        """Keep the replies of unfinished steps; rewrite the journal with only those."""
        path = self.out_dir / JOURNAL
        if not path.exists():
            return
        _repair_torn_tail(path)
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                entry = json.loads(line)
                if entry["item"] not in self._recorded:
                    self._journal[(entry["item"], entry["role"])] = entry["reply"]
        text = "".join(
            json.dumps({"item": item, "role": role, "reply": reply}, ensure_ascii=False) + "\n"
            for (item, role), reply in self._journal.items()
        )
        _atomic_write(path, text)
        self._recorded.clear()  # only needed to sort the journal

    def _index(self, data: dict[str, Any], reason: str | None) -> None:
        self.counts.add(data, reason)
        progress = self._progress.setdefault(data["root_id"], LineageProgress())
        round_ = data["round"]
        if round_ == 0:
            progress.seed_done = True
            return
        if round_ > progress.rounds_done:
            progress.rounds_done = round_
        if reason is None and (
            progress.tip is None or data["generation"] > progress.tip.generation
        ):
            progress.tip = Tip(
                data["id"], data["instruction"], data.get("input", ""), data["generation"]
            )
        if progress.rounds_done >= self.generations:
            progress.tip = _finished_tip(progress.tip)

    def _append(self, name: str, data: dict[str, Any]) -> None:
        """One line, flushed to the OS: a kill -9 after this returns cannot lose it."""
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = _open_for_append(self.out_dir / name)
        writer.write(orjson.dumps(data) + b"\n")
        writer.flush()


def _refuse_foreign(out_dir: Path) -> None:
    """Refuse a directory that holds things but no evol run, and any link among evol's files.

    evol writes run.json before its first record, so a run directory without one holds
    nothing of evol's but a lock or a leftover temporary file.
    """
    if not out_dir.is_dir():
        return
    entries = list(out_dir.iterdir())
    for entry in entries:
        if (_OWN_NAME.fullmatch(entry.name) or entry.name == _LOCK) and entry.is_symlink():
            raise RunDirError(
                f"{entry}: is a symbolic link; evol writes only regular files in its run "
                "directory: remove the link or choose another --out"
            )
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        return
    others = [
        entry.name for entry in entries if entry.name != _LOCK and not entry.name.endswith(".tmp")
    ]
    if others:
        shown = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        raise RunDirError(
            f"{out_dir}: not empty ({shown}) and holds no evol run (no run.json): choose a new "
            "or empty directory for --out"
        )


def _is_record(data: object) -> bool:
    """The fields the resume index reads, with their types."""
    return (
        isinstance(data, dict)
        and isinstance(data.get("id"), str)
        and isinstance(data.get("root_id"), str)
        and isinstance(data.get("round"), int)
        and isinstance(data.get("generation"), int)
    )


def _open_for_append(path: Path) -> BinaryIO:
    """Open for appending, refusing to follow a symbolic link (where the OS can say so)."""
    try:
        return os.fdopen(os.open(path, _WRITE_FLAGS, 0o644), "ab")
    except OSError as error:
        raise RunDirError(f"{path}: cannot write it: {error.strerror}") from None


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
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("wb") as out:
            for _key, start, length in places:
                source.seek(start)
                out.write(source.read(length))
            out.flush()
            os.fsync(out.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _finished_tip(tip: Tip | None) -> Tip | None:
    # A finished lineage is never evolved again: keep its position, drop its text.
    return tip and Tip(tip.id, "", "", tip.generation)


def _check_fingerprint(
    out_dir: Path, manifest: dict[str, Any], new: dict[str, Any], generations: int
) -> None:
    old = manifest.get("fingerprint", {})
    differences = {
        name: (old.get(name), value) for name, value in new.items() if old.get(name) != value
    }
    # More generations extend a run (round k is the same whatever N is); fewer would hide records.
    old_generations = manifest.get("config", {}).get("generations", 0)
    if generations < old_generations:
        differences["--generations"] = (old_generations, generations)
    if differences:
        raise ConfigMismatch(str(out_dir), differences)


def _repair_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left without its newline or half-written."""
    with path.open("rb+") as fp:
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
        json.loads(line)
    except ValueError:
        return False
    return True


def _atomic_write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as fp:
        fp.write(text)
        fp.flush()
        os.fsync(fp.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
