"""Properties that hold for any input, checked with Hypothesis.

Derandomized (the same examples on every machine and every run) and without a deadline: a
slow or loaded machine may take longer, never fail.
"""

from __future__ import annotations

import csv
import io
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from evol.jsonl import repair_torn_tail
from evol.method.operations import OPERATIONS, choose_operation, parse_weights
from evol.method.prompts import PromptSet
from evol.seeds import SeedOptions, iter_seeds

PROMPTS = PromptSet.load()
# Any text a file or a request can carry: no lone surrogates (no UTF-8 for them), no NUL.
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@given(operation=st.sampled_from(OPERATIONS), instruction=TEXT, input_text=TEXT)
def test_any_text_is_inserted_verbatim_and_nothing_else_is(
    operation: str, instruction: str, input_text: str
) -> None:
    rendered = PROMPTS.evolve_prompt(operation, instruction, input_text)
    template = PROMPTS[operation].text
    block = PROMPTS["input"].text.replace("$input", input_text) if input_text.strip() else ""
    if "$input" not in template:
        block = ""
    expected = template.replace("$instruction", "\0I\0").replace("$input", block)
    assert rendered == expected.replace("\0I\0", instruction)


@given(first=TEXT, second=TEXT)
def test_the_judge_prompt_carries_both_texts_verbatim(first: str, second: str) -> None:
    rendered = PROMPTS.judge_prompt(first, second)
    assert f"<first>\n{first}\n</first>" in rendered
    assert f"<second>\n{second}\n</second>" in rendered


RECORD = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=8), "instruction": TEXT, "round": st.integers(0, 9)}
)


@given(records=st.lists(RECORD, min_size=1, max_size=6), cut=st.integers(min_value=0))
def test_repair_keeps_exactly_the_whole_lines_before_any_cut(
    tmp_path_factory, records: list[dict], cut: int
) -> None:
    lines = [json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records]
    whole = b"".join(lines)
    cut %= len(whole) + 1
    path = tmp_path_factory.mktemp("repair") / "gen_1.jsonl"
    path.write_bytes(whole[:cut])
    repair_torn_tail(path)
    kept, size = [], 0
    for line in lines:  # the lines wholly inside the cut, newline included
        if size + len(line) > cut:
            break
        kept.append(line)
        size += len(line)
    assert path.read_bytes() == b"".join(kept)


@given(seed=st.integers(), item=st.text(max_size=20), round_=st.integers(1, 100))
def test_the_operation_is_a_pure_function_of_seed_item_and_round(
    seed: int, item: str, round_: int
) -> None:
    weights = parse_weights(None)
    chosen = choose_operation(weights, seed, item, round_)
    assert chosen in OPERATIONS
    assert chosen == choose_operation(dict(reversed(weights.items())), seed, item, round_)
    only = {"deepen": 1.0}
    assert choose_operation(only, seed, item, round_) == "deepen"


SEED_TEXT = TEXT.filter(lambda text: text.strip() != "")


@given(
    rows=st.lists(st.tuples(SEED_TEXT, TEXT), min_size=1, max_size=5),
    shape=st.sampled_from(["jsonl", "json", "csv"]),
)
def test_seeds_written_in_any_format_are_read_back_the_same(
    tmp_path_factory, rows: list[tuple[str, str]], shape: str
) -> None:
    folder = tmp_path_factory.mktemp("seeds")
    records = [
        {"id": f"r{i}", "instruction": text, "input": extra} for i, (text, extra) in enumerate(rows)
    ]
    path = folder / f"seeds.{shape}"
    if shape == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif shape == "json":
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    else:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=["id", "instruction", "input"])
        writer.writeheader()
        writer.writerows(records)
        path.write_bytes(buffer.getvalue().encode("utf-8"))
    read = [(s.id, s.instruction, s.input) for s in iter_seeds(path, SeedOptions())]
    expected = [(r["id"], r["instruction"], r["input"]) for r in records]
    assert read == expected


def test_the_profile_is_deterministic() -> None:
    assert settings().derandomize and settings().deadline is None
