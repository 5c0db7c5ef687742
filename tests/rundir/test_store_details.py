"""Details of the run directory and the engine that mutation testing found unguarded.

Each test pins one exact behaviour that a planted bug changed without any other test failing:
how the record files are streamed (blank lines, what counts as JSON), how a record is written
(JSON values, whatever Python values its seed's metadata holds), where a lineage stands when a
record lacks its input, and which error a group of failures surfaces.
"""

from __future__ import annotations

import json
import os
import stat
from decimal import Decimal
from pathlib import Path

import pytest

from evol.errors import AuthenticationFailed, RunDirError
from evol.errors import most_telling as _most_telling
from evol.jsonl import open_for_append, repair_torn_tail
from evol.method.elimination import Reason
from evol.rundir.lineage import LineageIndex, Tip
from evol.rundir.record_files import iter_records
from evol.rundir.records import EliminatedRecord, Record
from evol.rundir.store import RunStore


def record(record_id: str, **fields: object) -> dict[str, object]:
    """A seed's record with every field the record model requires."""
    return {
        "id": record_id,
        "parent_id": None,
        "root_id": record_id.split(".")[0],
        "round": 0,
        "generation": 0,
        "operation": None,
        "instruction": f"Instruction {record_id}",
        "output": None,
    } | fields


def test_the_record_files_are_streamed_past_blank_lines(tmp_path: Path) -> None:
    lines = [json.dumps(record("a")), "", json.dumps(record("b")), ""]
    (tmp_path / "gen_0.jsonl").write_text("\n".join(lines) + "\n")
    assert [data["id"] for data in iter_records(tmp_path)] == ["a", "b"]


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_line_that_is_not_strict_json_is_a_corrupt_record(tmp_path: Path, value: str) -> None:
    # Read as the store reads them when a run opens (orjson): what one refuses, both do.
    path = tmp_path / "gen_0.jsonl"
    path.write_text(json.dumps(record("a")) + "\n" + '{"id": "b", "score": ' + value + "}\n")
    with pytest.raises(RunDirError) as raised:
        list(iter_records(tmp_path))
    assert str(raised.value) == f"{path}:2: corrupt record"


def test_a_record_is_written_as_json_whatever_its_metadata_holds(tmp_path: Path) -> None:
    # A Parquet seed's decimal or binary column comes in as Decimal or bytes.
    fields = {
        "parent_id": None,
        "root_id": "s1",
        "generation": 0,
        "round": 0,
        "operation": None,
        "instruction": "Price it",
        "output": None,
        "metadata": {"price": Decimal("1.50"), "raw": b"ab"},
    }
    store = RunStore.open(tmp_path / "run", generations=0, overwrite=False)
    try:
        store.add(Record(id="s1", **fields))
        store.add_eliminated(EliminatedRecord(id="s2", reason=Reason.SORRY, **fields))
    finally:
        store.close()
    kept = json.loads((tmp_path / "run" / "gen_0.jsonl").read_text())
    eliminated = json.loads((tmp_path / "run" / "eliminated.jsonl").read_text())
    assert kept["metadata"] == eliminated["metadata"] == {"price": "1.50", "raw": "ab"}
    assert eliminated["reason"] == "sorry"


def test_a_kept_record_without_an_input_is_a_tip_with_an_empty_one() -> None:
    lineages = LineageIndex(generations=3)
    lineages.add(record("a.1", round=1, generation=1, instruction="Sort it"), None)
    assert lineages.progress("a").tip == Tip("a.1", "Sort it", "", 1)


def test_the_users_error_is_surfaced_from_behind_a_nested_group() -> None:
    user_facing = AuthenticationFailed("bad key")
    group = BaseExceptionGroup(
        "two", [ExceptionGroup("in", [RuntimeError("a"), KeyError("b")]), user_facing]
    )
    assert _most_telling(group) is user_facing
    first = RuntimeError("first")
    nested = BaseExceptionGroup("two", [ExceptionGroup("in", [first]), KeyError("b")])
    assert _most_telling(nested) is first


