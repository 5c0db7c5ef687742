"""Promises of the JSON array reader that the fifth round of mutation survivors (checks 6,120 on,
#22) found unpinned: an array is read whole however it is spaced (compact, as `json.dumps` with
separators=(",", ":") writes it, included), and one character more right after its closing
bracket is refused; a NUL byte or a byte that is not UTF-8 is named
with the line it is on, wherever the file's blocks of 64 KiB fall; each way an array is broken
is named in json's words.

Through `evol.seeds` (`iter_seeds`), the same on 4f7dc9e's tree, where the mutants were found,
as on `main`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evol.errors import SeedFileError
from evol.seeds import SeedOptions, iter_seeds

BLOCK = 1 << 16  # what the reader reads at a time
NUL_BYTE = "contains a NUL byte (is this a binary file?)"
MORE = "more JSON after the array: a seed file holds one JSON array"


def instructions(path: Path) -> list[str]:
    return [seed.instruction for seed in iter_seeds(path, SeedOptions())]


def refusal(path: Path) -> str:
    with pytest.raises(SeedFileError) as raised:
        instructions(path)
    return str(raised.value)


# -- an array however it is spaced -------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)
SPACING = st.sampled_from(
    [
        {"separators": (",", ":")},
        {"separators": (", ", ": ")},
        {"indent": 2},
        {"indent": 0},
        {"separators": (" ,\n", " : "), "indent": "\t"},
    ]
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    texts=st.lists(TEXT.filter(lambda t: t.strip()), min_size=1, max_size=6),
    spacing=SPACING,
    ascii_only=st.booleans(),
)
def test_an_array_is_read_whole_however_it_is_spaced(
    tmp_path: Path, texts: list[str], spacing: dict, ascii_only: bool
) -> None:
    path = tmp_path / "seeds.json"
    rows = [{"instruction": text, "n": n} for n, text in enumerate(texts)]
    path.write_text(json.dumps(rows, ensure_ascii=ascii_only, **spacing), encoding="utf-8")
    expected = [seed.instruction for seed in _as_json_lines(tmp_path, rows)]
    assert instructions(path) == expected
    assert len(expected) == len(rows)


def _as_json_lines(tmp_path: Path, rows: list[dict]) -> list:
    lines = tmp_path / "seeds.jsonl"
    lines.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return list(iter_seeds(lines, SeedOptions()))


# -- what a broken array is called ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'[{"instruction": "a"}\n {"instruction": "b"}]',
            "2: invalid JSON: Expecting ',' delimiter",
        ),
        (b"[" * 100_000, "1: invalid JSON: nested too deeply"),
        (b'[{"instruction": "a"}]]\n', "1: " + MORE),
        (b'[\n{"instruction": "a"}\n],', "3: " + MORE),
        (b'[{"instruction": "a"}]\n\xc3', "2: not valid UTF-8"),  # cut in a character at the end
        (b'[{"instruction": "a"}]\n\xe2\x82', "2: not valid UTF-8"),
    ],
    ids=[
        "no-comma",
        "too-deep",
        "a-bracket-more",
        "a-comma-more",
        "cut-character",
        "cut-character-of-three",
    ],
)
def test_each_way_an_array_is_broken_is_named_with_its_line(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "seeds.json"
    path.write_bytes(content)
    assert refusal(path) == f"{path}:{message}"


# -- a bad byte, wherever the blocks fall ---------------------------------------------------------


def seed_file(size: int) -> bytearray:
    """A JSON array of one seed a line, at least `size` bytes long, whose instructions are
    runs of x."""
    lines = [f'{{"instruction": "{"x" * (40 + n % 37)}"}},' for n in range(size // 40 + 2)]
    lines[-1] = lines[-1].rstrip(",")
    return bytearray(("[\n" + "\n".join(lines) + "\n]\n").encode())


def aligned(content: bytearray, offset: int, want: bytes) -> bytearray:
    """Spaces before the first element until the byte at `offset` is `want`."""
    while content[offset : offset + 1] != want:
        content[1:1] = b" "
    return content


def planted(content: bytearray, at: int, byte: bytes) -> tuple[bytearray, int]:
    """`byte` in place of the first x at or after offset `at`; returns the content and the
    line it is on."""
    where = content.index(b"x", at)
    content[where : where + 1] = byte
    return content, content.count(b"\n", 0, where) + 1


@pytest.mark.parametrize("byte", [b"\x00", b"\xff"], ids=["nul", "not-utf8"])
@pytest.mark.parametrize(
    ("at", "block_starts_with"),
    [
        (200, None),  # in the first block
        (BLOCK, b"x"),  # the first byte of the second block
        (BLOCK + 500, b"\n"),  # in a block that starts with a newline
        (5 * BLOCK + 123, None),  # several blocks on
    ],
    ids=["first-block", "block-start", "after-a-newline-at-the-block-start", "fifth-block"],
)
def test_a_bad_byte_is_named_with_its_line_wherever_the_blocks_fall(
    tmp_path: Path, byte: bytes, at: int, block_starts_with: bytes | None
) -> None:
    content = seed_file(6 * BLOCK)
    if block_starts_with is not None:
        content = aligned(content, BLOCK, block_starts_with)
    content, line = planted(content, at, byte)
    path = tmp_path / "seeds.json"
    path.write_bytes(bytes(content))
    why = NUL_BYTE if byte == b"\x00" else "not valid UTF-8"
    assert refusal(path) == f"{path}:{line}: {why}"
