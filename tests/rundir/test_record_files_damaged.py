"""A damaged record in a run directory is one line naming its file and line, from every command.

Every command reads records through `store.read_records`, which checks each line against the
record model: a wrong type, a missing field or a line that is no object never reaches the code
that counts words or sums tokens (where it was a TypeError with a traceback), and a resume never
keeps it in dataset.jsonl.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import registered_backend
from tests.support.fake_server import FakeServer
from tests.support.runs import Evol, read_jsonl, run_args, write_seeds
from tests.support.selection import SCRIPT, ScriptedBackend

pytestmark = pytest.mark.usefixtures("scripted_backend")

TEXTS = [
    "Explain how rivers carve canyons over time",
    "Write a limerick about a lazy cat",
    "List three causes of the French Revolution",
    "Describe how a bicycle gear works",
    "[equal] Translate good morning into Spanish",
    "Suggest a name for a bakery by the sea",
    "Why do leaves change colour in autumn",
    "[sorry] Summarize the plot of Hamlet briefly",
]
SHARDS = 2


def shard_options(server: FakeServer, seeds: Path, out: Path, index: int) -> list[object]:
    return run_args(server, seeds, out, "--generations", "2", "--shard", f"{index}/{SHARDS}")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two shards of a two-generation run, the first scored; the server stays up for resumes."""
    base = tmp_path_factory.mktemp("damaged")
    seeds = write_seeds(base / "seeds.jsonl", [{"instruction": text} for text in TEXTS])
    evol = Evol()
    with FakeServer() as server:
        shards = [base / f"shard-{index}" for index in range(SHARDS)]
        for index, shard in enumerate(shards):
            result = evol(*shard_options(server, seeds, shard, index))
            assert result.exit_code == 0, result.output
        records = [r for path in sorted(shards[0].glob("gen_*.jsonl")) for r in read_jsonl(path)]
        assert len(read_jsonl(shards[0] / "gen_1.jsonl")) >= 2
        SCRIPT.clear()
        SCRIPT.update({r["instruction"]: (5, 5) for r in records})
        with registered_backend("scripted", ScriptedBackend):  # before the tests register it
            result = evol("score", shards[0], "--backend", "scripted", "--no-complexity")
        assert result.exit_code == 0, result.output
        yield {"server": server, "seeds": seeds, "shards": shards, "seed_id": records[0]["id"]}


def replace_line(index: int, make: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    """Put `make(record)` in place of line `index` (0-based) of a record file."""

    def damage(path: Path) -> None:
        lines = path.read_bytes().splitlines(keepends=True)
        made = make(json.loads(lines[index]))
        lines[index] = (made if isinstance(made, bytes) else json.dumps(made).encode()) + b"\n"
        path.write_bytes(b"".join(lines))

    return damage


DAMAGES = {
    "wrong types": lambda r: {"id": 5, "generation": "x", "round": None, "root_id": [], "instruction": 7},
    "an array": lambda r: [1, 2],
    "a string": lambda r: "a record?",
    "not json": lambda r: b"{garbage",
    "usage a list": lambda r: r | {"usage": [1]},
    "usage of strings": lambda r: r | {"usage": {"evolve": {"prompt_tokens": "many"}}},
    "instruction null": lambda r: r | {"instruction": None},
    "output a number": lambda r: r | {"output": 42},
    "generation a float": lambda r: r | {"generation": 1.0},
    "generation a string": lambda r: r | {"generation": "1"},
    "round missing": lambda r: {k: v for k, v in r.items() if k != "round"},
    "judge unknown": lambda r: r | {"judge": "perhaps"},
}  # fmt: skip

COMMANDS: dict[str, Callable[[dict[str, Any], Path, Path], list[object]]] = {
    "run": lambda m, run, tmp: shard_options(m["server"], m["seeds"], run, 0),
    "stats": lambda m, run, tmp: ["stats", run],
    "stats --json": lambda m, run, tmp: ["stats", run, "--json"],
    "show": lambda m, run, tmp: ["show", run, m["seed_id"]],
    "report": lambda m, run, tmp: ["report", run, "--out", tmp / "r.html"],
    "score": lambda m, run, tmp: ["score", run, "--backend", "scripted", "--no-complexity"],
    "select": lambda m, run, tmp: ["select", run, "--budget", "2", "--out", tmp / "s.jsonl"],
    "export": lambda m, run, tmp: ["export", run, "--out", tmp / "x.jsonl"],
    "merge": lambda m, run, tmp: ["merge", run, m["shards"][1], "--out", tmp / "merged"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_record_is_one_line_from_every_command(
    evol, made: dict[str, Any], tmp_path: Path, damage: str, command: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(made["shards"][0], run)
    gen_1 = run / "gen_1.jsonl"
    replace_line(0, DAMAGES[damage])(gen_1)  # the first of several: the middle of the run
    result = evol(*COMMANDS[command](made, run, tmp_path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"evol: error: {gen_1}:1: "), result.stderr
    assert "record" in result.stderr
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize("command", ["run", "stats", "show", "report"])
@pytest.mark.parametrize(
    "damage", ["reason unknown", "reason missing", "instruction null", "an array"]
)
def test_a_damaged_eliminated_record_is_one_line(
    evol, made: dict[str, Any], tmp_path: Path, damage: str, command: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(made["shards"][0], run)
    eliminated = run / "eliminated.jsonl"
    make = {
        "reason unknown": lambda r: r | {"reason": "bored"},
        "reason missing": lambda r: {k: v for k, v in r.items() if k != "reason"},
    }.get(damage) or DAMAGES[damage]
    replace_line(0, make)(eliminated)
    result = evol(*COMMANDS[command](made, run, tmp_path))
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"evol: error: {eliminated}:1: "), result.stderr


@pytest.mark.parametrize("command", ["run", "stats", "show", "report", "score", "export"])
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_record_file_that_is_not_a_regular_file_is_one_line(
    evol, made: dict[str, Any], tmp_path: Path, kind: str, command: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(made["shards"][0], run)
    gen_1 = run / "gen_1.jsonl"
    gen_1.unlink()
    os.mkfifo(gen_1) if kind == "fifo" else gen_1.mkdir()
    result = evol(*COMMANDS[command](made, run, tmp_path))
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"evol: error: {gen_1}: not a regular file: the run directory is damaged: restore it, "
        "or start again with --overwrite\n"
    )
