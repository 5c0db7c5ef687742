"""Runs as varied as real ones (lineages of several generations with eliminated rounds
between, so `id`, `parent_id` and `root_id` differ and `round` differs from `generation`), and
the recounts that check a command's output on them from the record and score files.

`scored` (module-scoped) is a run made with `evol run` against the fake server, failed seed
answers included, scored for difficulty, complexity and quality and checked against a small
bench; `varied_run` is VARIED and ELIMINATED written by hand. A test module that uses either
fixture imports it and names it in __all__."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evol.method.textstats import tokens
from tests.support.fake_server import FakeServer, Responder
from tests.support.runs import Evol, read_jsonl, record, run_args, write_run, write_seeds
from tests.support.scoring import ScoringResponder


class VariedAnswers(Responder):
    """The default script, with answers whose length follows the instruction's."""

    def answer(self, instruction: str) -> str | tuple[str, str]:
        reply = super().answer(instruction)
        if isinstance(reply, str) and reply.startswith("Here is a worked answer"):
            return reply + " Note this." * (len(instruction.split()) % 5)
        return reply


def evolve(seeds: Path, out: Path, *extra: object) -> None:
    """`evol run` with three generations and --dedup, on a server of its own ([leak-once]
    leaks once per server)."""
    with FakeServer(responder=VariedAnswers()) as server:
        result = Evol()(*run_args(server, seeds, out, "--generations", "3", "--dedup", *extra))
    assert result.exit_code == 0, result.output


# A and B evolve cleanly, C's first rewrite leaks (its lineage is a round behind), D's
# answers fail (a failed seed), E's rewrites always leak, F is never given a score.
RUN_SEEDS = [
    {"instruction": "Explain how rivers carve canyons over many thousands of years"},
    {"instruction": "Describe how the gears of a bicycle help on steep hills"},
    {"instruction": "[leak-once] Suggest a name for a small bakery by the sea"},
    {"instruction": "[sorry] Summarize the plot of Hamlet for a ten year old"},
    {"instruction": "[leak] Describe what a good guide dog must learn"},
    {"instruction": "[never] Name three long rivers of Europe"},
]


NGRAM = 5


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The run, scored for difficulty, complexity and quality, and checked against a bench
    whose items share words with C's evolutions only (in an instruction) and with A's seed
    (in an input)."""
    base = tmp_path_factory.mktemp("scored")
    run = base / "run"
    evolve(write_seeds(base / "seeds.jsonl", RUN_SEEDS), run)
    evol = Evol()
    with FakeServer(responder=ScoringResponder()) as server:
        result = evol("score", run, "--base-url", server.base_url, "--answers", "--no-metrics")
    assert result.exit_code == 0, result.output
    c_child = next(r for r in read_jsonl(run / "gen_1.jsonl") if r["root_id"] == "s3")
    bench = base / "bench.jsonl"
    items = [
        {"instruction": "Too short to match"},
        {"instruction": "Quiz: " + " ".join(c_child["instruction"].split()[-7:]) + " Go."},
        {"instruction": "Read the passage.", "input": "Passage: " + RUN_SEEDS[0]["instruction"]},
    ]
    bench.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    result = evol(
        "score", run, "--no-difficulty", "--no-complexity", "--no-metrics", "--against", bench,
        "--ngram", NGRAM,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return {"run": run, "bench": bench, "items": items}


def kept_of(run: Path) -> list[dict[str, Any]]:
    return [r for g in range(4) for r in read_jsonl(run / f"gen_{g}.jsonl")]


def recorded_scores(run: Path) -> dict[str, dict[str, float | None]]:
    """scorer -> record id -> score, read straight from scores.jsonl (the last line wins)."""
    book: dict[str, dict[str, float | None]] = {"difficulty": {}, "complexity": {}, "quality": {}}
    for line in read_jsonl(run / "scores.jsonl"):
        if line["scorer"] == "complexity":
            book["complexity"].update(line["scores"] or {})
        else:
            book[line["scorer"]][line["id"]] = line["score"]
    return book


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def contaminated_ids(run: Path, items: list[dict[str, str]], n: int) -> set[str]:
    bench = {
        g for i in items for f in ("instruction", "input") for g in ngrams(tokens(i.get(f, "")), n)
    }
    return {
        r["id"]
        for r in kept_of(run)
        if any(set(ngrams(tokens(r.get(f) or ""), n)) & bench for f in ("instruction", "input", "output"))
    }  # fmt: skip


# Word counts make the complexity ranks: within a chain they are not in generation order.
VARIED = [
    record("q7", "Sort a list of numbers"),  # 5 words
    record("b2", "Name the capital city of France please"),  # 7
    record("nx", "Describe a cat", output=None),  # a seed without an answer (--no-answer-seeds)
    record("zz", "A lone seed with nothing kept after it"),  # no complexity: nothing to rank
    # Generation 1: q7's round 1 and nx's rounds 1-2 were eliminated.
    record("q7.2", "Sort a list of numbers without any built-in sort at all", output="Use merge."),
    record("b2.1", "Name", output="Paris."),  # 1 word: b2.1 is simpler than its seed
    record("nx.3", "Describe a cat to someone who has never seen one", output="Fur, whiskers."),
    # Generation 2.
    record("q7.2.4", "Sort numbers in place", output="Heap sort."),  # 4 words
    record("nx.3.4", "Describe a cat briefly", output="A small feline."),
    # Generation 3.
    record("q7.2.4.6", "Sort numbers in place in linear time when they are small", output="Count."),
]


ELIMINATED = [
    record("q7.1", "Sort a list", reason="no_information_gain"),
    record("nx.1", "Describe", reason="no_information_gain"),
    record("nx.2", "Describe a dog", reason="prompt_leak"),
    record("q7.2.3", "Sort", reason="no_information_gain"),
    record("q7.2.4.5", "Sort numbers", reason="no_information_gain"),
]


@pytest.fixture
def varied_run(tmp_path: Path) -> Path:
    run = write_run(tmp_path / "run", [dict(r) for r in VARIED], ELIMINATED)
    assert any(r["round"] != r["generation"] for r in VARIED)
    return run