def lines_of(count: int, size: int) -> bytes:
    return b"".join(
        json.dumps(record(f"r{i}", text="x" * size)).encode() + b"\n" for i in range(count)
    )


@pytest.mark.parametrize("last_size", [65_534, 65_535, 65_536, 65_537, 2_000_000])
@pytest.mark.parametrize("whole", [True, False])
def test_a_torn_tail_after_many_lines_is_cut_at_the_window_edges(
    tmp_path: Path, last_size: int, whole: bool
) -> None:
    # 3,000 lines before the last: the newline that ends them is read in the first window
    # (64 KiB from the end) or a later one, wherever the last line's length puts it.
    path = tmp_path / "gen_0.jsonl"
    before = lines_of(3_000, 40)
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


@pytest.mark.parametrize("arrival", ["cab", "bac", "acb", "abc"])
def test_the_records_are_sorted_in_seed_order_and_an_unknown_seed_goes_last(
    tmp_path: Path, arrival: str
) -> None:
    store = RunStore.open(tmp_path / "run", generations=0, overwrite=False)
    try:
        for seed_id in arrival:
            fields = {"instruction": seed_id, "output": None, "parent_id": None, "operation": None}
            store.add(Record.model_validate(record(seed_id, **fields)))
        store.sort_outputs({"a": 0, "b": 1})  # c is not in the order
    finally:
        store.close()
    assert [data["id"] for data in iter_records(tmp_path / "run")] == ["a", "b", "c"]


