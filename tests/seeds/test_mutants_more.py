"""Promises that mutation testing found unpinned outside the pipeline (#22): a seed file whose
first 64 KiB end inside its first line is still known by how that line starts, and the batch
backend names the request a server refused as HTTP spells it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evol.errors import SeedFileError
from evol.seeds import SeedOptions, iter_seeds, scan_seeds
from tests.support.batch_server import BatchServer
from tests.support.runs import write_seeds

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


# -- the batch backend's errors ----------------------------------------------------------------


def test_a_batch_run_names_the_request_that_was_refused_as_http_spells_it(
    evol, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a river"}])
    with BatchServer() as server:
        elsewhere = server.base_url.replace("/v1", "/elsewhere/v1")  # no API there
        result = evol(
            "run", seeds, "--out", tmp_path / "run", "--batch", "--base-url", elsewhere, "--quiet"
        )
        assert server.requests == ["GET /elsewhere/v1/models"]
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"evol: error: {elsewhere} has no Batch API, or not all of it (GET ")
    assert "(GET /models answered 404: " in line
