"""evol.jsonl, the one home of evol's JSON Lines files: append, torn-tail repair, reading past
a bad line, no-follow opens, atomic rewrites and the run directory's lock.

The properties run derandomized (the same examples on every machine) and without a deadline.
The table at the end pins how each reader reports each kind of damage, as it did before the
copies were merged into one scanner.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from evol import jsonl
from evol.errors import RunDirError, StorageError
from evol.jsonl import (
    LOCK_FILE,
    append_line,
    atomic_write,
    lock_directory,
    open_for_append,
    open_fresh,
    open_to_read,
    repair_torn_tail,
    scan,
)
from evol.llm.batch import STATE_FILE
from evol.llm.batch.state import Journal
from evol.quality.contamination import (
    ContaminationReport,
    read_contamination,
    write_contamination,
)
from evol.quality.metrics import RunMetrics, read_metrics, write_metrics
from evol.quality.scores import read_score_lines
from evol.rundir.journal import CallJournal
from evol.rundir.record_files import read_records
from evol.rundir.store import RunStore
from tests.support.runs import bare_record, read_jsonl, run_args, write_seeds

PROPERTY = settings(
    derandomize=True,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Any text a line can carry: no lone surrogates (no UTF-8 for them).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
OBJECT = st.fixed_dictionaries({"id": TEXT, "text": TEXT, "n": st.integers(-5, 10**12)})
OBJECTS = st.lists(OBJECT, min_size=1, max_size=8)


def encoded(rows: list[dict[str, Any]]) -> list[bytes]:
    """Each row as append_line writes it (orjson, no escapes beyond JSON's), newline included."""
    return [orjson.dumps(row) + b"\n" for row in rows]


def whole_lines_within(lines: list[bytes], cut: int) -> list[bytes]:
    """The lines that lie wholly within the first `cut` bytes, newline included."""
    kept, size = [], 0
    for line in lines:
        if size + len(line) > cut:
            break
        kept.append(line)
        size += len(line)
    return kept


def refuse(number: int, error: ValueError) -> Exception:
    return RunDirError(f"line {number}: {error}")


# -- repair and append -----------------------------------------------------------------------


@PROPERTY
@given(rows=OBJECTS, cut=st.integers(min_value=0))
def test_any_cut_is_repaired_to_the_longest_whole_line_prefix(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]], cut: int
) -> None:
    lines = encoded(rows)
    whole = b"".join(lines)
    cut %= len(whole) + 1
    path = tmp_path_factory.mktemp("cut") / "gen_0.jsonl"
    path.write_bytes(whole[:cut])
    repair_torn_tail(path)
    assert path.read_bytes() == b"".join(whole_lines_within(lines, cut))


@PROPERTY
@given(rows=OBJECTS, damaged=st.integers(min_value=0), cut=st.integers(min_value=0))
def test_repair_touches_only_the_tail_never_a_damaged_line_before_it(
    tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]], damaged: int, cut: int
) -> None:
    lines = encoded(rows)
    damaged %= len(lines)
    lines[damaged] = b"{damaged\n"
    whole = b"".join(lines)
    end = len(b"".join(lines[: damaged + 1]))  # the damaged line is wholly in the file
    cut = end + cut % (len(whole) - end + 1)
    path = tmp_path_factory.mktemp("damaged") / "gen_0.jsonl"
    path.write_bytes(whole[:cut])
    repair_torn_tail(path)
    kept = whole_lines_within(lines, cut)
    if cut == end:  # the damaged line is the file's last: that is a torn tail, and it goes
        kept = kept[:-1]
    assert path.read_bytes() == b"".join(kept)


