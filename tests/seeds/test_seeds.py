"""Reading seed files: every format, every field rule, and precise errors for bad rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evol.errors import SeedFileError
from evol.seeds import SeedOptions, iter_seeds, scan_seeds
from tests.support.runs import read_jsonl, run_args, write_seeds
from tests.support.seed_files import BAD_FILES


def load(path: Path, **options) -> list:
    return list(iter_seeds(path, SeedOptions(**options)))


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("s.jsonl", '{"instruction": "A"}\n{"instruction": "B", "input": "x"}\n'),
        ("s.json", '[\n  {"instruction": "A"},\n  {"instruction": "B", "input": "x"}\n]\n'),
        ("s.csv", "instruction,input\nA,\nB,x\n"),
        ("s.txt", "A\nB\n"),
    ],
)
def test_each_format_is_picked_by_extension(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    seeds = load(path)
    assert [s.instruction for s in seeds] == ["A", "B"]
    if not name.endswith(".txt"):
        assert seeds[1].input == "x"


def test_format_option_overrides_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "seeds.data"
    path.write_text("one\ntwo\n", encoding="utf-8")
    assert [s.instruction for s in load(path, format="text")] == ["one", "two"]


@pytest.mark.parametrize(
    ("row", "field", "expected"),
    [
        ({"instruction": "I", "prompt": "P"}, None, "I"),
        ({"prompt": "P", "question": "Q"}, None, "P"),
        ({"question": "Q"}, None, "Q"),
        ({"text": "T", "instruction": "I"}, "text", "T"),
    ],
)
def test_instruction_field_order(
    tmp_path: Path, row: dict, field: str | None, expected: str
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(row) + "\n")
    assert load(path, instruction_field=field)[0].instruction == expected


def test_output_is_kept_and_other_fields_go_to_metadata(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    row = {"id": 7, "instruction": "I", "input": "in", "output": "O", "topic": "math", "n": [1]}
    path.write_text(json.dumps(row) + "\n")
    (seed,) = load(path)
    assert (seed.id, seed.input, seed.output) == ("7", "in", "O")
    assert seed.metadata == {"topic": "math", "n": [1]}


def test_ids_default_to_the_line_number(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("a\nb\nc\n")
    assert [s.id for s in load(path)] == ["s1", "s2", "s3"]


def test_json_array_rows_know_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        '[\n {"instruction": "a"},\n\n {"instruction": "b",\n  "x": 1},\n {"nope": 1}\n]'
    )
    with pytest.raises(SeedFileError) as caught:
        load(path)
    assert caught.value.line == 6


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"instruction": "A"}\r\n{"instruction": "B"}\r\n')
    assert [s.instruction for s in load(path)] == ["A", "B"]


def test_unicode_and_braces_survive(tmp_path: Path) -> None:
    text = "Résumé {x} #tag $instruction 日本語 🚀 </instruction>"
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({"instruction": text}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert load(path)[0].instruction == text


@pytest.mark.parametrize(
    ("case", "name", "content", "line", "message"), BAD_FILES, ids=[c[0] for c in BAD_FILES]
)
def test_bad_files_name_file_and_line(
    tmp_path: Path, case: str, name: str, content: bytes, line: int | None, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(SeedFileError) as caught:
        scan_seeds(path)
    error = caught.value
    assert error.line == line
    assert message in error.why
    assert str(error).startswith(f"{path}:{line}:" if line else f"{path}:")
    assert "\n" not in str(error)


@pytest.mark.parametrize("make", ["missing", "directory"])
def test_unusable_paths(tmp_path: Path, make: str) -> None:
    path = tmp_path / "seeds.jsonl"
    if make == "directory":
        path.mkdir()
    with pytest.raises(SeedFileError, match="directory" if make == "directory" else "no such file"):
        scan_seeds(path)


def test_skip_invalid_counts_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"instruction": "a"}\nnot json\n{"instruction": 3}\n\n{"instruction": "b"}\n')
    scan = scan_seeds(path, SeedOptions(skip_invalid=True))
    assert scan.count == 2
    assert [line for line, _ in scan.skipped] == [2, 3, 4]
    assert [s.instruction for s in load(path, skip_invalid=True)] == ["a", "b"]


def test_trailing_blank_lines_are_not_rows(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"instruction": "a"}\n\n\n')
    assert scan_seeds(path).count == 1


def test_a_csv_field_over_the_csv_modules_default_cap_is_read(tmp_path: Path) -> None:
    # The csv module stops at 131,072 characters a field unless told otherwise; a row may be 1 MB.
    path = tmp_path / "s.csv"
    long_instruction = "word " * 60_000
    path.write_text(f'instruction\n"{long_instruction}"\n')
    assert [s.instruction for s in load(path)] == [long_instruction]


TWO_SEEDS = [{"instruction": f"Task {i}: explain the idea"} for i in range(2)]


@pytest.mark.slow
def test_a_seed_file_through_a_pipe_is_named_as_one_not_as_empty(tmp_path: Path) -> None:
    """`evol validate <(head seeds.jsonl)`: the sniffer read the pipe, the reader found it empty
    and said 'the file holds no seeds'. evol reads a seed file more than once; a pipe is refused
    in words, and a FIFO without a writer does not hang the run."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", TWO_SEEDS)
    script = (
        "import subprocess, sys; "
        "feeder = subprocess.Popen(['cat', sys.argv[1]], stdout=subprocess.PIPE); "
        "path = f'/dev/fd/{feeder.stdout.fileno()}'; "
        "done = subprocess.run([sys.executable, '-m', 'evol', 'validate', path], "
        "pass_fds=[feeder.stdout.fileno()], capture_output=True, text=True); "
        "print(done.returncode); print(done.stderr.strip())"
    )
    printed = subprocess.run(
        [sys.executable, "-c", script, str(seeds)], capture_output=True, text=True, timeout=120
    ).stdout.splitlines()
    assert printed[0] == "2"
    assert "holds no seeds" not in printed[1]
    assert "not a regular file" in printed[1]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.slow
def test_a_fifo_without_a_writer_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "seeds.jsonl"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "evol", "validate", str(fifo)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"evol: error: {fifo}: not a regular file (a pipe, a FIFO or a device): evol reads "
        "the seed file more than once; save it to a file first"
    ]


def test_field_and_format_through_the_command_line(evol, server, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.data"
    seeds.write_text('{"task": "Name a bird", "id": "x"}\n')
    result = evol(
        *run_args(
            server,
            seeds,
            tmp_path / "run",
            "--generations",
            "0",
            "--format",
            "jsonl",
            "--field",
            "task",
        )
    )
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(tmp_path / "run" / "gen_0.jsonl")
    assert (record["id"], record["instruction"]) == ("x", "Name a bird")
