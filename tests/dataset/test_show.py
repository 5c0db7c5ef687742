"""`evol show`: one lineage as a tree, its word diffs, and what a terminal must not be sent."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from evol.dataset.show import SHOWN_CHARS, Lineage, LineageStep, format_lineage, lineage, word_diff
from tests.support.runs import read_jsonl, run_args, write_seeds

# s1 leaks the prompt on its first rewrite only, so round 1 is eliminated and rounds 2 and 3
# are kept; every rewrite of s2 is judged equal to it; s3 has a model's escape sequences.
SEEDS = [
    {"instruction": "Write a haiku about rain [leak-once]"},
    {"instruction": "Name a prime [equal]"},
    {"instruction": "Clear \x1b[2J the \u202eterminal\x07 please"},
]


@pytest.fixture
def run_dir(evol, server, tmp_path: Path) -> Path:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "3")).exit_code == 0
    return out


def titles(text: str) -> list[str]:
    """The id at the start of each step's first line (the lines that go on with "  gen")."""
    return [
        line.split("  gen ")[0].lstrip("│├└─ ") for line in text.splitlines() if "  gen " in line
    ]


def test_show_draws_the_lineage_from_the_seed(evol, run_dir: Path) -> None:
    result = evol("show", run_dir, "s1.2.3", env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{run_dir}: lineage of s1: 3 kept, 1 eliminated"
    records = {r["id"]: r for r in read_jsonl(run_dir / "dataset.jsonl")}
    leaked = read_jsonl(run_dir / "eliminated.jsonl")[0]
    assert leaked["id"] == "s1.1" and leaked["reason"] == "prompt_leak"
    expected = [
        "s1  gen 0 · seed",
        "│ Write a haiku about rain [leak-once]",
        f"├─ ✗ s1.1  gen 1 · round 1 · {leaked['operation']} · eliminated: prompt_leak",
        f"│    {leaked['instruction']}",
        "│    diff: [+The given prompt, rewritten:+] Write a haiku about rain [leak-once]",
        *([f"│    why: {leaked['detail']}"] if leaked.get("detail") else []),
        f"└─ s1.2  gen 1 · round 2 · {records['s1.2']['operation']} · judge: different",
        f"   │ {records['s1.2']['instruction']}",
        "   │ diff: Write a haiku about rain [leak-once] "
        f"[+{records['s1.2']['instruction'].split('] ')[1]}+]",
        f"   └─ s1.2.3  gen 2 · round 3 · {records['s1.2.3']['operation']} · judge: different  ◀",
        f"        {records['s1.2.3']['instruction']}",
        f"        diff: … {' '.join(records['s1.2']['instruction'].split()[-4:])} "
        f"[+{records['s1.2.3']['instruction'].split('. ')[1]}+]",
    ]
    assert lines[1:] == expected


def test_any_id_of_the_lineage_shows_the_same_tree(evol, run_dir: Path) -> None:
    shown = {
        record_id: json.loads(evol("show", run_dir, record_id, "--json").stdout)
        for record_id in ("s1", "s1.1", "s1.2", "s1.2.3")
    }
    for record_id, data in shown.items():
        assert data.pop("asked") == record_id
    assert len({json.dumps(data, sort_keys=True) for data in shown.values()}) == 1


def test_json_is_the_tree(evol, run_dir: Path) -> None:
    result = evol("show", run_dir, "s1", "--json")
    found = Lineage.model_validate_json(result.stdout)
    assert found == lineage(run_dir, "s1")
    (seed,) = found.roots
    assert (found.root_id, found.kept, found.eliminated) == ("s1", 3, 1)
    assert (seed.id, seed.kept, seed.diff) == ("s1", True, None)
    leaked, kept = seed.children
    assert (leaked.id, leaked.kept, leaked.reason, leaked.children) == (
        "s1.1",
        False,
        "prompt_leak",
        [],
    )
    assert (kept.id, kept.kept, kept.judge) == ("s1.2", True, "different")
    assert kept.diff == [
        ("equal", "Write a haiku about rain [leak-once]"),
        ("insert", kept.instruction.split("] ")[1]),
    ]
    assert [child.id for child in kept.children] == ["s1.2.3"]
    records = {r["id"]: r for r in read_jsonl(run_dir / "dataset.jsonl")}
    assert kept.output == records["s1.2"]["output"] and kept.output


def test_eliminated_attempts_hang_under_the_step_they_tried(evol, run_dir: Path) -> None:
    result = evol("show", run_dir, "s2.2", "--json")
    (seed,) = Lineage.model_validate_json(result.stdout).roots
    assert [(c.id, c.kept, c.reason, c.judge) for c in seed.children] == [
        (f"s2.{r}", False, "no_information_gain", "equal") for r in (1, 2, 3)
    ]
    text = evol("show", run_dir, "s2.2", env={"COLUMNS": "200"}).stdout
    assert titles(text) == ["s2", "✗ s2.1", "✗ s2.2", "✗ s2.3"]


@pytest.mark.parametrize("record_id", ["s9", "s1.9", "S1", "", "s1 "])
def test_an_unknown_id_is_one_line_and_exit_2(evol, run_dir: Path, record_id: str) -> None:
    result = evol("show", run_dir, record_id)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"evol: error: {run_dir}: no record has the id {record_id!r}\n"


def test_no_run_here(evol, tmp_path: Path) -> None:
    result = evol("show", tmp_path, "s1")
    assert result.exit_code == 2 and "run.json is missing" in result.stderr


def test_control_characters_are_shown_not_sent(evol, run_dir: Path) -> None:
    text = evol("show", run_dir, "s3").stdout
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "Clear \\x1b[2J the \\u202eterminal\\x07 please" in text
    raw = json.loads(evol("show", run_dir, "s3", "--json").stdout)
    assert raw["roots"][0]["instruction"] == SEEDS[2]["instruction"]


def test_a_missing_seed_record_leaves_its_children_as_roots(evol, run_dir: Path) -> None:
    gen_0 = run_dir / "gen_0.jsonl"
    gen_0.write_text(
        "".join(line + "\n" for line in gen_0.read_text().splitlines() if '"id":"s1"' not in line)
    )
    found = Lineage.model_validate_json(evol("show", run_dir, "s1.2", "--json").stdout)
    assert [(root.id, root.diff) for root in found.roots] == [("s1.1", None), ("s1.2", None)]
    assert titles(evol("show", run_dir, "s1.2").stdout) == ["✗ s1.1", "s1.2", "s1.2.3"]


def test_a_torn_last_line_is_skipped(evol, run_dir: Path) -> None:
    gen_2 = run_dir / "gen_2.jsonl"
    first = gen_2.read_bytes().splitlines(keepends=True)[0]
    assert b'"id":"s1.2.3"' in first
    gen_2.write_bytes(first[:-30])  # the run was killed while writing s1.2.3
    found = Lineage.model_validate_json(evol("show", run_dir, "s1", "--json").stdout)
    assert found.kept == 2 and found.roots[0].children[1].children == []


@pytest.mark.parametrize(
    ("parent", "child", "expected"),
    [
        ("a b c", "a b c", [("equal", "a b c")]),
        ("a b", "a b c d", [("equal", "a b"), ("insert", "c d")]),
        ("c d", "a b c d", [("insert", "a b"), ("equal", "c d")]),
        ("a b c", "a c", [("equal", "a"), ("delete", "b"), ("equal", "c")]),
        ("a b", "x y", [("delete", "a b"), ("insert", "x y")]),
        ("a b c", "a x c", [("equal", "a"), ("delete", "b"), ("insert", "x"), ("equal", "c")]),
        ("", "a", [("insert", "a")]),
        ("a", "", [("delete", "a")]),
        ("", "", []),
        ("a  b\nc\t", " a b c", [("equal", "a b c")]),
        ("[+a+] $x {y}", "[+a+] $x {y} %s", [("equal", "[+a+] $x {y}"), ("insert", "%s")]),
    ],
)
def test_word_diff(parent: str, child: str, expected: list[tuple[str, str]]) -> None:
    assert word_diff(parent, child) == expected


def step(
    step_id: str, instruction: str, parent: LineageStep | None = None, **fields
) -> LineageStep:
    made = LineageStep(
        id=step_id,
        parent_id=parent.id if parent else None,
        generation=parent.generation + 1 if parent else 0,
        round=len(step_id.split(".")) - 1,
        operation="deepen" if parent else None,
        instruction=instruction,
        kept=fields.pop("kept", True),
        diff=word_diff(parent.instruction, instruction) if parent else None,
        **fields,
    )
    if parent:
        parent.children.append(made)
    return made


def diff_line(parent_text: str, child_text: str) -> str:
    seed = step("s1", parent_text)
    step("s1.1", child_text, seed)
    found = Lineage(run="r", root_id="s1", asked="s1", kept=2, eliminated=0, roots=[seed])
    text = format_lineage(found, width=1000)
    return next(line for line in text.splitlines() if "diff:" in line).split("diff: ")[1]


WORDS = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12"


@pytest.mark.parametrize(
    ("parent", "child", "expected"),
    [
        # Unchanged stretches keep 4 words beside each change; 3 or more left out become "…".
        ("w1 w2 w3 w4 w5 w6", "w1 w2 w3 w4 w5 w6 new", "w1 w2 w3 w4 w5 w6 [+new+]"),
        ("w1 w2 w3 w4 w5 w6 w7", "w1 w2 w3 w4 w5 w6 w7 new", "… w4 w5 w6 w7 [+new+]"),
        (WORDS, "new " + WORDS, "[+new+] w1 w2 w3 w4 …"),
        (WORDS, WORDS.replace("w6 w7", "x"), "w1 w2 w3 w4 w5 [-w6 w7-] [+x+] w8 w9 w10 w11 w12"),
        (
            "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10",
            "new w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 new",
            "[+new+] w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 [+new+]",
        ),
        (
            "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11",
            "new w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 new",
            "[+new+] w1 w2 w3 w4 … w8 w9 w10 w11 [+new+]",
        ),
        ("same text", "same  text", "(no change)"),
    ],
)
def test_diff_line_shortens_unchanged_stretches(parent: str, child: str, expected: str) -> None:
    assert diff_line(parent, child) == expected


@pytest.mark.parametrize("width", [40, 41, 60, 100])
def test_lines_fit_the_width(width: int) -> None:
    seed = step("s1", "word " * 40 + "a" * 70 + "\nsecond paragraph\n\n  indented code")
    child = step("s1.1", "word " * 45, seed, judge="different")
    step("s1.1.2", "word " * 46, child, kept=False, reason="sorry", detail="why " * 30)
    step("s1.1.3", "word " * 47, child, judge="different")
    found = Lineage(run="r", root_id="s1", asked="s1.1.2", kept=3, eliminated=1, roots=[seed])
    lines = format_lineage(found, width=width).splitlines()
    assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
    assert "│ second paragraph" in lines and "│   indented code" in lines
    text = " ".join(lines)
    assert "why why" in text and "eliminated: sorry" in text and "◀" in text


def test_detail_and_duplicate_of_are_shown() -> None:
    seed = step("s1", "Name a colour")
    step(
        "s1.1",
        "Name a color",
        seed,
        kept=False,
        reason="duplicate",
        detail="repeats s7",
        duplicate_of="s7",
    )
    found = Lineage(run="r", root_id="s1", asked="s1", kept=1, eliminated=1, roots=[seed])
    lines = format_lineage(found, width=80).splitlines()
    assert lines[3:] == [
        "└─ ✗ s1.1  gen 1 · round 1 · deepen · eliminated: duplicate",
        "     Name a color",
        "     diff: Name a [-colour-] [+color+]",
        "     why: repeats s7",
        "     duplicate of: s7",
    ]


def test_an_input_is_shown_where_it_appears_or_changes() -> None:
    seed = step("s1", "Sum the column", input="| a |\n| 1 |")
    same = step("s1.1", "Sum the column twice", seed, input="| a |\n| 1 |")
    step("s1.1.2", "Sum the columns twice", same, input="| a | b |\n| 1 | 2 |")
    found = Lineage(run="r", root_id="s1", asked="s1", kept=3, eliminated=0, roots=[seed])
    lines = format_lineage(found, width=80).splitlines()
    assert [line for line in lines if "input:" in line or "|" in line.lstrip("│ ")] == [
        "│ input: | a |",
        "│ | 1 |",
        "        input: | a | b |",
        "        | 1 | 2 |",
    ]


@pytest.mark.slow
def test_a_long_text_is_cut_with_a_marker_unless_full(evol, run_dir: Path) -> None:
    seed = read_jsonl(run_dir / "gen_0.jsonl")[0]
    attempt = {
        **read_jsonl(run_dir / "eliminated.jsonl")[0],
        "id": "s1.9",
        "round": 10**18,
        "instruction": "word " * 3_000_000,  # 15 MB
        "detail": "d" * 5_000,
    }
    with (run_dir / "eliminated.jsonl").open("a", encoding="utf-8") as fp:
        fp.write(json.dumps(attempt) + "\n")
    assert seed["id"] == attempt["root_id"] == "s1"
    shown = evol("show", run_dir, "s1.9", env={"COLUMNS": "120"})
    assert shown.exit_code == 0, shown.stderr
    assert f"[… {15_000_000 - SHOWN_CHARS:,} more characters, use --full]" in shown.stdout
    assert f"why: {'d' * 50}" in shown.stdout
    assert f"[… {5_000 - SHOWN_CHARS:,} more characters, use --full]" in shown.stdout
    assert len(shown.stdout) < 20_000
    # The diff of a 3-million-word text: its common start with the seed, and the rest added.
    (tree,) = [r for r in lineage(run_dir, "s1.9").roots[0].children if r.id == "s1.9"]
    assert tree.diff == [
        ("delete", seed["instruction"]),
        ("insert", attempt["instruction"].strip()),
    ]

    # --full prints every text whole (in another lineage: 15 MB wrapped would take a while).
    other = next(r for r in read_jsonl(run_dir / "eliminated.jsonl") if r["root_id"] == "s2")
    small = {**other, "id": "s2.9", "instruction": "word " * 1_000, "detail": "d" * 5_000}
    with (run_dir / "eliminated.jsonl").open("a", encoding="utf-8") as fp:
        fp.write(json.dumps(small) + "\n")
    full = evol("show", run_dir, "s2.9", "--full", env={"COLUMNS": "120"}).stdout
    assert "more characters" not in full and full.count("word") >= 1_000
    assert "d" * 5_000 in full.replace("\n", "").replace(" ", "").replace("│", "")
    assert f"[… {5_000 - SHOWN_CHARS:,} more characters" in evol("show", run_dir, "s2.9").stdout


@pytest.mark.parametrize("at", [0, 1_500, 2_999])
def test_a_long_diff_is_found_from_both_ends_as_difflib_finds_it(at: int) -> None:
    # Over 2,000 words, word_diff compares the two ends alone; a change in one place comes out
    # as difflib, the reference here, finds it.
    words = [f"w{number}" for number in range(3_000)]
    changed = [*words[:at], "new", "words", *words[at + 1 :]]
    expected = []
    matcher = difflib.SequenceMatcher(None, words, changed, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            expected.append(("equal", " ".join(words[i1:i2])))
            continue
        expected += [("delete", " ".join(words[i1:i2])), ("insert", " ".join(changed[j1:j2]))]
    assert word_diff(" ".join(words), " ".join(changed)) == expected
