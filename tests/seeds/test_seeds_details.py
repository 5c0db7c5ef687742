"""Details of the seed reader that mutation testing found unguarded.

Each test pins one behaviour a user meets that a planted bug changed without any other test
failing: the whole error line (file, line, why) for each kind of bad row or file, which rows
of a CSV, JSON array, text or Parquet file are read and with which line, how each shape's
fields are found, which ids are accepted, and what `evol validate` reports.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from evol.errors import SeedFileError
from evol.seeds import (
    SeedOptions,
    describe_seeds,
    file_digest,
    format_report,
    iter_seeds,
    scan_seeds,
)
from evol.seeds.containers import MAX_ROW_BYTES
from tests.support.runs import write_seeds


def seeds_of(path: Path, **options) -> list:
    return list(iter_seeds(path, SeedOptions(**options)))


def error_of(path: Path, **options) -> str:
    """The one line the CLI prints for the file: `PATH[:LINE]: why`."""
    with pytest.raises(SeedFileError) as raised:
        seeds_of(path, **options)
    return str(raised.value)


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# -- what `evol validate` reports ---------------------------------------------------------------


def test_validate_reads_the_file_in_the_format_asked_for(tmp_path: Path) -> None:
    # Plain questions in a file named .jsonl: --format text is trusted over the extension.
    path = write(tmp_path / "questions.jsonl", b"Why is the sky blue?\nName a prime\n")
    options = SeedOptions(format="text")
    report = describe_seeds(path, options)
    assert (report.format, report.seeds, report.shapes) == ("text", 2, {"text": 2})
    scan = scan_seeds(path, options)
    assert (scan.format, scan.count) == ("text", 2)


def test_a_file_with_an_unknown_extension_is_read_as_json_lines(tmp_path: Path) -> None:
    path = write_seeds(tmp_path / "seeds.data", [{"instruction": "a"}, {"instruction": "b"}])
    report = describe_seeds(path)
    assert (report.format, report.seeds) == ("jsonl", 2)


def test_validate_counts_every_seed_with_an_output(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Add 2 and 3", "output": "5"},
        {"instruction": "Add 4 and 4", "output": "8"},
        {"instruction": "Add 1 and 1"},
    ]
    report = describe_seeds(write_seeds(tmp_path / "s.jsonl", rows))
    assert (report.seeds, report.with_output) == (3, 2)


def test_the_validate_text_lists_every_shape_and_metadata_field(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Name a river", "topic": "geo", "lang": "en"},
        {"prompt": "Name a lake", "topic": "geo"},
        {"instruction": "Name a sea", "topic": "geo"},
    ]
    path = write_seeds(tmp_path / "s.jsonl", rows)
    assert format_report(describe_seeds(path)).splitlines() == [
        f"{path}: 3 valid seeds (jsonl); shape: alpaca (2 rows), prompt (1 rows)",
        "  with input: 0, with output: 0",
        "  metadata fields: topic (3), lang (1)",
        "  instruction words: mean 3, p50 3, p90 3, max 3",
    ]


@pytest.mark.parametrize("read", [describe_seeds, scan_seeds])
@pytest.mark.parametrize(
    ("content", "skip_invalid", "why"),
    [
        (b"", False, "the file holds no seeds"),
        (b"\n\n", False, "the file holds no seeds"),
        (b'{"instruction": 1}\nnope\n', True, "no valid seeds"),
    ],
)
def test_a_file_without_seeds_says_whether_it_skipped_any(
    tmp_path: Path, read, content: bytes, skip_invalid: bool, why: str
) -> None:
    path = write(tmp_path / "s.jsonl", content)
    with pytest.raises(SeedFileError) as raised:
        read(path, SeedOptions(skip_invalid=skip_invalid))
    assert str(raised.value) == f"{path}: {why}"


def test_the_seed_digest_is_the_files_sha256(tmp_path: Path) -> None:
    # The manifest records it so that a resumed run can tell its seed file changed.
    content = b'{"instruction": "a"}\n' * 70_000  # over 1 MiB: read in more than one block
    path = write(tmp_path / "s.jsonl", content)
    assert file_digest(path) == hashlib.sha256(content).hexdigest()


# -- rows that are no seed ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"instruction": {"text": "a"}}', "'instruction' must be a string, got an object"),
        ('{"instruction": ["a"]}', "'instruction' must be a string, got an array"),
        ('{"instruction": true}', "'instruction' must be a string, got a boolean"),
        ('{"instruction": null}', "'instruction' must be a string, got null"),
        ('{"instruction": "a", "input": 3}', "'input' must be a string, got a number"),
        ('{"instruction": "a", "output": 5}', "'output' must be a string, got a number"),
        ("[1, 2]", "expected an object with an instruction, got an array"),
        ("7", "expected an object with an instruction, got a number"),
        ('{"id": true, "instruction": "a"}', "'id' must be a string or an integer, got a boolean"),
        ('{"id": 1.5, "instruction": "a"}', "'id' must be a string or an integer, got a number"),
        ('{"id": ["x"], "instruction": "a"}', "'id' must be a string or an integer, got an array"),
        ('{"id": "  ", "instruction": "a"}', "'id' is empty"),
        (
            '{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6, "g": 7}',
            "no 'instruction' / 'prompt' / 'question' field (keys: 'a', 'b', 'c', 'd', 'e', "
            "'f'); name the field with --instruction-field (a dotted path such as "
            "conversations.0.value works)",
        ),
        (
            # A lone surrogate escape: no UTF-8 file or request can carry it.
            '{"instruction": "a", "note": "\\ud800"}',
            "cannot be written back as JSON (str is not valid UTF-8: surrogates not allowed)",
        ),
    ],
)
def test_a_bad_row_is_named_by_file_line_and_why(tmp_path: Path, line: str, why: str) -> None:
    path = write(tmp_path / "s.jsonl", ('{"instruction": "fine"}\n' + line + "\n").encode())
    assert error_of(path) == f"{path}:2: {why}"


def test_a_parquet_column_of_another_type_is_named_by_its_type(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "s.parquet", [{"instruction": b"raw bytes"}])
    assert error_of(path) == f"{path}:1: 'instruction' must be a string, got bytes"


def test_an_id_of_null_falls_back_to_the_line(tmp_path: Path) -> None:
    path = write_seeds(
        tmp_path / "s.jsonl", [{"instruction": "a"}, {"id": None, "instruction": "b"}]
    )
    assert [seed.id for seed in seeds_of(path)] == ["s1", "s2"]


# -- JSON Lines and text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "why"),
    [
        (
            b"not json\n",
            1,
            "invalid JSON: Expecting value; it looks like plain text, use --format text",
        ),
        (
            b'{"instruction": "a"}\n{"instruction": "b" "c"}\n',
            2,
            "invalid JSON: Expecting ',' delimiter (column 21)",
        ),
        (
            b'{"instruction": "a"}\n{"instruction": "a\xff b"}\n',
            2,
            "not valid UTF-8 (byte 0xff at column 19)",
        ),
        (
            b'{"instruction": "a"}\n{"instruction": "\x00"}\n',
            2,
            "contains a NUL byte (is this a binary file?)",
        ),
        (
            b' [{"instruction": "a"},\n {"instruction": "b"}]\n',
            1,
            "this is not JSON Lines; it looks like a JSON array, use --format json",
        ),
    ],
)
def test_a_json_lines_error_names_its_line_and_column(
    tmp_path: Path, content: bytes, line: int, why: str
) -> None:
    path = write(tmp_path / "s.jsonl", content)
    assert error_of(path) == f"{path}:{line}: {why}"


def test_a_skipped_blank_line_is_listed_as_such(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", b'{"instruction": "a"}\n\n{"instruction": "b"}\n')
    scan = scan_seeds(path, SeedOptions(skip_invalid=True))
    assert (scan.count, scan.skipped) == (2, [(2, "blank line")])


def test_a_row_at_the_size_limit_is_read_and_one_over_it_is_not(tmp_path: Path) -> None:
    at_limit = b'{"instruction": "' + b"x" * (MAX_ROW_BYTES - 20) + b'"}\n'
    assert len(at_limit) == MAX_ROW_BYTES
    assert (
        len(seeds_of(write(tmp_path / "at.jsonl", at_limit))[0].instruction) == MAX_ROW_BYTES - 20
    )
    over = b'{"instruction": "' + b"x" * 1_149_981 + b'"}\n'
    assert len(over) == 1_150_001
    path = write(tmp_path / "over.jsonl", over)
    assert error_of(path) == f"{path}:1: row is 1.2 MB, over the 1 MB limit"


def test_a_text_line_is_kept_as_written_but_its_line_ending(tmp_path: Path) -> None:
    path = write(
        tmp_path / "s.txt", b"Spell the Roman numeral for ten: X\r\nFill the blank: ___ \t\n"
    )
    assert [seed.instruction for seed in seeds_of(path)] == [
        "Spell the Roman numeral for ten: X",
        "Fill the blank: ___ \t",
    ]


def test_a_text_seed_that_starts_with_a_brace_is_not_taken_for_json(tmp_path: Path) -> None:
    path = write(tmp_path / "s.txt", b"{name} is a placeholder: explain templating\nNext one\n")
    assert [seed.instruction for seed in seeds_of(path)] == [
        "{name} is a placeholder: explain templating",
        "Next one",
    ]


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        (
            "s.jsonl",
            b"PAR1" + b"\x00" * 40,
            "this is not JSON Lines; it looks like Parquet, use --format parquet",
        ),
        (
            "s.parquet",
            b'\n  {"instruction": "a"}\n',
            "this is not Parquet; it looks like JSON Lines, use --format jsonl",
        ),
        (
            "s.parquet",
            b"Why is the sky blue?\n",
            "this is not Parquet; it looks like plain text, use --format text",
        ),
        (
            "s.txt",
            b'{"instruction": "a"}\n',
            "this is not plain text; it looks like JSON Lines, use --format jsonl",
        ),
        (
            "s.csv",
            b'\n{"instruction": "a"}\n',
            "this is not CSV; it looks like JSON Lines, use --format jsonl",
        ),
    ],
)
def test_content_plainly_of_another_format_is_refused_in_one_line(
    tmp_path: Path, name: str, content: bytes, why: str
) -> None:
    path = write(tmp_path / name, content)
    line = 2 if content.startswith(b"\n") else 1  # the line that shows what the file is
    assert error_of(path) == f"{path}:{line}: {why}"


# -- paths that cannot be read ------------------------------------------------------------------


def test_a_path_that_is_no_readable_file_says_why(tmp_path: Path) -> None:
    assert error_of(tmp_path) == f"{tmp_path}: is a directory, not a seed file"
    missing = tmp_path / "missing.jsonl"
    assert error_of(missing) == f"{missing}: no such file"
    below_a_file = write(tmp_path / "notes.txt", b"x\n") / "seeds.jsonl"
    assert error_of(below_a_file) == f"{below_a_file}: cannot be read: Not a directory"


# -- JSON arrays --------------------------------------------------------------------------------


def test_json_array_seeds_know_their_lines_whatever_the_layout(tmp_path: Path) -> None:
    content = (
        '\n[{"id": "a", "instruction": "A", "tags": ["x", "y"]}, {"id": "b", "instruction": "B"},\n'
        '  {"id": "c", "instruction": "C",\n   "tags": [[1], [2]]},\n\n  {"id": "d", "instruction": "D"}]\n'
    )
    path = write(tmp_path / "s.json", b"\xef\xbb\xbf" + content.encode())
    assert [(seed.line, seed.instruction) for seed in seeds_of(path)] == [
        (2, "A"),
        (2, "B"),
        (3, "C"),
        (6, "D"),
    ]


def test_seeds_that_share_a_line_of_a_json_array_get_an_id_each(tmp_path: Path) -> None:
    # json.dump writes a whole array on one line: its seeds cannot all be s1.
    rows = [{"instruction": "a"}, {"instruction": 2}, {"instruction": "c"}]
    one_line = write(tmp_path / "compact.json", json.dumps(rows).encode())
    assert error_of(one_line) == f"{one_line}:1: 'instruction' must be a string, got a number"
    read = seeds_of(one_line, skip_invalid=True)
    assert [(seed.id, seed.line, seed.instruction) for seed in read] == [
        ("s1", 1, "a"),
        ("s1-3", 1, "c"),
    ]
    # One seed a line keeps the ids it always had.
    pretty = write(tmp_path / "pretty.json", json.dumps(rows[::2], indent=1).encode())
    assert [seed.id for seed in seeds_of(pretty)] == ["s2", "s5"]


@pytest.mark.parametrize(
    ("content", "line", "why"),
    [
        (
            b'[\n {"instruction": "a"},\n {"instruction": "b\x00"},\n "\x00"\n]',
            3,
            "contains a NUL byte (is this a binary file?)",  # the words of every format
        ),
        (b'[\n {"instruction": "a"},\n\n {"instruction": "\xff"}\n]', 4, "not valid UTF-8"),
        # The line of the error, not the line where its element starts.
        (b'[\n {"instruction": "a",\n  "x": }\n]', 3, "invalid JSON: Expecting value"),
        # A comment before the array: the error is on the first line.
        (b'// seeds\n[\n {"instruction": "a"}\n]\n', 1, "invalid JSON: Expecting value"),
        (
            b"Why is the sky blue?\n",
            1,
            "invalid JSON: Expecting value; it looks like plain text, use --format text",
        ),
        (
            b'\n  "instruction"\n',
            2,
            "expected a JSON array of seeds, got a string; it looks like plain text, use "
            "--format text",
        ),
        (
            b'[{"instruction": "a"}]\n  ]\n',
            2,
            "more JSON after the array: a seed file holds one JSON array",
        ),
    ],
)
def test_a_json_array_error_names_its_line(
    tmp_path: Path, content: bytes, line: int, why: str
) -> None:
    path = write(tmp_path / "s.json", content)
    assert error_of(path) == f"{path}:{line}: {why}"


# -- CSV ----------------------------------------------------------------------------------------


def test_a_csv_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" starts the file with one.
    path = write(tmp_path / "s.csv", "\ufeffinstruction,input\nRésumé it,x\n".encode())
    assert [(seed.instruction, seed.input) for seed in seeds_of(path)] == [("Résumé it", "x")]


def test_a_csv_column_named_by_instruction_field_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", b"text,source\nName a river,web\n")
    (seed,) = seeds_of(path, instruction_field="text")
    assert (seed.instruction, seed.metadata) == ("Name a river", {"source": "web"})
    assert error_of(path, instruction_field="body") == (
        f"{path}:1: the CSV header has no instruction column: found 'text', 'source'; it must "
        "name one of 'body' (in any case), or pick one with --instruction-field"
    )


@pytest.mark.parametrize(
    ("content", "line", "why"),
    [
        (b"", 1, "empty CSV file: expected a header row"),
        (
            b"a,b,c,d,e,f\n1,2,3,4,5,6\n",
            1,
            "the CSV header has no instruction column: found 'a', 'b', 'c', 'd', 'e', 'f'; it "
            "must name one of 'instruction', 'prompt', 'question' (in any case), or pick one "
            "with --instruction-field",
        ),
        (b"instruction,input\na,b\n,\nc,d\n", 3, "blank row"),
        (b"instruction,input\na,b\nc,d,e,f\n", 3, "has 4 columns, the header has 2"),
        (b"instruction,input\na,b\nc\n", 3, "has 1 columns, the header has 2"),
        (
            b'instruction\nfine\n"' + b"x" * (MAX_ROW_BYTES + 1) + b'"\n',
            3,
            "row is 1.0 MB, over the 1 MB limit",  # the words of every format
        ),
    ],
)
def test_a_csv_error_names_its_line(tmp_path: Path, content: bytes, line: int, why: str) -> None:
    path = write(tmp_path / "s.csv", content)
    assert error_of(path) == f"{path}:{line}: {why}"


@pytest.mark.parametrize("rows_before", [2, 6000])  # 6,000 rows: past the first 64 KiB block
def test_a_csv_byte_that_is_not_utf8_is_named_by_its_line(tmp_path: Path, rows_before: int) -> None:
    content = b"instruction\n" + b"Name a river\n" * rows_before + b"Caf\xe9 au lait\n"
    path = write(tmp_path / "s.csv", content)
    assert error_of(path) == f"{path}:{rows_before + 2}: not valid UTF-8"


def test_a_csv_that_ends_inside_a_character_is_named_by_its_last_line(tmp_path: Path) -> None:
    path = write(tmp_path / "s.csv", b"instruction\nName a river\nCaf\xc3")
    assert error_of(path) == f"{path}:3: not valid UTF-8"


# -- Parquet ------------------------------------------------------------------------------------


def test_without_pyarrow_a_parquet_file_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_parquet(tmp_path / "s.parquet", [{"instruction": "a"}])
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert error_of(path) == f"{path}: reading Parquet needs pyarrow: pip install 'evol[parquet]'"


def test_a_broken_parquet_file_says_so(tmp_path: Path) -> None:
    path = write(tmp_path / "s.parquet", b"PAR1" + b"\x00" * 40 + b"PAR1")
    assert error_of(path).startswith(f"{path}: unreadable Parquet: ")


# -- shapes -------------------------------------------------------------------------------------


def test_the_prompt_shape_reads_input_output_and_keeps_the_rest(tmp_path: Path) -> None:
    row = {"id": 3, "prompt": "Translate", "input": "chat", "output": "cat", "lang": "fr"}
    (seed,) = seeds_of(write_seeds(tmp_path / "s.jsonl", [row]))
    assert (seed.id, seed.shape, seed.instruction, seed.input, seed.output, seed.metadata) == (
        "3",
        "prompt",
        "Translate",
        "chat",
        "cat",
        {"lang": "fr"},
    )


def test_a_dolly_row_keeps_only_its_other_fields_as_metadata(tmp_path: Path) -> None:
    row = {"id": "d1", "instruction": "Sum up", "context": "c", "response": "r", "category": "qa"}
    (seed,) = seeds_of(write_seeds(tmp_path / "s.jsonl", [row]))
    assert (seed.id, seed.shape, seed.metadata) == ("d1", "dolly", {"category": "qa"})


def test_a_self_instruct_row_without_instances_has_no_input(tmp_path: Path) -> None:
    row = {"instruction": "Write a haiku", "instances": []}
    (seed,) = seeds_of(write_seeds(tmp_path / "s.jsonl", [row]))
    assert (seed.shape, seed.input, seed.output, seed.metadata) == ("self-instruct", "", None, {})


def test_named_fields_default_to_input_and_output(tmp_path: Path) -> None:
    row = {"q": "Sum up", "input": "a text", "output": "a summary", "lang": "en"}
    (seed,) = seeds_of(write_seeds(tmp_path / "s.jsonl", [row]), instruction_field="q")
    assert (seed.shape, seed.input, seed.output, seed.metadata) == (
        "fields",
        "a text",
        "a summary",
        {"lang": "en"},
    )


@pytest.mark.parametrize(
    ("row", "path", "instruction"),
    [
        ({"turns": ["first", "last"]}, "turns.-2", "first"),
        ({"turns": ["first", "last"]}, "turns.-1", "last"),
    ],
)
def test_a_negative_index_counts_from_the_end(
    tmp_path: Path, row, path: str, instruction: str
) -> None:
    (seed,) = seeds_of(write_seeds(tmp_path / "s.jsonl", [row]), instruction_field=path)
    assert seed.instruction == instruction


@pytest.mark.parametrize(
    ("row", "path"),
    [
        ({"turns": ["first", "last"]}, "turns.2"),
        ({"turns": ["first", "last"]}, "turns.-3"),
        ({"title": "abc"}, "title.0"),
        ({"title": "abc"}, "title.b"),
        ({"turns": ["first", "last"]}, "turns.X1"),
    ],
)
def test_a_path_that_leads_nowhere_is_no_field(tmp_path: Path, row, path: str) -> None:
    seeds = write_seeds(tmp_path / "s.jsonl", [row])
    assert error_of(seeds, instruction_field=path) == f"{seeds}:1: no field {path!r}"


@pytest.mark.parametrize(
    ("row", "why"),
    [
        ({"instruction": 5, "instances": []}, "'instruction' must be a string, got a number"),
        (
            {"instruction": "a", "instances": {"input": "x"}},
            "'instances' must be a list, got an object",
        ),
        ({"instruction": "a", "instances": ["x"]}, "'instances.0' must be an object, got a string"),
        ({"instruction": 5, "context": "c"}, "'instruction' must be a string, got a number"),
        ({"question": 5}, "'question' must be a string, got a number"),
        ({"prompt": " "}, "'prompt' is empty"),
        (
            {"messages": [{"role": "user", "content": "a"}, "b"]},
            "'messages.1' must be an object, got a string",
        ),
        ({"messages": [{"role": "user", "content": ""}]}, "'messages.0.content' is empty"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "'messages.0.content' has a text part that is not a string",
        ),
        (
            {"conversations": [{"from": "human", "value": 2}]},
            "'conversations.0.value' must be a string, got a number",
        ),
    ],
)
def test_a_shape_error_names_the_field(tmp_path: Path, row, why: str) -> None:
    path = write_seeds(tmp_path / "s.jsonl", [row])
    assert error_of(path) == f"{path}:1: {why}"


def test_a_conversation_that_opens_with_the_assistant_takes_the_reply_to_the_user(
    tmp_path: Path,
) -> None:
    turns = [
        {"from": "gpt", "value": "Hi! How can I help?"},
        {"from": "human", "value": "Name a prime"},
        {"from": "human", "value": "An odd one"},
        {"from": "gpt", "value": "7"},
    ]
    (seed,) = seeds_of(write_seeds(tmp_path / "s.jsonl", [{"conversations": turns}]))
    assert (seed.instruction, seed.output) == ("Name a prime", "7")


def test_only_the_text_parts_of_a_message_are_read(tmp_path: Path) -> None:
    content = [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        "stray",
        {"type": "text", "text": "What is in the picture?"},
    ]
    row = {"messages": [{"role": "user", "content": content}]}
    (seed,) = seeds_of(write_seeds(tmp_path / "s.jsonl", [row]))
    assert seed.instruction == "What is in the picture?"


# -- found by the third mutation round ---------------------------------------------------------


# -- a CSV header without an instruction column: which columns the refusal shows -----------------


@pytest.mark.parametrize(
    ("columns", "shown"),
    [
        (
            [*(f"c{i}" for i in range(1, 8)), "y" * 40],
            ", ".join([*(f"'c{i}'" for i in range(1, 8)), f"'{'y' * 40}'"]),
        ),
        (
            [f"c{i}" for i in range(1, 10)],
            ", ".join(f"'c{i}'" for i in range(1, 9)) + " and 1 more",
        ),
        (
            [f"c{i}" for i in range(1, 9)] + ["z" * 41],
            ", ".join(f"'c{i}'" for i in range(1, 9)) + " and 1 more",
        ),
    ],
    ids=["eight, one of 40 characters", "nine", "nine, the last long"],
)
def test_a_header_without_an_instruction_column_is_shown_up_to_eight_columns(
    evol, tmp_path: Path, columns: list[str], shown: str
) -> None:
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(",".join(columns) + "\n" + ",".join("v" for _ in columns) + "\n")
    result = evol("run", seeds, "--out", tmp_path / "run", "--dry-run")
    assert result.exit_code == 2
    assert f"the CSV header has no instruction column: found {shown}; it must name" in result.stderr