@PROPERTY
@given(rows=OBJECTS, new=OBJECTS, cut=st.integers(min_value=0))
def test_append_after_repair_gives_exactly_the_old_lines_and_the_new(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[dict[str, Any]],
    new: list[dict[str, Any]],
    cut: int,
) -> None:
    lines = encoded(rows)
    whole = b"".join(lines)
    cut %= len(whole) + 1
    path = tmp_path_factory.mktemp("append") / "calls.jsonl"
    path.write_bytes(whole[:cut])
    repair_torn_tail(path)
    old = whole_lines_within(lines, cut)
    with open_for_append(path) as writer:
        starts = [append_line(writer, row) for row in new]
    content = path.read_bytes()
    assert content == b"".join(old + encoded(new))
    assert [orjson.loads(line) for line in content.splitlines()] == rows[: len(old)] + new
    # append_line says where each line starts: read back from there, it is the row.
    for start, row in zip(starts, new, strict=True):
        assert orjson.loads(content[start : content.index(b"\n", start)]) == row


def test_append_takes_encoded_bytes_as_they_are() -> None:
    writer = io.BytesIO(b'{"a":1}\n')
    writer.name = "calls.jsonl"
    assert append_line(writer, b'{"b": 2}') == 8  # type: ignore[arg-type]
    assert writer.getvalue() == b'{"a":1}\n{"b": 2}\n'


@pytest.mark.parametrize(("sync", "fsyncs"), [(False, 0), (True, 1)])
def test_append_fsyncs_only_where_the_caller_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool, fsyncs: int
) -> None:
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(jsonl.os, "fsync", lambda fd: calls.append(fd) or real(fd))
    with open_for_append(tmp_path / "x.jsonl") as writer:
        append_line(writer, {"a": 1}, sync=sync)
    assert len(calls) == fsyncs


