"""evol.rundir.store: a record written whatever its metadata holds, the records sorted in seed
order, the dataset, a scan that reads past a bad line, and the directories a run may open (a
foreign one, a link, what a cut write leaves)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from evol.errors import RunDirError
from evol.method.elimination import Reason
from evol.rundir.record_files import iter_records
from evol.rundir.records import EliminatedRecord, Record
from evol.rundir.store import RunStore
from tests.support.runs import bare_record


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


@pytest.mark.parametrize("arrival", ["cab", "bac", "acb", "abc"])
def test_the_records_are_sorted_in_seed_order_and_an_unknown_seed_goes_last(
    tmp_path: Path, arrival: str
) -> None:
    store = RunStore.open(tmp_path / "run", generations=0, overwrite=False)
    try:
        for seed_id in arrival:
            fields = {"instruction": seed_id, "output": None, "parent_id": None, "operation": None}
            store.add(Record.model_validate(bare_record(seed_id, **fields)))
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
            data = bare_record(record_id, generation=generation, round=generation, **fields)
            store.add(Record.model_validate(data))
        assert store.write_dataset() == 2
    finally:
        store.close()
    lines = (tmp_path / "run" / "dataset.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "a.1"]


# -- the directories a run may open (store._refuse_foreign) ----------------------------------------


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


def test_a_look_from_outside_skips_a_bad_line_and_reads_on(tmp_path: Path) -> None:
    """Without repair (a dry run looking at a run another process writes), a line that is not
    a record is passed over and the records after it are still counted."""
    lines = [
        json.dumps(bare_record("a")),
        '{"torn',
        json.dumps({"x": 1}),
        json.dumps(bare_record("b")),
    ]
    (tmp_path / "gen_0.jsonl").write_text("\n".join(lines) + "\n")
    seen: list[str] = []
    RunStore(tmp_path, 1).scan(repair=False, also=[lambda data, _reason: seen.append(data["id"])])
    assert seen == ["a", "b"]
