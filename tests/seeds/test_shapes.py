"""Seed files as people have them: five shapes, dotted paths, Parquet, and the content check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evol.errors import SeedFileError
from evol.seeds import SeedOptions, describe_seeds, iter_seeds
from tests.support.runs import read_jsonl, run_args, write_seeds

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def seeds_of(path: Path, **options) -> list:
    return list(iter_seeds(path, SeedOptions(**options)))


def test_self_instruct_seeds_keep_their_first_instance() -> None:
    seeds = {seed.id: seed for seed in seeds_of(EXAMPLES / "self_instruct.jsonl")}
    first = seeds["seed_task_1"]
    assert first.shape == "self-instruct"
    assert (first.input, first.output) == (
        "The gardener planted the roses in April.",
        "The roses were planted by the gardener in April.",
    )
    assert first.metadata == {"name": "passive_voice", "is_classification": False}
    # Other instances stay in the seed's own metadata; the first is its input and output.
    assert seeds["seed_task_2"].metadata["instances"] == [
        {
            "input": "violin, cello, flute, viola",
            "output": "Flute: it is a wind instrument, the others have strings.",
        }
    ]
    assert seeds["seed_task_3"].input == ""


def test_dolly_context_is_the_input_and_response_the_output() -> None:
    first, second = seeds_of(EXAMPLES / "dolly.jsonl")
    assert first.shape == "dolly" and first.input.startswith("The footbridge")
    assert first.output == "It is made of larch wood." and first.metadata == {
        "category": "closed_qa"
    }
    assert second.input == ""


def test_sharegpt_takes_the_first_user_turn_and_the_reply_to_it() -> None:
    first, second = seeds_of(EXAMPLES / "sharegpt.jsonl")
    assert (first.id, first.shape, first.instruction) == (
        "conv-1",
        "sharegpt",
        "Why does ice float on water?",
    )
    assert first.output.startswith("Ice is less dense") and first.metadata == {
        "system": "You are a patient tutor."
    }
    assert second.output == "Rye & Shine."  # the first reply, not the second exchange


def test_openai_chat_joins_text_parts() -> None:
    first, second = seeds_of(EXAMPLES / "openai_chat.jsonl")
    assert (first.shape, first.instruction, first.metadata) == (
        "openai-chat",
        "What is a prime number?",
        {"system": "Answer in one sentence."},
    )
    assert second.instruction == "Summarize the plot of a heist film\nin two lines."
    assert second.output is None


def test_alpaca_is_read_as_before() -> None:
    first = seeds_of(EXAMPLES / "alpaca.jsonl")[0]
    assert (first.shape, first.input, first.metadata) == (
        "alpaca",
        "The committee approved the new budget on Monday.",
        {},
    )


@pytest.mark.parametrize(
    ("name", "shape", "rows"),
    [
        ("alpaca.jsonl", "alpaca", 3),
        ("self_instruct.jsonl", "self-instruct", 3),
        ("dolly.jsonl", "dolly", 2),
        ("sharegpt.jsonl", "sharegpt", 2),
        ("openai_chat.jsonl", "openai-chat", 2),
    ],
)
def test_validate_says_which_shape_it_recognised(evol, name: str, shape: str, rows: int) -> None:
    result = evol("validate", EXAMPLES / name)
    assert result.exit_code == 0
    assert f"shape: {shape} ({rows} rows)" in result.stdout
    report = json.loads(evol("validate", EXAMPLES / name, "--json").stdout)
    assert report["shapes"] == {shape: rows}


@pytest.mark.parametrize(
    ("row", "options", "expected"),
    [
        (
            {"data": {"q": "Why?", "ctx": ["x", "the context"]}, "id": 4},
            {"instruction_field": "data.q", "input_field": "data.ctx.1"},
            ("4", "Why?", "the context", None, {}),
        ),
        (
            {"turns": [{"text": "Hi there"}, {"text": "Hello"}], "lang": "en"},
            {"instruction_field": "turns.0.text", "output_field": "turns.-1.text"},
            ("s1", "Hi there", "", "Hello", {"lang": "en"}),
        ),
        (  # an optional path that is absent gives nothing
            {"task": "Count"},
            {"instruction_field": "task", "input_field": "extra.0"},
            ("s1", "Count", "", None, {}),
        ),
    ],
)
def test_dotted_paths_name_any_field(tmp_path: Path, row, options, expected) -> None:
    path = write_seeds(tmp_path / "s.jsonl", [row])
    (seed,) = seeds_of(path, **options)
    assert (seed.id, seed.instruction, seed.input, seed.output, seed.metadata) == expected


@pytest.mark.parametrize(
    ("row", "options", "message"),
    [
        ({"q": "x"}, {"instruction_field": "data.q"}, "s.jsonl:1: no field 'data.q'"),
        ({"q": 5}, {"instruction_field": "q"}, "s.jsonl:1: 'q' must be a string, got a number"),
        (
            {"q": "x", "i": [1]},
            {"instruction_field": "q", "input_field": "i.0"},
            "'input' must be a string",
        ),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, {}, "'messages' has no user turn"),
        ({"conversations": "hi"}, {}, "'conversations' must be a list of turns, got a string"),
        ({"instruction": "x", "instances": {"input": "y"}}, {}, "'instances' must be a list"),
        (
            {"title": "x", "body": "y"},
            {},
            "no 'instruction' / 'prompt' / 'question' field (keys: 'title', 'body')",
        ),
    ],
)
def test_a_row_that_gives_no_seed_names_its_line_and_why(
    tmp_path: Path, row, options, message
) -> None:
    path = write_seeds(tmp_path / "s.jsonl", [row])
    with pytest.raises(SeedFileError) as error:
        seeds_of(path, **options)
    assert message in str(error.value)


# -- Parquet -----------------------------------------------------------------------------------


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)
    return path


def test_parquet_seeds_are_read_in_any_shape(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i}"},
                {"role": "assistant", "content": f"Answer {i}"},
            ]
        }
        for i in range(5)
    ]
    path = write_parquet(tmp_path / "chat.parquet", rows)
    seeds = seeds_of(path)
    assert [(s.id, s.line, s.instruction, s.output) for s in seeds[:2]] == [
        ("s1", 1, "Question 0", "Answer 0"),
        ("s2", 2, "Question 1", "Answer 1"),
    ]
    assert len(seeds) == 5 and {s.shape for s in seeds} == {"openai-chat"}


@pytest.mark.slow
def test_evol_runs_a_parquet_seed_file(evol, server, tmp_path: Path) -> None:
    path = write_parquet(
        tmp_path / "seeds.parquet", [{"instruction": f"Explain idea {i}"} for i in range(3)]
    )
    assert evol(*run_args(server, path, tmp_path / "run", "--generations", "1")).exit_code == 0
    assert len(read_jsonl(tmp_path / "run" / "dataset.jsonl")) == 6


@pytest.mark.slow
def test_without_pyarrow_parquet_says_which_extra_to_install(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "seeds.parquet", [{"instruction": "x"}])
    code = (
        "import sys; sys.modules['pyarrow'] = None; sys.modules['pyarrow.parquet'] = None\n"
        "from evol.cli import main; sys.argv = ['evol', 'validate', sys.argv[1]]; main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "reading Parquet needs pyarrow: pip install 'evol[parquet]'" in result.stderr
    assert "Traceback" not in result.stderr


# -- content beats extension -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "seeds.txt",
            b'{"instruction": "a"}\n{"instruction": "b"}\n',
            "this is not plain text; it looks like JSON Lines, use --format jsonl",
        ),
        (
            "seeds.csv",
            b'{"instruction": "a"}\n',
            "this is not CSV; it looks like JSON Lines, use --format jsonl",
        ),
        (
            "seeds.json",
            b'{"instruction": "a"}\n{"instruction": "b"}\n',
            "this is not a JSON array; it looks like JSON Lines, use --format jsonl",
        ),
        (
            "seeds.jsonl",
            b"PAR1" + b"\x00" * 40,
            "this is not JSON Lines; it looks like Parquet, use --format parquet",
        ),
        (
            "seeds.parquet",
            b'{"instruction": "a"}\n',
            "this is not Parquet; it looks like JSON Lines, use --format jsonl",
        ),
    ],
)
def test_content_that_is_plainly_another_format_is_refused(
    evol, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = evol("validate", path)
    assert result.exit_code == 2 and message in result.stderr
    assert result.stderr.count("\n") == 1


def test_an_explicit_format_is_trusted(evol, tmp_path: Path) -> None:
    path = tmp_path / "seeds.txt"
    path.write_text('{"instruction": "a"}\n')
    assert evol("validate", path, "--format", "jsonl").exit_code == 0
    as_text = evol("validate", path, "--format", "text", "--json")
    assert as_text.exit_code == 0 and json.loads(as_text.stdout)["shapes"] == {"text": 1}


# -- nesting, ids, --limit ---------------------------------------------------------------------


def test_pathological_nesting_is_a_row_error(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text('{"instruction": "fine"}\n' + '{"a": ' * 1000 + "1" + "}" * 1000 + "\n")
    with pytest.raises(SeedFileError) as error:
        seeds_of(path)
    assert str(error.value).endswith("s.jsonl:2: invalid JSON: nested too deeply")
    json_array = tmp_path / "s.json"
    json_array.write_text("[" * 2000 + "]" * 2000)
    with pytest.raises(SeedFileError, match="nested too deeply"):
        seeds_of(json_array)


@pytest.mark.parametrize(
    ("ids", "line", "message"),
    [
        (["a", "a.1"], 2, "id 'a.1' collides with the evolution ids of seed 'a'"),
        (
            ["a.1", "a"],
            2,
            "id 'a' collides with the evolution ids of seed 'a': an earlier seed has the id 'a.1'",
        ),
        (["x.2.3", "x"], 2, "an earlier seed has the id 'x.2.3'"),
        (["x", "y", "x.2.3"], 3, "collides with the evolution ids of seed 'x'"),
        (["a", "a"], 2, "duplicate id 'a'"),
    ],
)
def test_ids_that_would_collide_are_refused_in_either_order(
    tmp_path: Path, ids: list[str], line: int, message: str
) -> None:
    path = write_seeds(tmp_path / "s.jsonl", [{"id": i, "instruction": "x"} for i in ids])
    with pytest.raises(SeedFileError) as error:
        seeds_of(path)
    assert f"s.jsonl:{line}: " in str(error.value) and message in str(error.value)
    assert len(seeds_of(path, skip_invalid=True)) == len(ids) - 1  # --skip-invalid skips it


def test_limit_evolves_the_first_seeds_and_a_later_run_extends(
    evol, server, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": f"Task {i}"} for i in range(5)])
    out = tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "1", "--limit", "2")).exit_code == 0
    assert [r["id"] for r in read_jsonl(out / "gen_0.jsonl")] == ["s1", "s2"]
    calls = len(server.requests)
    assert calls == 2 * 4
    smaller = evol(*run_args(server, seeds, out, "--generations", "1", "--limit", "1"))
    assert smaller.exit_code == 2 and "--limit" in smaller.stderr
    assert evol(*run_args(server, seeds, out, "--generations", "1", "--limit", "3")).exit_code == 0
    assert len(server.requests) - calls == 4  # the third seed only
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    assert len(server.requests) - calls == 3 * 4
    assert len(read_jsonl(out / "dataset.jsonl")) == 10
    report = describe_seeds(seeds, SeedOptions(limit=2))
    assert report.seeds == 2


def test_output_field_alone_overrides_the_detected_shape(evol, tmp_path: Path) -> None:
    """README: --instruction-field, --input-field and --output-field 'override the detection'.
    --output-field without --instruction-field was ignored: a Question,Answer file's answers
    went to metadata and every seed was answered again, at a price."""
    seeds = tmp_path / "qa.csv"
    seeds.write_text("Question,Answer,Context\nWhat is X?,X is x.,about X\n", encoding="utf-8")
    result = evol("validate", seeds, "--output-field", "Answer", "--input-field", "Context")
    assert result.exit_code == 0, result.stderr
    assert "with input: 1, with output: 1" in result.stdout
    assert "metadata fields" not in result.stdout