def test_the_batch_state_is_fsynced_at_each_line_and_each_ingest_the_run_files_never(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's guarantees, caller by caller: batches.jsonl syncs every line (an intent is on
    disk before the create call), results.jsonl once an ingest; records and calls do not."""
    calls: list[int] = []
    monkeypatch.setattr(jsonl.os, "fsync", calls.append)
    state = Journal(tmp_path / STATE_FILE)
    state.append(event="intent", token="t1")
    state.append(event="created", token="t1", batch_id="b1")
    state.close()
    assert len(calls) == 2
    calls.clear()
    journal = CallJournal(tmp_path / "calls.jsonl")
    journal.remember("a", "evolve", {"text": "x"})
    journal.close()
    with open_for_append(tmp_path / "gen_0.jsonl") as writer:
        append_line(writer, {"id": "a"})
    assert calls == []


def test_a_failed_sync_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(jsonl.os, "fsync", full)
    path = tmp_path / "batches.jsonl"
    with open_for_append(path) as writer, pytest.raises(StorageError) as raised:
        append_line(writer, {"a": 1}, sync=True)
    assert str(raised.value).startswith(f"{path}: cannot write it: No space left on device")


# -- reading past a bad line -----------------------------------------------------------------


def read(content: bytes, **options: Any) -> list[tuple[int, int, int, Any]]:
    return list(scan(io.BytesIO(content), orjson.loads, refuse, **options))


@PROPERTY
@given(rows=OBJECTS, where=st.integers(min_value=0), torn_last=st.booleans())
def test_a_bad_line_before_the_last_is_reported_with_its_line_number(
    rows: list[dict[str, Any]], where: int, torn_last: bool
) -> None:
    lines = encoded(rows) + [b'{"last": true}\n']
    where %= len(lines) - 1
    lines[where] = b"{not json\n"
    with pytest.raises(RunDirError) as raised:
        read(b"".join(lines), torn_last=torn_last)
    assert str(raised.value).startswith(f"line {where + 1}: ")


@PROPERTY
@given(rows=OBJECTS, cut=st.integers(min_value=0))
def test_scan_yields_the_whole_lines_of_any_cut_with_their_places(
    rows: list[dict[str, Any]], cut: int
) -> None:
    lines = encoded(rows)
    content = b"".join(lines)[: cut % (len(b"".join(lines)) + 1)]
    found = read(content)
    kept = whole_lines_within(lines, len(content))
    assert [value for *_place, value in found] == rows[: len(kept)]
    assert [number for number, *_rest in found] == list(range(1, len(kept) + 1))
    for _number, offset, length, value in found:
        assert orjson.loads(content[offset : offset + length]) == value


def test_a_final_line_without_its_newline_is_never_parsed() -> None:
    seen: list[bytes] = []

    def parse(line: bytes) -> bytes:
        seen.append(line)
        return line

    found = list(scan(io.BytesIO(b'{"a": 1}\n{"b": 2}'), parse, refuse))
    assert seen == [b'{"a": 1}\n'] and [value for *_p, value in found] == [b'{"a": 1}\n']


@pytest.mark.parametrize(
    ("content", "options", "expected"),
    [
        # Blank lines: passed over, or (skip_blank=False) met by the parser like any line.
        (b'{"a":1}\n\n  \n{"b":2}\n', {}, [(1, {"a": 1}), (4, {"b": 2})]),
        (b'{"a":1}\n\n{"b":2}\n', {"skip_blank": False}, "line 2: "),
        # A bad last whole line: an error, or with torn_last a torn write, passed over.
        (b'{"a":1}\n{bad\n', {}, "line 2: "),
        (b'{"a":1}\n{bad\n', {"torn_last": True}, [(1, {"a": 1})]),
        # ... but only when nothing follows it: a torn fragment after it is something.
        (b'{"a":1}\n{bad\n{"b"', {"torn_last": True}, "line 2: "),
        (b'{bad\n{"b":2}\n', {"torn_last": True}, "line 1: "),
        (b"", {}, []),
        (b"{torn", {}, []),
    ],
)
def test_scan_options(content: bytes, options: dict[str, Any], expected: Any) -> None:
    if isinstance(expected, str):
        with pytest.raises(RunDirError, match=f"^{expected}"):
            read(content, **options)
        return
    assert [(number, value) for number, _o, _l, value in read(content, **options)] == expected


def test_a_bad_line_the_caller_passes_over_is_left_out_and_the_scan_reads_on() -> None:
    content = b'{"a":1}\n{bad\n{"b":2}\n'
    found = list(scan(io.BytesIO(content), orjson.loads, lambda _number, _error: None))
    assert [(number, value) for number, _o, _l, value in found] == [(1, {"a": 1}), (3, {"b": 2})]


# -- links, FIFOs, the lock ------------------------------------------------------------------


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, Path]:
    """(a link named like evol's file, the user's file it points at)."""
    target = tmp_path / "theirs.txt"
    target.write_bytes(b"not evol's\n{torn")
    link = tmp_path / "gen_0.jsonl"
    link.symlink_to(target)
    return link, target


@pytest.mark.parametrize(
    "write",
    [
        lambda path: open_for_append(path),
        repair_torn_tail,
        lambda path: atomic_write(path, b"{}\n"),
    ],
    ids=["append", "repair", "atomic_write"],
)
def test_a_link_in_a_files_place_is_refused_and_its_target_untouched(
    planted: tuple[Path, Path], write: Callable[[Path], Any]
) -> None:
    link, target = planted
    with pytest.raises(RunDirError) as raised:
        write(link)
    assert str(raised.value) == jsonl.link_refusal(link)
    assert target.read_bytes() == b"not evol's\n{torn" and link.is_symlink()


def test_a_fresh_file_is_never_made_through_a_link(planted: tuple[Path, Path]) -> None:
    link, target = planted
    with pytest.raises(OSError) as raised:
        open_fresh(link)
    assert raised.value.errno == errno.ELOOP
    assert target.read_bytes() == b"not evol's\n{torn" and link.is_symlink()


def test_a_file_read_back_to_be_rewritten_is_read_through_no_link(
    planted: tuple[Path, Path],
) -> None:
    """evol's own files read back (to sort, join or ingest them) refuse a link; a command that
    only reads (show, stats, export) follows one, as it always did."""
    link, target = planted
    with pytest.raises(RunDirError) as raised:
        open_to_read(link, follow_links=False)
    assert str(raised.value) == f"{link}: is a symbolic link; remove it (evol made none)"
    with open_to_read(link) as fp:
        assert fp.read() == b"not evol's\n{torn"
    with open_to_read(target, follow_links=False) as fp:
        assert fp.read() == b"not evol's\n{torn"
    assert target.read_bytes() == b"not evol's\n{torn" and link.is_symlink()


def test_a_file_read_back_before_a_rewrite_is_its_bytes_none_or_a_refused_link(
    planted: tuple[Path, Path], tmp_path: Path
) -> None:
    link, target = planted
    assert jsonl.read_back(tmp_path / "never-written") is None
    assert jsonl.read_back(target) == b"not evol's\n{torn"
    with pytest.raises(RunDirError) as raised:
        jsonl.read_back(link)
    assert str(raised.value) == f"{link}: is a symbolic link; remove it (evol made none)"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")  # a link to nothing is one too
    with pytest.raises(RunDirError, match="is a symbolic link"):
        jsonl.read_back(tmp_path / "dangling")


def test_a_folder_read_back_in_place_of_a_file_names_the_caller_s_remedy(tmp_path: Path) -> None:
    """Not the run directory's remedy where the caller (evol optimize) has its own."""
    folder = tmp_path / "deepen.txt"
    folder.mkdir()
    with pytest.raises(RunDirError) as raised:
        jsonl.read_back(folder, remedy="choose another --out")
    assert str(raised.value) == f"{folder}: not a regular file: choose another --out"
    with pytest.raises(RunDirError, match=r"not a regular file: the run directory is damaged"):
        jsonl.read_back(folder)


