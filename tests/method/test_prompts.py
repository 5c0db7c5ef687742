"""Prompt templates: shipped in the wheel, overridable, and safe for any seed text."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from evol.errors import PromptError, UsageError
from evol.method.operations import OPERATIONS, VERIFIABLE
from evol.method.prompts import (
    PROMPT_NAMES,
    PromptSet,
    default_prompt_dir,
    format_sources,
    template_text,
)

HOSTILE = [
    "Fill in {name} and {0} and {{double}}",
    "# Heading\n#Rewritten Prompt#: keep the hashes",
    "Costs $5 or ${amount} or $instruction or $input",
    "Ends the block early </instruction> <instruction> <first>",
    "Ünïcödé, 中文, العربية, emoji 🚀, zero-width\u200bspace",
    "x" * 200_000,
]


@pytest.mark.parametrize(
    "text", HOSTILE, ids=["braces", "hashes", "dollars", "markers", "unicode", "long"]
)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_seed_text_is_inserted_verbatim(operation: str, text: str) -> None:
    prompts = PromptSet.load()
    block = prompts["input"].text.replace("$input", text[::-1])
    values = {"instruction": text, "input": block}
    expected = re.sub(
        r"\$(instruction|input)", lambda m: values[m.group(1)], prompts[operation].text
    )
    assert prompts.evolve_prompt(operation, text, text[::-1]) == expected


@pytest.mark.parametrize("operation", OPERATIONS)
def test_an_empty_input_is_not_shown_at_all(operation: str) -> None:
    prompts = PromptSet.load()
    for empty in ("", "   \n "):
        rendered = prompts.evolve_prompt(operation, "Do X", empty)
        assert "<input>" not in rendered and "(none)" not in rendered
        assert prompts["input"].text.strip().splitlines()[0] not in rendered
    if operation != "breadth":  # a breadth rewrite is a new instruction: the input stays behind
        assert "<input>\nCats.\n</input>" in prompts.evolve_prompt(operation, "Do X", "Cats.")


def test_the_judge_asks_the_papers_symmetric_question() -> None:
    text = PromptSet.load()["judge"].text
    assert '"equal"' in text and '"different"' in text
    # It does not lean: no list of the ways in which the second could add something.
    assert "adds" not in text and "more specific" not in text


def test_a_literal_dollar_is_written_twice(tmp_path: Path) -> None:
    (tmp_path / "deepen.txt").write_text("Costs $$5. $instruction")
    assert PromptSet.load(tmp_path).evolve_prompt("deepen", "Do X", "") == "Costs $5. Do X"


def test_judge_shows_both_instructions() -> None:
    rendered = PromptSet.load().judge_prompt("first {a}", "second $b")
    assert (
        "<first>\nfirst {a}\n</first>" in rendered and "<second>\nsecond $b\n</second>" in rendered
    )


def test_every_shipped_template_is_our_own_and_loads() -> None:
    prompts = PromptSet.load()
    for name in PROMPT_NAMES:
        assert prompts[name].source.parent == default_prompt_dir()
        assert "#Rewritten Prompt#" not in prompts[name].text  # the paper's wording is not ours


def test_override_replaces_a_subset(tmp_path: Path) -> None:
    (tmp_path / "deepen.txt").write_text("Go deeper: $instruction ($input)")
    prompts = PromptSet.load(tmp_path)
    assert prompts["deepen"].source == tmp_path / "deepen.txt"
    assert prompts["breadth"].source == default_prompt_dir() / "breadth.txt"
    assert prompts.evolve_prompt("deepen", "X", "") == "Go deeper: X ()"
    assert prompts.digest() != PromptSet.load().digest()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("deepen.txt", "no slot here", "missing placeholder $instruction"),
        ("deepen.txt", "$instruction $answer", "unknown placeholder $answer"),
        ("judge.txt", "$first only", "missing placeholder $second"),
        ("deepen.txt", "$instruction costs $", "invalid placeholder"),
        ("deepn.txt", "$instruction", "unknown template name"),
    ],
)
def test_bad_overrides_are_rejected_on_load(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(PromptError, match=message.replace("$", r"\$")):
        PromptSet.load(tmp_path)


def test_prompts_cli_lists_and_shows(evol, tmp_path: Path) -> None:
    listed = evol("prompts", "list")
    assert listed.exit_code == 0
    assert all(name in listed.stdout for name in PROMPT_NAMES)
    shown = evol("prompts", "show", "judge")
    assert shown.stdout == (default_prompt_dir() / "judge.txt").read_text()
    (tmp_path / "judge.txt").write_text("Same? $first / $second")
    assert (
        evol("prompts", "show", "judge", "--prompts", tmp_path).stdout == "Same? $first / $second"
    )
    unknown = evol("prompts", "show", "nope")
    assert unknown.exit_code == 2 and "unknown template" in unknown.stderr


def test_wheel_ships_the_templates(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("evol-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"evol/prompts/{name}.txt" for name in PROMPT_NAMES} <= set(names)


def test_the_list_names_each_template_and_its_file_in_order(tmp_path: Path) -> None:
    (tmp_path / "judge.txt").write_text("Same? $first / $second")
    lines = format_sources(PromptSet.load(tmp_path)).splitlines()
    assert [line.split()[0] for line in lines] == list(PROMPT_NAMES)
    assert lines[PROMPT_NAMES.index("judge")] == f"{'judge':<20} {tmp_path / 'judge.txt'}"
    assert lines[0] == f"{'add_constraints':<20} {default_prompt_dir() / 'add_constraints.txt'}"


def test_an_unknown_template_is_refused_before_the_templates_are_read(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown template 'nope'; known: add_constraints, "):
        template_text("nope", tmp_path / "no such directory")
    with pytest.raises(PromptError, match="must be a directory"):
        template_text("judge", tmp_path / "no such directory")
    assert template_text("judge") == (default_prompt_dir() / "judge.txt").read_text()


# -- add_verifiable_constraint and judge_constraint (#26) --------------------------------------


def test_runs_without_the_operation_keep_their_prompt_digest_and_leak_rule(tmp_path: Path):
    shipped = PromptSet.load()
    assert shipped.digest(OPERATIONS) == "48d74de7d03ecce0"  # main's, before #26's templates
    (tmp_path / "add_verifiable_constraint.txt").write_text(
        "Add this: $constraint\n<instruction>\n$instruction\n</instruction>\n"
    )
    (tmp_path / "judge_constraint.txt").write_text("$first / $second / $requirements")
    other = PromptSet.load(tmp_path)
    assert other.digest(["deepen"]) == shipped.digest(["deepen"])
    assert other.digest([VERIFIABLE]) != shipped.digest([VERIFIABLE])
    assert other.evolve_prompt(VERIFIABLE, "Do X", "", "No commas.").startswith(
        "Add this: No commas.\n<instruction>\nDo X"
    )
    rewrite = "Describe tides. <requirement> Use no commas."
    assert shipped.leak_detector(OPERATIONS).find("Describe tides.", rewrite) is None
    assert shipped.leak_detector([VERIFIABLE]).find("Describe tides.", rewrite) == "<requirement>"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("add_verifiable_constraint.txt", "$instruction only", "missing placeholder $constraint"),
        ("add_verifiable_constraint.txt", "$constraint only", "missing placeholder $instruction"),
        ("judge_constraint.txt", "$first $second", "missing placeholder $requirements"),
        ("judge_constraint.txt", "$first $second $requirements $input", "unknown placeholder"),
    ],
)
def test_the_new_templates_placeholders_are_checked_on_load(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(PromptError, match=message.replace("$", r"\$")):
        PromptSet.load(tmp_path)


def test_seed_text_and_the_constraint_go_into_the_template_verbatim() -> None:
    prompts = PromptSet.load()
    hostile = "Costs $5 or ${amount} or $constraint {0} </instruction> <requirement>"
    rendered = prompts.evolve_prompt(VERIFIABLE, hostile, "in $input", "Say {x} $$ $instruction")
    assert f"<instruction>\n{hostile}\n</instruction>" in rendered
    assert "<input>\nin $input\n</input>" in rendered
    assert "<requirement>\nSay {x} $$ $instruction\n</requirement>" in rendered


def test_the_judge_is_shown_each_requirement_on_a_line() -> None:
    rendered = PromptSet.load().judge_constraint_prompt("A {x}", "B $y", ["No commas.", "Say $5."])
    assert "<first>\nA {x}\n</first>" in rendered and "<second>\nB $y\n</second>" in rendered
    assert "\n- No commas.\n- Say $5.\n" in rendered
