"""`evol show`: one lineage as a tree, with what each rewrite added and what was eliminated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_args, write_seeds

from evol.show import render_diff, word_diff


@pytest.mark.parametrize(
    ("parent", "child", "shown"),
    [
        ("Explain tides", "Explain tides in two steps", "Explain tides [+in two steps+]"),
        ("Fix the bug", "Find and fix the bug", "[-Fix-] [+Find and fix+] the bug"),
        ("List primes below 20", "List primes below 50", "List primes below [-20-] [+50+]"),
        ("Same words", "Same words", "Same words"),
    ],
)
def test_word_diff(parent: str, child: str, shown: str) -> None:
    assert render_diff(word_diff(parent, child)) == shown


@pytest.fixture
def run_dir(evol, server, tmp_path: Path) -> Path:
    rows = [
        {"id": "tide", "instruction": "[leak-once] Explain tides", "topic": "sea"},
        {"id": "owl", "instruction": "[sorry] Describe an owl"},
    ]
    out = tmp_path / "run"
    assert (
        evol(
            *run_args(server, write_seeds(tmp_path / "s.jsonl", rows), out, "--generations", "3")
        ).exit_code
        == 0
    )
    return out


def test_show_prints_the_lineage_as_a_tree(evol, run_dir: Path) -> None:
    result = evol("show", run_dir, "tide.2.3", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "tide  gen 0  seed"
    assert "[leak-once] Explain tides" in lines[1]
    # Round 1 leaked: eliminated under the seed, whose evolution round 2 then kept.
    assert any("✗ tide.1  round 1" in line and "eliminated: prompt_leak" in line for line in lines)
    assert any(line.startswith("└─ tide.2  gen 1  round 2") for line in lines)
    assert any("tide.2.3  gen 2  round 3" in line for line in lines)
    assert any("[+Also consider case" in line for line in lines)  # what the rewrite added


def test_show_json_and_a_seed_whose_answer_failed(evol, run_dir: Path) -> None:
    tree = json.loads(evol("show", run_dir, "owl", "--json").stdout)["tree"]
    assert (tree["id"], tree["kept"]) == ("owl", False)  # its answer said sorry
    assert [a["reason"] for a in tree["attempts"]] == ["sorry", "sorry", "sorry"]
    assert tree["children"] == []
    text = evol("show", run_dir, "owl").stdout
    assert "owl  gen 0  seed (its answer was eliminated)" in text


def test_an_unknown_record_is_one_line(evol, run_dir: Path) -> None:
    result = evol("show", run_dir, "nope")
    assert result.exit_code == 2
    assert result.stderr.strip() == f"evol: error: {run_dir} has no record 'nope'"