def test_a_missing_file_read_through_no_link_says_it_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="gen_0.jsonl: cannot read it: No such file"):
        open_to_read(tmp_path / "gen_0.jsonl", follow_links=False)


@pytest.mark.parametrize(
    ("entries", "refused"),
    [
        ([], None),
        (["file", "missing", "folder"], None),
        (["file", "link", "dangling"], "link"),  # the first link is named
        (["dangling", "link"], "dangling"),  # a link to nothing is a link too
        (["folder link"], "folder link"),
    ],
)
def test_refuse_symlinks_names_the_first_link_and_the_remedy(
    tmp_path: Path, entries: list[str], refused: str | None
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "folder link").symlink_to(tmp_path / "folder")
    paths = [tmp_path / name for name in entries]
    if refused is None:
        jsonl.refuse_symlinks(paths, "remove it")
        return
    with pytest.raises(RunDirError) as raised:
        jsonl.refuse_symlinks(paths, "remove it")
    assert str(raised.value) == f"{tmp_path / refused}: is a symbolic link; remove it"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_a_files_place_is_refused_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "gen_0.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match="No such device or address"):
        open_for_append(fifo)  # no reader: the non-blocking open fails rather than waits
    for reader in (open_to_read, repair_torn_tail):
        with pytest.raises(RunDirError, match="not a regular file"):
            reader(fifo)


def test_a_directory_in_a_files_place_is_not_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "gen_0.jsonl").mkdir()
    with pytest.raises(RunDirError, match="gen_0.jsonl: not a regular file"):
        repair_torn_tail(tmp_path / "gen_0.jsonl")


# -- a model in a JSON file ---------------------------------------------------------------------


class Figures(BaseModel):
    count: int
    names: list[str] = []


def test_a_model_written_is_read_back_the_same(tmp_path: Path) -> None:
    path = tmp_path / "figures.json"
    assert jsonl.write_model(path, Figures(count=3, names=["a"])) == path
    assert path.read_text() == '{\n  "count": 3,\n  "names": [\n    "a"\n  ]\n}\n'
    assert jsonl.read_model(path, Figures, "score again") == Figures(count=3, names=["a"])
    assert not list(tmp_path.glob("*.tmp"))


