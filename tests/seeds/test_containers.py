"""The row rules hold alike in every seed container, and a JSON array is read an element at a time.

A row (a line, an array element, a CSV or Parquet row) is refused when it is over
MAX_ROW_BYTES or holds a NUL, with the same words and its line in every format; a JSON array
keeps its lines and ids while only the element being read is in memory.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evol.errors import SeedFileError
from evol.seeds import SeedOptions, scan_seeds
from evol.seeds.containers import MAX_ROW_BYTES, NUL_BYTE, ColumnNames
from evol.seeds.formats import rows
from evol.seeds.shapes import INSTRUCTION_FIELDS

LONG = "x" * 1_500_000
TOO_LARGE = "row is 1.5 MB, over the 1 MB limit"


def write_rows(path: Path, instructions: list[str]) -> Path:
    """A seed file of `path`'s format holding these instructions, the second on line/row 2
    (3 in a CSV, below its header)."""
    suffix = path.suffix
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([{"instruction": i} for i in instructions]), path)
        return path
    if suffix == ".txt":
        text = "".join(f"{i}\n" for i in instructions)
    elif suffix == ".csv":
        text = "instruction\n" + "".join(f"{i}\n" for i in instructions)
    else:
        lines = [json.dumps({"instruction": i}, ensure_ascii=False) for i in instructions]
        # json.dumps escapes a NUL; the file must hold the byte itself.
        lines = [line.replace("\\u0000", "\x00") for line in lines]
        text = "\n".join(lines) + "\n" if suffix == ".jsonl" else "[" + ",\n".join(lines) + "]\n"
    path.write_bytes(text.encode("utf-8"))
    return path


FORMATS = [("s.jsonl", 2), ("s.json", 2), ("s.csv", 3), ("s.txt", 2), ("s.parquet", 2)]


@pytest.mark.parametrize(("bad", "why"), [(LONG, TOO_LARGE), ("b\x00c", NUL_BYTE)])
@pytest.mark.parametrize(("name", "line"), FORMATS)
def test_every_format_refuses_a_long_row_and_a_nul_alike(
    evol, tmp_path: Path, name: str, line: int, bad: str, why: str
) -> None:
    path = write_rows(tmp_path / name, ["first", bad, "third"])
    with pytest.raises(SeedFileError) as raised:
        scan_seeds(path)
    assert str(raised.value) == f"{path}:{line}: {why}"
    result = evol("validate", path)
    assert result.exit_code == 2 and result.stderr == f"evol: error: {path}:{line}: {why}\n"
    if name == "s.json" and bad != LONG:
        return  # a raw NUL is no JSON: the array cannot be read past it
    scan = scan_seeds(path, SeedOptions(skip_invalid=True))
    assert (scan.count, scan.skipped) == (2, [(line, why)])


def test_a_row_of_exactly_the_limit_is_read_in_every_format(tmp_path: Path) -> None:
    for name, _line in FORMATS:
        # A line counts its "\n"; {"instruction": ""} takes 19 bytes.
        room = MAX_ROW_BYTES - {"s.jsonl": 20, "s.json": 19, "s.txt": 1}.get(name, 0)
        path = write_rows(tmp_path / name, ["first", "é" * (room // 2) + "x" * (room % 2)])
        assert scan_seeds(path).count == 2, name


@pytest.mark.parametrize(
    ("field_chars", "line", "why"),
    [
        (MAX_ROW_BYTES + 1, 3, "row is 1.0 MB, over the 1 MB limit"),
        # A field over 4 million characters stops the csv module: the file cannot go on.
        (4 * MAX_ROW_BYTES + 1, 3, "row is over the 1 MB limit"),
    ],
)
def test_a_csv_field_over_the_limit_names_its_line(
    tmp_path: Path, field_chars: int, line: int, why: str
) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b'instruction\nfine\n"' + b"x" * field_chars + b'"\nlast\n')
    with pytest.raises(SeedFileError) as raised:
        scan_seeds(path)
    assert str(raised.value) == f"{path}:{line}: {why}"


@pytest.mark.slow
def test_a_large_json_array_is_not_held_whole(tmp_path: Path) -> None:
    row = {"instruction": "Explain why the sky is blue " * 6, "input": "", "output": "x" * 40}
    path = tmp_path / "big.json"
    path.write_text(json.dumps([row] * 100_000))  # one line of 24 MB, as json.dump writes it
    size = path.stat().st_size
    assert size > 20_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _line, _row in rows(path, "json", ColumnNames(INSTRUCTION_FIELDS)))
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000
    assert peak < size / 20, f"peak {peak:,} bytes for a file of {size:,}"


def test_a_json_element_longer_than_many_blocks_is_read(tmp_path: Path) -> None:
    # Over 1 MB: refused with its size, and the array goes on after it.
    rows_ = [{"instruction": "a"}, {"instruction": "é" * 600_000}, {"instruction": "c"}]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(rows_, ensure_ascii=False, indent=1), encoding="utf-8")
    scan = scan_seeds(path, SeedOptions(skip_invalid=True))
    assert (scan.count, scan.skipped) == (2, [(5, "row is 1.2 MB, over the 1 MB limit")])


# -- the lines of any layout, against a reference that reads the whole file ----------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=6)
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
SPACE = st.sampled_from(["", " ", "\n", "\r\n", "\t", " \n  ", "\n\n"])


# The monkeypatch sets the same value for every example.
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    elements=st.lists(st.tuples(SPACE, VALUES, SPACE, st.booleans()), max_size=6),
    before=SPACE,
    after=SPACE,
    block=st.sampled_from([1, 2, 3, 7, 64, 1 << 16]),
)
@pytest.mark.slow
def test_json_array_elements_and_lines_match_a_whole_file_parse(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    elements: list[tuple[str, object, str, bool]],
    before: str,
    after: str,
    block: int,
) -> None:
    # Tiny blocks cut every number, escape and UTF-8 character somewhere.
    monkeypatch.setattr("evol.seeds.formats._BLOCK_BYTES", block)
    text, starts = before + "[", []
    for number, (space, value, trailing, indent) in enumerate(elements):
        text += space
        starts.append(len(text))
        text += json.dumps(value, ensure_ascii=False, indent=1 if indent else None) + trailing
        text += "," if number < len(elements) - 1 else ""
    text += "]" + after
    path = tmp_path_factory.mktemp("arrays") / "s.json"
    path.write_bytes(text.encode("utf-8"))
    expected = [
        (text.count("\n", 0, start) + 1, value)
        for start, value in zip(starts, json.loads(text), strict=True)
    ]
    assert list(rows(path, "json", ColumnNames(INSTRUCTION_FIELDS))) == expected


def test_an_id_longer_than_the_limit_is_refused_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rows = [{"id": "a", "instruction": "x"}, {"id": "a" + ".1" * 600, "instruction": "y"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(SeedFileError) as raised:
        scan_seeds(path)
    assert str(raised.value) == f"{path}:2: 'id' is 1,201 characters long, over the 1,000 limit"


def test_an_id_of_many_evolution_suffixes_costs_no_more_than_a_run_has_rounds() -> None:
    from evol.rundir.records import MAX_GENERATIONS
    from evol.seeds import _stems

    stems = _stems("a" + ".1" * 100_000)  # quadratic memory once: every prefix kept
    assert len(stems) == MAX_GENERATIONS and stems[0] == "a" + ".1" * 99_999
    assert _stems("a.1.20") == ["a.1", "a"] and _stems("a.1x") == [] and _stems(".3") == [""]


def test_a_nul_in_a_csv_header_is_refused_as_in_any_row(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b"instruction,m\x00\nfine,1\n")
    with pytest.raises(SeedFileError) as raised:
        scan_seeds(path, SeedOptions(skip_invalid=True))  # no row can be read without a header
    assert str(raised.value) == f"{path}:1: {NUL_BYTE}"


@pytest.mark.parametrize("name", ["s.csv", "s.parquet", "lists.parquet"])
def test_a_row_is_measured_by_all_its_fields_together(tmp_path: Path, name: str) -> None:
    """Each field is within the limit, the row is not: a row read as values (CSV, Parquet)
    counts every text it holds, nested ones included (in an object, or in a list)."""
    half = "x" * (MAX_ROW_BYTES // 2 + 10)
    path = tmp_path / name
    if name == "s.csv":
        path.write_text(f"instruction,input\nfirst,\n{half},{half}\nthird,\n", encoding="utf-8")
        line = 3
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if name == "lists.parquet":
            meta = pa.array([["a"], ["b", half], ["c"]])
        else:
            meta = pa.array([{"note": "a"}, {"note": half}, {"note": "c"}])
        table = pa.table({"instruction": ["first", half, "third"], "meta": meta})
        pq.write_table(table, path)
        line = 2
    with pytest.raises(SeedFileError) as raised:
        scan_seeds(path)
    assert str(raised.value).startswith(f"{path}:{line}: row is 1.0 MB, over the 1 MB limit")