def test_the_dataset_is_the_generations_of_this_run(tmp_path: Path) -> None:
    store = RunStore.open(tmp_path / "run", generations=1, overwrite=False)
    try:
        for generation in range(3):
            record_id = "a" + ".1" * generation
            fields = {"instruction": "x", "output": None, "parent_id": None, "operation": None}
            data = record(record_id, generation=generation, round=generation, **fields)
            store.add(Record.model_validate(data))
        assert store.write_dataset() == 2
    finally:
        store.close()
    lines = (tmp_path / "run" / "dataset.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "a.1"]


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


# -- the run directory's own names and its refusals (store._refuse_foreign, refuse_run_state) -----


def foreign_dir(tmp_path: Path, *names: str) -> Path:
    out = tmp_path / "out"
    out.mkdir(parents=True)
    for name in names:
        (out / name).write_text("the user's")
    return out


def refusal(out: Path) -> str:
    with pytest.raises(RunDirError) as refused:
        RunStore.open(out, generations=1, overwrite=False).close()
    return str(refused.value)


def test_a_foreign_directory_is_refused_naming_three_of_its_entries(tmp_path: Path) -> None:
    out = foreign_dir(tmp_path, "d.txt", "b.txt", "a.txt", "c.txt")
    assert refusal(out) == (
        f"{out}: not empty (a.txt, b.txt, c.txt, ...) and holds no evol run (no run.json): "
        "choose a new or empty directory for --out"
    )
    (out / "d.txt").unlink()
    assert f"{out}: not empty (a.txt, b.txt, c.txt) and holds" in refusal(out)


def test_temporary_files_and_the_lock_alone_do_not_make_a_directory_foreign(
    tmp_path: Path,
) -> None:
    out = foreign_dir(tmp_path, "notes.tmp", ".evol.lock")
    RunStore.open(out, generations=1, overwrite=False).close()
    assert (out / "notes.tmp").read_text() == "the user's"  # not evol's name: left alone
    assert refusal(foreign_dir(tmp_path / "x", "notes.tmp", "notes.txt")).startswith(
        f"{tmp_path / 'x' / 'out'}: not empty (notes.txt) and"
    )


def test_a_link_of_the_users_beside_a_run_is_not_refused_but_one_named_as_evols_is(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    RunStore.open(out, generations=1, overwrite=False).close()
    (out / "run.json").write_text("{}")
    (out / "my-link").symlink_to(tmp_path)
    RunStore.open(out, generations=1, overwrite=False).close()
    (out / "batch").symlink_to(tmp_path)
    assert refusal(out) == (
        f"{out / 'batch'}: is a symbolic link; evol writes only regular files in its run "
        "directory: remove the link or choose another --out"
    )


def test_evols_own_files_are_known_by_name_and_place(tmp_path: Path) -> None:
    from evol.errors import UsageError
    from evol.rundir.layout import refuse_run_state

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    for name in ("gen_0.jsonl", "dataset.jsonl.tmp", "scores.jsonl", ".evol.lock", "batch"):
        with pytest.raises(UsageError):
            refuse_run_state(run / name, "--out")
    for path in (run / "notes.txt", run / "export.jsonl", tmp_path / "gen_0.jsonl"):
        refuse_run_state(path, "--out")  # not a run's own file: allowed


def test_the_run_directory_is_made_with_its_parents_or_the_reason_it_cannot_be(
    tmp_path: Path,
) -> None:
    RunStore.open(tmp_path / "a" / "b" / "run", generations=1, overwrite=False).close()
    assert (tmp_path / "a" / "b" / "run").is_dir()
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "run"
    assert refusal(out) == f"{out}: cannot write the run directory: Not a directory"


def test_an_atomic_write_cut_short_leaves_only_evols_temporary_name(tmp_path: Path) -> None:
    """A crash mid-write leaves NAME.tmp, which the next open removes by that exact name."""
    from evol.jsonl import atomic_write

    def crash(out: object) -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "dataset.jsonl", crash)
    assert [p.name for p in tmp_path.iterdir()] == ["dataset.jsonl.tmp"]
    (tmp_path / "run.json").write_text("{}")
    RunStore.open(tmp_path, generations=1, overwrite=False).close()
    assert not (tmp_path / "dataset.jsonl.tmp").exists()


def test_the_call_journal_replays_what_it_kept_across_a_reopen(tmp_path: Path) -> None:
    from evol.rundir.journal import CallJournal

    path = tmp_path / "calls.jsonl"
    journal = CallJournal.open(path, recorded=set())
    journal.remember("s1.1", "evolve", {"text": "a rewrite"})
    journal.remember("s2.1", "answer", {"text": "an answer"})
    journal.close()
    compacted = CallJournal.open(path, recorded={"s2.1"})  # s2.1 is a record now
    compacted.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"item": "s1.1", "role": "evolve", "reply": {"text": "a rewrite"}}
    ]
    again = CallJournal.open(path, recorded=set())
    assert again.recall("s1.1", "evolve") == {"text": "a rewrite"}
    assert again.recall("s1.1", "evolve") is None  # once
    again.close()


def test_generation_files_come_in_number_order_past_nine(tmp_path: Path) -> None:
    from evol.rundir.layout import generation_files

    for generation in (10, 2, 0, 11, 1):
        (tmp_path / f"gen_{generation}.jsonl").write_text("")
    (tmp_path / "gen_x.jsonl").write_text("")  # not a generation
    assert [p.name for p in generation_files(tmp_path)] == [
        "gen_0.jsonl", "gen_1.jsonl", "gen_2.jsonl", "gen_10.jsonl", "gen_11.jsonl",
    ]  # fmt: skip


def test_a_look_from_outside_skips_a_bad_line_and_reads_on(tmp_path: Path) -> None:
    """Without repair (a dry run looking at a run another process writes), a line that is not
    a record is passed over and the records after it are still counted."""
    lines = [json.dumps(record("a")), '{"torn', json.dumps({"x": 1}), json.dumps(record("b"))]
    (tmp_path / "gen_0.jsonl").write_text("\n".join(lines) + "\n")
    seen: list[str] = []
    RunStore(tmp_path, 1).scan(repair=False, also=[lambda data, _reason: seen.append(data["id"])])
    assert seen == ["a", "b"]