def test_a_model_file_never_written_is_none(tmp_path: Path) -> None:
    assert jsonl.read_model(tmp_path / "figures.json", Figures, "score again") is None
    (tmp_path / "figures.json").mkdir()  # not a file either
    assert jsonl.read_model(tmp_path / "figures.json", Figures, "score again") is None


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b'{"count": 3', "Expecting ',' delimiter: line 1 column 12 (char 11)"),
        (b"", "Expecting value: line 1 column 1 (char 0)"),
        (b'{"count": "three"}', "1 validation error for Figures"),
        (b"[1]", "1 validation error for Figures"),
        (b"\xff", "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ],
)
def test_a_model_file_that_is_damaged_is_one_line_with_the_remedy(
    tmp_path: Path, content: bytes, why: str
) -> None:
    path = tmp_path / "figures.json"
    path.write_bytes(content)
    with pytest.raises(RunDirError) as raised:
        jsonl.read_model(path, Figures, "score again")
    assert str(raised.value) == f"{path}: unreadable ({why}); score again"


MODEL_FILES = {
    "metrics.json": (
        write_metrics,
        read_metrics,
        RunMetrics(generations=[], files={"gen_0.jsonl": 12}),
        "run evol score again",
    ),
    "contamination.json": (
        write_contamination,
        read_contamination,
        ContaminationReport(ngram=13, against=[], checked=4, flagged=[], files={}),
        "check again with evol score --against",
    ),
}


@pytest.mark.parametrize("name", list(MODEL_FILES))
def test_each_model_file_is_read_back_and_a_damaged_one_says_its_remedy(
    tmp_path: Path, name: str
) -> None:
    write, read, model, remedy = MODEL_FILES[name]
    assert read(tmp_path) is None
    assert write(tmp_path, model) == tmp_path / name
    assert read(tmp_path) == model
    (tmp_path / name).write_text("{")
    with pytest.raises(RunDirError) as raised:
        read(tmp_path)
    why = "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
    assert str(raised.value) == f"{tmp_path / name}: unreadable ({why}); {remedy}"


