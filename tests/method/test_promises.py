"""Promises users rely on that a plausible slip would break, each pinned by a test.

Every test here was written against a bug planted in a copy of the code (a threshold moved by
one, a phrase deleted, a dependency dropped) and watched failing before the bug was taken out.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import evol
from evol.jsonl import repair_torn_tail
from evol.method.dedup import DuplicateIndex
from evol.method.elimination import EliminationRules, Reason, check_rewrite
from evol.method.operations import choose_operation, parse_weights
from evol.method.prompts import PromptSet
from evol.method.textstats import rouge_l, tokens
from tests.support.fake_server import FakeServer, Responder
from tests.support.runs import read_jsonl, run_args, write_seeds

LEAKS = PromptSet.load().leak_detector()

# Written out rather than read from the code: deleting one there must fail here.
EXPECTED_LEAK_PHRASES = [
    "#given prompt#",
    "#rewritten prompt#",
    "#created prompt#",
    "given prompt",
    "rewritten prompt",
    "created prompt",
    "rewritten instruction",
    "original instruction",
    "new instruction:",
    "input: (none)",
    "rewritten version",
    "rewrite the instruction",
    "no heading",
    # from the shipped templates
    "<instruction>",
    "</instruction>",
    "<input>",
    "</input>",
    "<first>",
    "<second>",
    "the rewrite must",
    "the new instruction must",
]


@pytest.mark.parametrize("phrase", EXPECTED_LEAK_PHRASES)
def test_each_expected_leak_phrase_is_caught(phrase: str) -> None:
    child = f"Describe the tides. {phrase.upper()} Use two examples."
    failure = check_rewrite("Describe the tides.", child, EliminationRules(), LEAKS)
    assert failure and failure.reason == Reason.PROMPT_LEAK, phrase


def test_the_operation_depends_on_the_round() -> None:
    weights = parse_weights(None)
    for item in ("s1", "s2", "seed-a", "s1.3"):
        chosen = {choose_operation(weights, 0, item, round_) for round_ in range(1, 41)}
        assert len(chosen) > 1, item  # the same for 40 rounds: the round is ignored


def test_the_operation_choice_is_the_same_in_every_process() -> None:
    """A per-process hash() in the choice would change with PYTHONHASHSEED."""
    code = (
        "from evol.method.operations import choose_operation, parse_weights\n"
        "w = parse_weights(None)\n"
        "print(','.join(choose_operation(w, 5, f's{i}', r) for i in range(30) for r in (1, 2)))\n"
    )
    outputs = set()
    for hash_seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        outputs.add(result.stdout)
    local = ",".join(
        choose_operation(parse_weights(None), 5, f"s{i}", r) for i in range(30) for r in (1, 2)
    )
    assert outputs == {local + "\n"}


@pytest.mark.parametrize(
    "tail",
    [
        b'{"id": "s2", "root_id": "s2", "round": 0, "generation": 0}',  # whole, newline lost
        b'{"id": "s2", "root_id": "s2", "ro',  # half a record
        b"\n",  # an empty last line
    ],
)
def test_repair_cuts_a_last_record_that_lost_its_newline(tmp_path: Path, tail: bytes) -> None:
    first = b'{"id": "s1", "root_id": "s1", "round": 0, "generation": 0}\n'
    path = tmp_path / "gen_0.jsonl"
    path.write_bytes(first + tail)
    repair_torn_tail(path)
    # Anything short of a whole line with its newline goes: the step is redone, and the next
    # record appended cannot be glued to it.
    assert path.read_bytes() == first


def test_a_record_that_lost_its_newline_is_redone_and_the_dataset_stays_valid(
    evol, server, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": f"Task {i}"} for i in range(6)])
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert evol(*run_args(server, seeds, straight, "--generations", "2")).exit_code == 0
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    gen_1 = out / "gen_1.jsonl"
    gen_1.write_bytes(gen_1.read_bytes().rstrip(b"\n"))  # the last record loses only its newline
    assert evol(*run_args(server, seeds, out, "--generations", "2")).exit_code == 0
    rows = [json.loads(line) for line in (out / "dataset.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(
        r["id"] for r in read_jsonl(straight / "dataset.jsonl")
    )


# -- dedup -----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rouge-l", "minhash"])
def test_a_score_exactly_at_the_threshold_counts_as_a_duplicate(method: str) -> None:
    kept = "one two three four five six seven eight nine ten"
    new = "one two three four five six seven eight ALPHA BETA"
    score = rouge_l(tokens(new), tokens(kept))  # the very float the index computes
    for threshold, expected in ((score, "a.1"), (math.nextafter(score, 1.0), None)):
        pool = DuplicateIndex(method=method, threshold=threshold)
        pool.add("a.1", "a", kept)
        assert pool.find(new, "b") == expected, threshold


class CopyingResponder(Responder):
    """Lineage b's round-2 rewrite copies lineage a's round-1 kept evolution."""

    def __init__(self) -> None:
        super().__init__()
        self.a_round_1: str | None = None

    def evolve(self, instruction: str, prompt: str):
        rewrite = super().evolve(instruction, prompt)
        if instruction.startswith("Alpha") and self.a_round_1 is None:
            self.a_round_1 = rewrite
        if instruction.startswith("Bravo") and "Also consider" in instruction:
            assert self.a_round_1 is not None
            return self.a_round_1
        return rewrite


def test_kept_evolutions_join_the_duplicate_pool(evol, tmp_path: Path) -> None:
    rows = [
        {"id": "a", "instruction": "Alpha: explain tides"},
        {"id": "b", "instruction": "Bravo: explain rain"},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    with FakeServer(responder=CopyingResponder()) as server:
        result = evol(
            *run_args(
                server,
                seeds,
                tmp_path / "run",
                "--generations",
                "2",
                "--dedup",
                "--concurrency",
                "1",
            )
        )
    assert result.exit_code == 0, result.output
    eliminated = read_jsonl(tmp_path / "run" / "eliminated.jsonl")
    assert [(r["id"], r["reason"], r["duplicate_of"]) for r in eliminated] == [
        ("b.1.2", "duplicate", "a.1")
    ]


@pytest.mark.parametrize(
    ("seeds", "generations", "method"), [(250, 3, "rouge-l"), (251, 3, "minhash")]
)
def test_auto_dedup_compares_exactly_up_to_1000_instructions(
    evol, server, tmp_path: Path, seeds: int, generations: int, method: str
) -> None:
    rows = [{"instruction": f"Explain idea {i}"} for i in range(seeds)]
    seed_file = write_seeds(tmp_path / "seeds.jsonl", rows)
    # 250 seeds x (3 rounds + the seed) = 1,000 instructions at most: compared exactly.
    result = evol(
        *run_args(server, seed_file, tmp_path / "run", "--generations", generations, "--dedup",
                  "--no-judge", "--dry-run", "--json")
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["dedup_method"] == method


# -- resume refusals, configuration, library -------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--model", "other-model"), "--model"),
        (("--temperature", "0.9"), "--temperature/--max-tokens"),
        (("--judge-max-tokens", "9"), "--temperature/--max-tokens"),
        (("--no-sorry-check",), "elimination rules"),
        (("--dedup",), "elimination rules"),
        (("--system-prompt", "Be brief."), "--system-prompt"),
        (("--prompts", "PROMPTS"), "--prompts"),
    ],
)
def test_a_resume_with_other_settings_is_refused_and_names_them(
    evol, tmp_path: Path, change: tuple[str, ...], named: str
) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "deepen.txt").write_text("Go deeper: $instruction $input")
    change = tuple(str(prompts) if part == "PROMPTS" else part for part in change)
    seeds, out = (
        write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a bird"}]),
        tmp_path / "run",
    )
    with FakeServer(models=("fake-model", "other-model")) as server:
        first = evol(*run_args(server, seeds, out, "--generations", "1", "--model", "fake-model"))
        assert first.exit_code == 0, first.output
        model = () if change[0] == "--model" else ("--model", "fake-model")
        again = evol(*run_args(server, seeds, out, "--generations", "1", *model, *change))
    assert again.exit_code == 2
    assert named in again.stderr and "holds a run made with other options" in again.stderr


def test_the_command_line_beats_the_environment_which_beats_the_config_file(
    evol, server, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a bird"}])
    config = tmp_path / "evol.toml"
    config.write_text('generations = 3\nseed = 11\noperations = "deepen"\n')
    env = {"EVOL_GENERATIONS": "2", "EVOL_SEED": "12"}
    result = evol(
        *run_args(server, seeds, tmp_path / "run", "--config", config, "--seed", "13"), env=env
    )
    assert result.exit_code == 0, result.output
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert (settings["generations"], settings["seed"], settings["operations"]) == (
        2,  # the environment over the file
        13,  # the command line over both
        {"deepen": 1.0},  # the file, where nothing else says otherwise
    )


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


def test_the_async_library_call_runs_inside_an_existing_event_loop(server, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a bird"}])
    config = evol.RunConfig(
        seeds=seeds, out=tmp_path / "run", generations=1, base_urls=[server.base_url]
    )

    async def host_application() -> evol.RunSummary:
        return await evol.arun(config)

    summary = asyncio.run(host_application())
    assert summary.status == "complete" and summary.kept_per_generation == {"0": 1, "1": 1}
