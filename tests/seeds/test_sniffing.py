"""A seed file whose content is another format than its name (or --format) says: one sniffer,
one kind of hint (`; it looks like CSV, use --format csv`), TSV read, CSV/TSV headers matched in
any case."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evol.errors import SeedFileError
from evol.seeds import SeedOptions, iter_seeds, scan_seeds
from evol.seeds.containers import FORMAT_NAMES, SeedFormat
from evol.seeds.shapes import INSTRUCTION_FIELDS
from evol.seeds.sniffing import Sniffed, sniff, sniff_head

CSV_ROWS = "instruction,output\n" + "".join(f"Name river {n},The Nile\n" for n in range(12))
JSON_LINES = '{"instruction": "Name a river"}\n{"instruction": "Name a lake"}\n'
HINT = {
    seed_format: f"; it looks like {name}, use --format {seed_format}"
    for seed_format, name in FORMAT_NAMES.items()
}


def seeds_of(path: Path, **options) -> list:
    return list(iter_seeds(path, SeedOptions(**options)))


def error_of(path: Path, **options) -> str:
    with pytest.raises(SeedFileError) as raised:
        scan_seeds(path, SeedOptions(**options))
    return str(raised.value)


# -- each mismatch of issue 25 gets the hint, in one line with its line --------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("s.csv", JSON_LINES, ":1: this is not CSV" + HINT["jsonl"]),
        ("s.jsonl", CSV_ROWS, ":1: invalid JSON: Expecting value" + HINT["csv"]),
        (
            "s.jsonl",
            '[{"instruction": "Name a river"}, {"instruction": "Name a lake"}]\n',
            ":1: this is not JSON Lines" + HINT["json"],
        ),
        ("s.json", CSV_ROWS, ":1: invalid JSON: Expecting value" + HINT["csv"]),
        (
            "s.jsonl",
            "instruction\toutput\nName a river\tNile\n",
            ":1: invalid JSON: Expecting value" + HINT["tsv"],
        ),
        ("s.tsv", JSON_LINES, ":1: this is not TSV" + HINT["jsonl"]),
        (
            "s.csv",
            "Name a river\nName a lake\n",
            ":1: the CSV header has no instruction column: found 'Name a river'; it must name one of "
            "'instruction', 'prompt', 'question' (in any case), or pick one with --instruction-field"
            + HINT["text"],
        ),
        (
            "s.json",
            "Name a river\nName a lake\n",
            ":1: invalid JSON: Expecting value" + HINT["text"],
        ),
        ("s.parquet", CSV_ROWS, ":1: this is not Parquet" + HINT["csv"]),
    ],
)
def test_each_mismatch_ends_with_the_format_it_looks_like(
    evol, tmp_path: Path, name: str, content: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    result = evol("validate", path)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"evol: error: {path}")
    assert expected in result.stderr and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_csv_in_a_json_file_is_explained_at_the_line_that_fails(tmp_path: Path) -> None:
    # A first row that json reads as a value: the error comes later, the hint says why.
    path = tmp_path / "s.json"
    path.write_text('"instruction","output"\n"Name a river","Nile"\n', encoding="utf-8")
    assert error_of(path) == (
        f"{path}:1: expected a JSON array of seeds, got a string; it looks like CSV, use --format csv"
    )


def test_an_explicit_wrong_format_gets_the_hint_too(tmp_path: Path) -> None:
    path = tmp_path / "s.data"
    path.write_text(CSV_ROWS, encoding="utf-8")
    assert error_of(path, format="jsonl").endswith(HINT["csv"])
    assert error_of(path, format="tsv").endswith(HINT["csv"])
    assert len(seeds_of(path, format="csv")) == 12


def test_skipping_every_row_of_a_mismatched_file_still_says_what_it_looks_like(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(CSV_ROWS, encoding="utf-8")
    assert error_of(path, skip_invalid=True) == f"{path}: no valid seeds{HINT['csv']}"


def test_an_error_in_a_file_of_the_right_format_gets_no_hint(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"instruction": "a", \n{"instruction": "b"}\n', encoding="utf-8")
    assert error_of(path) == (
        f"{path}:1: invalid JSON: Expecting property name enclosed in double quotes (column 22)"
    )
    path = tmp_path / "s.csv"
    path.write_text("instruction,input\na,b\nc\n", encoding="utf-8")
    assert error_of(path) == f"{path}:3: has 1 columns, the header has 2"


# -- TSV ---------------------------------------------------------------------------------------


def test_a_tsv_file_is_read_by_extension_or_by_format(tmp_path: Path) -> None:
    content = (
        'Instruction\tinput\tsource\nName a river\tin Africa\tatlas\n"Say\thi,\nthere"\t\tweb\n'
    )
    by_name = tmp_path / "s.tsv"
    by_name.write_text(content, encoding="utf-8")
    by_format = tmp_path / "s.data"
    by_format.write_text(content, encoding="utf-8")
    for seeds in (seeds_of(by_name), seeds_of(by_format, format="tsv")):
        assert [(s.line, s.instruction, s.input, s.metadata) for s in seeds] == [
            (2, "Name a river", "in Africa", {"source": "atlas"}),
            (4, "Say\thi,\nthere", "", {"source": "web"}),
        ]


def test_a_tsv_error_names_tsv_and_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.tsv"
    path.write_text("instruction\tinput\na\tb\tc\n", encoding="utf-8")
    assert error_of(path) == f"{path}:2: has 3 columns, the header has 2"
    path.write_text("", encoding="utf-8")
    assert error_of(path) == f"{path}:1: empty TSV file: expected a header row"


# -- headers in any case -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "shape"),
    [
        ("Question,Answer", "prompt"),
        ("INSTRUCTION,Input", "alpaca"),
        (" instruction , output ", "alpaca"),
        ("Prompt,source", "prompt"),
    ],
)
def test_a_csv_header_is_matched_in_any_case(tmp_path: Path, header: str, shape: str) -> None:
    path = tmp_path / "s.csv"
    path.write_text(f"{header}\nName a river,x\n", encoding="utf-8")
    (seed,) = seeds_of(path)
    assert (seed.instruction, seed.shape) == ("Name a river", shape)
    if shape == "alpaca":
        assert (seed.input or seed.output, seed.metadata) == ("x", {})


def test_columns_nothing_reads_keep_their_name_as_written(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("Question,Answer, Source \nName a river,Nile,atlas\n", encoding="utf-8")
    (seed,) = seeds_of(path)
    assert seed.metadata == {"Answer": "Nile", " Source ": "atlas"}


def test_instruction_field_matches_a_column_in_any_case(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("Text,Source\nName a river,atlas\n", encoding="utf-8")
    (seed,) = seeds_of(path, instruction_field="text")
    assert (seed.instruction, seed.metadata) == ("Name a river", {"Source": "atlas"})


def test_a_column_named_twice_in_two_cases_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("instruction,Instruction\na,b\n", encoding="utf-8")
    assert error_of(path) == f"{path}:1: the CSV header names the column 'instruction' twice"


def test_a_header_without_instruction_lists_what_it_found_bounded_and_escaped(
    tmp_path: Path,
) -> None:
    long = "x" * 5000
    header = [long, "\x1b[31mred", *(f"c{n}" for n in range(20))]
    path = tmp_path / "s.csv"
    path.write_text(",".join(header) + "\n" + ",".join("v" * len(header)) + "\n", encoding="utf-8")
    message = error_of(path)
    assert message == (
        f"{path}:1: the CSV header has no instruction column: found '{'x' * 40}...', "
        "'\\x1b[31mred', 'c0', 'c1', 'c2', 'c3', 'c4', 'c5' and 14 more; it must name one of "
        "'instruction', 'prompt', 'question' (in any case), or pick one with --instruction-field"
    )


# -- the sniffer -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "cut", "expected"),
    [
        (b"PAR1\x00\x00", False, Sniffed("parquet", 1)),
        (b"\n\n" + JSON_LINES.encode(), False, Sniffed("jsonl", 3)),
        # A bad first line: the next lines say what the file is.
        (b'{"instruction": "a",\n{"instruction": "b"}\n', False, Sniffed("jsonl", 1)),
        (b"[\n  {", False, Sniffed("json", 1)),
        (b' [{"instruction": "a"},\n', False, Sniffed("json", 1)),
        (b'[["a"]]\n', False, Sniffed("json", 1)),
        (b'["a"]\n["b"]\n', False, Sniffed("jsonl", 1)),  # JSON Lines of arrays
        (b"\xef\xbb\xbfinstruction,input\na,b\n", False, Sniffed("csv", 1)),
        (b"Question\nWhy?\n", False, Sniffed("csv", 1)),  # one column, a known name
        (b"a\tb\n1\t2\n", False, Sniffed("tsv", 1)),
        (b"a,b\tc\n1,2\t3\n", False, Sniffed("csv", 1)),  # as many columns either way
        (b'a,b\n"1\n2",3\n', False, Sniffed("csv", 1)),  # a quoted field over two lines
        (b"Why is the sky blue?\nName a river\n", False, Sniffed("text", 1)),
        (b"{name} is a placeholder\nNext\n", False, None),
        (b"[{name}] is a placeholder\nNext\n", False, None),
        (b"// seeds\n[\n", False, None),  # text before JSON
        (b"a\x00b\n", False, None),
        (b" \n\n", False, None),
        (b'{"instruction": "' + b"x" * 100, True, Sniffed("jsonl", 1)),  # longer than the head
        (b'[{"instruction": "' + b"x" * 100, True, Sniffed("json", 1)),
        (b"Why" + b"x" * 100, True, None),
    ],
)
def test_the_sniffer_names_what_the_first_bytes_look_like(
    head: bytes, cut: bool, expected: Sniffed | None
) -> None:
    assert sniff_head(head, cut, INSTRUCTION_FIELDS) == expected


def test_the_sniffer_reads_no_more_than_its_head(tmp_path: Path) -> None:
    # 64 KiB of text, then JSON Lines: what comes after the head is never looked at.
    path = tmp_path / "s.csv"
    path.write_bytes(b"Name a river\n" * 6000 + JSON_LINES.encode())
    assert path.stat().st_size > 1 << 16
    assert sniff(path, INSTRUCTION_FIELDS) == Sniffed("text", 1)
    assert sniff(tmp_path / "missing.csv") is None
    assert sniff(tmp_path) is None


# -- the property: every format under every wrong name -----------------------------------------

FORMATS: list[SeedFormat] = ["jsonl", "json", "csv", "tsv", "text", "parquet"]
SUFFIX = {"jsonl": ".jsonl", "json": ".json", "csv": ".csv", "tsv": ".tsv", "text": ".txt"}
SUFFIX["parquet"] = ".parquet"
ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30)
# A line of plain text that no other format would claim: no delimiter, quote, JSON opening or
# line break, and not a column name alone.
LINE_TEXT = st.text(
    st.characters(codec="utf-8", exclude_characters='\x00\n\r,\t"{[\ufeff'), min_size=1, max_size=30
).filter(lambda text: text.strip() and text.strip().lower() not in INSTRUCTION_FIELDS)


def write_rows(path: Path, seed_format: SeedFormat, rows: list[dict], header: str) -> None:
    if seed_format == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif seed_format == "json":
        path.write_text(json.dumps(rows, indent=2 if len(rows) > 1 else None), encoding="utf-8")
    elif seed_format in ("csv", "tsv"):
        text = io.StringIO()
        writer = csv.writer(text, delimiter="\t" if seed_format == "tsv" else ",")
        writer.writerows(
            [[header, "output"], *([row["instruction"], row["output"]] for row in rows)]
        )
        path.write_text(text.getvalue(), encoding="utf-8", newline="")
    elif seed_format == "text":
        path.write_text("".join(row["instruction"] + "\n" for row in rows), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("written", FORMATS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_file_read_as_another_format_names_the_right_one(
    tmp_path: Path, written: SeedFormat, data: st.DataObject
) -> None:
    instruction = LINE_TEXT if written == "text" else ANY_TEXT.filter(str.strip)
    rows = data.draw(
        st.lists(
            st.fixed_dictionaries({"instruction": instruction, "output": ANY_TEXT}),
            min_size=1,
            max_size=5,
        )
    )
    header = data.draw(st.sampled_from(["instruction", "Instruction", " PROMPT "]))
    right = tmp_path / f"right{SUFFIX[written]}"
    write_rows(right, written, rows, header)
    expected = [row["instruction"] for row in rows]
    assert [seed.instruction for seed in seeds_of(right)] == expected
    for other in FORMATS:
        if other == written:
            continue
        wrong = tmp_path / f"wrong{SUFFIX[other]}"
        wrong.write_bytes(right.read_bytes())
        for path, options in ((wrong, {}), (right, {"format": other})):
            try:
                scan_seeds(path, SeedOptions(**options))
            except SeedFileError as error:  # any other exception fails the test: a traceback
                message = str(error)
                assert message.endswith(HINT[written]), (other, options, message)
                assert "\n" not in message and "\r" not in message
        assert [seed.instruction for seed in seeds_of(wrong, format=written)] == expected


@pytest.mark.parametrize(
    ("head", "seen_as"),
    [
        # One line of prose with a comma is no table: a table needs its columns in two records.
        (b"Write a poem about the sea, in four lines.\n", "text"),
        # Two records, two columns each.
        (
            b"Write a poem about the sea, in four lines.\nName three rivers, north to south.\n",
            "csv",
        ),
        # Two records whose column counts differ.
        (b"Write a poem about the sea, in four lines.\nName three rivers.\n", "text"),
    ],
)
def test_a_table_is_columns_that_hold_across_records(head: bytes, seen_as: str) -> None:
    sniffed = sniff_head(head, False)
    assert sniffed is not None and sniffed.format == seen_as


# -- a first line longer than what the sniffer reads (found by mutation testing) ---------------


HEAD = 1 << 16  # what the sniffer reads of a seed file


ROW = {"instruction": "Name a river " + "and its longest tributary " * 3000}  # over the head


def refusal(path: Path) -> str:
    with pytest.raises(SeedFileError) as raised:
        scan_seeds(path, SeedOptions())
    return str(raised.value)


# -- a first line longer than what the sniffer reads ---------------------------------------------


@pytest.mark.parametrize(
    ("name", "indent", "content", "hint"),
    [
        ("seeds.txt", "    ", json.dumps(ROW) + "\n", "JSON Lines, use --format jsonl"),
        ("seeds.jsonl", "\t", json.dumps([ROW, ROW]) + "\n", "a JSON array, use --format json"),
    ],
    ids=["json-lines-as-text", "json-array-as-json-lines"],
)
def test_an_indented_first_line_longer_than_the_head_is_known_by_how_it_starts(
    tmp_path: Path, name: str, indent: str, content: str, hint: str
) -> None:
    path = tmp_path / name
    path.write_text(indent + content, encoding="utf-8")
    assert len(content) > HEAD
    assert refusal(path).endswith(f"; it looks like {hint}")


@pytest.mark.parametrize("opening", ["[", "[ ", "[ {", '[ {"'])
def test_a_json_array_is_known_wherever_the_head_ends_in_its_opening(
    tmp_path: Path, opening: str
) -> None:
    # Blank lines up to the head, which ends right after `opening`: all the sniffer sees of it.
    array = json.dumps([{"instruction": "Name a river"}, {"instruction": "Name a lake"}])
    array = array.replace("[{", "[ {", 1)
    assert array.startswith(opening)
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n" * (HEAD - len(opening)) + array + "\n", encoding="utf-8")
    assert refusal(path).endswith("; it looks like a JSON array, use --format json")
    assert [seed.instruction for seed in iter_seeds(path, SeedOptions(format="json"))] == [
        "Name a river",
        "Name a lake",
    ]


def test_a_long_text_instruction_with_json_after_its_first_word_is_read_as_text(
    tmp_path: Path,
) -> None:
    # Longer than the head, so all the sniffer sees is how it starts: a word, not a bracket.
    first = 'A {"city": "Oslo"} record: describe it' + " in more detail" * 5000
    assert len(first) > HEAD
    path = tmp_path / "seeds.txt"
    path.write_text(first + "\nName a lake\n", encoding="utf-8")
    assert scan_seeds(path, SeedOptions()).count == 2
    assert [seed.instruction for seed in iter_seeds(path, SeedOptions())] == [first, "Name a lake"]