HOLD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from evol.jsonl import lock_directory
    lock = lock_directory(Path(sys.argv[1]), "busy")
    print("held", flush=True)
    sys.stdin.read()
    lock.release()
    """
)


@pytest.mark.parametrize(
    "busy",
    [
        "another evol run is writing to this directory",
        "another evol process is writing to this directory; score it when it has stopped",
    ],
)
def test_the_lock_refuses_a_second_holder_with_the_callers_message(
    tmp_path: Path, busy: str
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(RunDirError) as raised:
            lock_directory(tmp_path, busy)
        assert str(raised.value) == f"{tmp_path}: {busy}"
    finally:
        holder.communicate(b"", timeout=600)
    lock_directory(tmp_path, busy).release()  # free again once the holder has gone


def test_the_lock_makes_its_directory_or_says_why_it_cannot(tmp_path: Path) -> None:
    lock_directory(tmp_path / "new", "busy").release()
    assert (tmp_path / "new" / LOCK_FILE).is_file()
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError) as raised:
        lock_directory(tmp_path / "file", "busy")
    assert str(raised.value) == f"{tmp_path / 'file'}: cannot write the run directory: File exists"


def test_the_lock_is_never_taken_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "theirs"
    target.write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).symlink_to(target)
    with pytest.raises(RunDirError) as raised:
        lock_directory(run, "busy")
    assert str(raised.value) == jsonl.link_refusal(run / LOCK_FILE)
    assert target.read_text() == "mine"


# -- each reader's report of each damage, as before the copies were merged ---------------------

RECORD = {
    "id": "a",
    "parent_id": None,
    "root_id": "a",
    "round": 0,
    "generation": 0,
    "operation": None,
    "instruction": "Instruction a",
    "output": None,
}
VALID = {
    "records": RECORD,
    "resume": RECORD,
    "look": RECORD,
    "journal": {"item": "a", "role": "evolve", "reply": {"text": "x"}},
    "batch": {"event": "intent", "token": "t"},
    "scores": {"scorer": "difficulty", "model": "m", "id": "a", "digest": "d", "score": 5},
}
FILE = {"journal": "calls.jsonl", "batch": "batches.jsonl", "scores": "scores.jsonl"}


def read_as(reader: str, path: Path) -> int:
    """How many lines `reader` takes from `path`, read as the command that owns it reads."""
    if reader == "records":
        with open_to_read(path) as fp:
            return len(list(read_records(fp, path)))
    if reader in ("resume", "look"):
        seen: list[Any] = []
        RunStore(path.parent, 1).scan(
            repair=reader == "resume", also=[lambda d, _r: seen.append(d)]
        )
        return len(seen)
    if reader == "journal":
        journal = CallJournal.open(path, recorded=set())
        return len(journal._replies)
    if reader == "batch":
        return len(Journal(path).read())
    return len(read_score_lines(path.parent))


def lines_of(reader: str, *shapes: str) -> bytes:
    """Good lines ("ok", each with its own id) and damaged ones, as the shapes say."""
    out = []
    for number, shape in enumerate(shapes):
        if shape == "ok":
            row = dict(VALID[reader])
            for key in ("id", "item", "token"):
                if key in row:
                    row[key] = f"{row[key]}{number}"
            if "root_id" in row:
                row["root_id"] = row["id"]
            out.append(json.dumps(row).encode() + b"\n")
        else:
            out.append(shape.encode())
    return b"".join(out)


TORN, NOT_JSON, BLANK, OTHER_JSON = '{"torn', "{bad\n", "\n", '{"x": 1}\n'
# (shapes, then per reader: the lines read, or the error's text after "<file>:<line>: ")
CASES = {
    "a torn fragment at the end": (
        ("ok", "ok", TORN),
        dict.fromkeys(VALID, 2),
    ),
    "a last whole line that is not JSON": (
        ("ok", "ok", NOT_JSON),
        {"records": "3: corrupt record"} | dict.fromkeys(list(VALID)[1:], 2),
    ),
    "a middle line that is not JSON": (
        ("ok", NOT_JSON, "ok"),
        {
            "records": "2: corrupt record",
            "resume": "2: corrupt record; use --overwrite to start afresh",
            "look": 2,
            "journal": "2: damaged line (not JSON)",
            "batch": "2: a damaged line before the last one",
            "scores": "2: not a score line",
        },
    ),
    "a blank middle line": (
        ("ok", BLANK, "ok"),
        {
            "records": 2,
            "resume": "2: corrupt record; use --overwrite",
            "look": 2,
            "journal": "2: damaged line (not JSON)",
            "batch": "2: a damaged line before the last one",
            "scores": 2,
        },
    ),
    # Two damaged lines: the repair cuts the blank last one, and the one before it is refused
    # (batch/ used to cut both and read on; every other file refused it already).
    "a bad line, then a blank last line": (
        ("ok", NOT_JSON, BLANK),
        {
            "records": "2: corrupt record",
            "resume": "2: corrupt record; use --overwrite",
            "look": 1,
            "journal": "2: damaged line (not JSON)",
            "batch": "2: a damaged line before the last one",
            "scores": "2: not a score line",
        },
    ),
    "a last line that is JSON but not the file's kind": (
        ("ok", OTHER_JSON),
        {
            "records": "2: not an evol record",
            "resume": "2: not an evol record",
            "look": 1,
            "journal": "2: damaged line (not a call's reply)",
            "batch": "2: not a batch state line",
            "scores": 1,
        },
    ),
}


@pytest.mark.parametrize("reader", list(VALID))
@pytest.mark.parametrize("case", list(CASES))
def test_each_reader_reports_each_damage_as_it_always_did(
    tmp_path: Path, reader: str, case: str
) -> None:
    shapes, expected = CASES[case]
    path = tmp_path / FILE.get(reader, "gen_0.jsonl")
    path.write_bytes(lines_of(reader, *shapes))
    outcome = expected[reader]
    if isinstance(outcome, int):
        assert read_as(reader, path) == outcome
        return
    with pytest.raises(RunDirError) as raised:
        read_as(reader, path)
    assert str(raised.value).startswith(f"{path}:{outcome}")


def record_lines(count: int, size: int) -> bytes:
    return b"".join(
        json.dumps(bare_record(f"r{i}", text="x" * size)).encode() + b"\n" for i in range(count)
    )


@pytest.mark.parametrize("last_size", [65_534, 65_535, 65_536, 65_537, 2_000_000])
@pytest.mark.parametrize("whole", [True, False])
def test_a_torn_tail_after_many_lines_is_cut_at_the_window_edges(
    tmp_path: Path, last_size: int, whole: bool
) -> None:
    # 3,000 lines before the last: the newline that ends them is read in the first window
    # (64 KiB from the end) or a later one, wherever the last line's length puts it.
    path = tmp_path / "gen_0.jsonl"
    before = record_lines(3_000, 40)
    last = b'{"id": "z", "text": "' + b"y" * (last_size - 24) + b'"}\n'
    assert len(last) == last_size
    path.write_bytes(before + (last if whole else last[:-1]))
    repair_torn_tail(path)
    assert path.read_bytes() == (before + last if whole else before)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\n{torn", b"\n"),  # the first byte is the newline that ends the last whole line
        (b"\n", b""),  # a lone empty line is no record
        (b"{torn", b""),
        (b"", b""),
    ],
)
def test_a_torn_tail_is_cut_right_after_the_last_newline(
    tmp_path: Path, content: bytes, expected: bytes
) -> None:
    path = tmp_path / "gen_0.jsonl"
    path.write_bytes(content)
    repair_torn_tail(path)
    assert path.read_bytes() == expected


def test_a_record_file_is_made_readable_by_all_writable_by_its_owner(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        writer = open_for_append(tmp_path / "gen_0.jsonl")
        writer.close()
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "gen_0.jsonl").stat().st_mode) == 0o644


def test_a_record_file_that_cannot_be_opened_is_named_with_why(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "gen_0.jsonl"
    with pytest.raises(RunDirError) as raised:
        open_for_append(path)
    assert str(raised.value) == f"{path}: cannot write it: No such file or directory"


@pytest.mark.parametrize(
    "tail",
    [
        b'{"id": "s2", "root_id": "s2", "round": 0, "generation": 0}',  # whole, newline lost
        b'{"id": "s2", "root_id": "s2", "ro',  # half a record
        b"\n",  # an empty last line
    ],
)
def test_repair_cuts_a_last_record_that_lost_its_newline(tmp_path: Path, tail: bytes) -> None:
    first = b'{"id": "s1", "root_id": "s1", "round": 0, "generation": 0}\n'
    path = tmp_path / "gen_0.jsonl"
    path.write_bytes(first + tail)
    repair_torn_tail(path)
    # Anything short of a whole line with its newline goes: the step is redone, and the next
    # record appended cannot be glued to it.
    assert path.read_bytes() == first


def test_a_record_that_lost_its_newline_is_redone_and_the_dataset_stays_valid(
    evol, server, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": f"Task {i}"} for i in range(6)])
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert evol(*run_args(server, seeds, straight, "--generations", "2")).exit_code == 0
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    gen_1 = out / "gen_1.jsonl"
    gen_1.write_bytes(gen_1.read_bytes().rstrip(b"\n"))  # the last record loses only its newline
    assert evol(*run_args(server, seeds, out, "--generations", "2")).exit_code == 0
    rows = [json.loads(line) for line in (out / "dataset.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(
        r["id"] for r in read_jsonl(straight / "dataset.jsonl")
    )
