"""What `evol score` promises, checked on runs as varied as real ones.

Issue #22: bugs a refactor plants (a score inflated by alternatives past the scale, a score
given to the wrong record, a stale score counted, a lineage on both sides of a split, a
generation filter that reads `round`) passed the suites. These tests hold the promises at the
level a user meets them: a whole `evol score` against an in-process model that returns
log-probabilities, read back through `evol stats`.

The run (tests.support.varied_runs.VARIED) has lineages of several generations with eliminated
rounds between, so `id`, `parent_id` and `root_id` differ and `round` differs from
`generation`; the model's score tokens carry alternatives past the scale (11 on a scale to 10,
5 on a chain of 4) and below it.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from evol.errors import BackendError
from evol.llm import BackendSettings, Completion, LLMRequest, register_backend
from tests.support.runs import read_jsonl, record, write_run
from tests.support.varied_runs import VARIED, varied_run

__all__ = ["varied_run"]  # a fixture: a run as varied as real ones, written by hand


def task_of(r: dict[str, Any]) -> str:
    return f"{r['instruction']}\n\n{r['input']}" if r["input"].strip() else r["instruction"]


def chains() -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in VARIED:
        found[r["root_id"]].append(r)
    return {root: chain for root, chain in found.items() if len(chain) > 1}


# -- an in-process judge that returns log-probabilities -------------------------------------------


def between(text: str, start: str, end: str) -> str:
    return text.partition(start)[2].partition(end)[0]


def chosen_number(text: str, model: str) -> int:
    """The number the judge writes for a task or an answer: 2..8, one more for judge-b."""
    return 2 + len(text.split()) % 7 + (model == "judge-b")


def single_alternatives(chosen: int) -> dict[str, float]:
    """The score token's alternatives: the number with and without a space, its neighbour,
    1 and 10 (both on the scale), and 11, 0 and a word, which are no score."""
    p = {
        str(chosen): 0.4,
        f" {chosen}": 0.1,
        str(chosen + 1): 0.15,
        "1": 0.05,
        "10": 0.05,
        "11": 0.1,
        "0": 0.05,
        "x": 0.1,
    }
    return {token: math.log(value) for token, value in p.items()}


def expected_single(chosen: int) -> float:
    """Deita's expectation, worked out by hand from the alternatives above."""
    return (chosen * 0.5 + (chosen + 1) * 0.15 + 1 * 0.05 + 10 * 0.05) / 0.75


def ranks(texts: list[str]) -> list[int]:
    """1 for the fewest words, and so on; equal lengths share a rank."""
    return [1 + sum(len(o.split()) < len(t.split()) for o in texts) for t in texts]


def ranking_alternatives(rank: int, count: int) -> dict[str, float]:
    """A rank's alternatives: itself, another rank, and 0, count + 1, count + 2 (off the scale)."""
    p = {f" {rank}": 0.6, f" {rank % count + 1}": 0.1, " 0": 0.05}
    p |= {f" {count + 1}": 0.15, f" {count + 2}": 0.1}
    return {token: math.log(value) for token, value in p.items()}


def expected_rank(rank: int, count: int) -> float:
    return (rank * 0.6 + (rank % count + 1) * 0.1) / 0.7


class Call(NamedTuple):
    model: str
    scorer: str
    text: str  # the task; the answer for quality; the first version shown for complexity
    turns: int  # 1, or 3 when asked again
    prompt: str


class Judge:
    """Scores by word counts, with log-probabilities. `[partial]` in a chain leaves its last
    version out of the first ranking reply (and ranks the others the wrong way round),
    `[partial-always]` leaves it out of every one; a task in
    `refusing[model]` is refused (a 400 that fails only its record)."""

    calls: list[Call] = []
    refusing: dict[str, str] = {}

    def __init__(self, settings: BackendSettings):
        pass

    async def complete(self, request: LLMRequest) -> Completion:
        messages, model, params = request.messages, request.model, request.params
        assert params.logprobs and params.top_logprobs == 20 and params.temperature == 0
        content, again = messages[0]["content"], len(messages) > 1
        if '<version id="' in content:
            versions = re.findall(r'<version id="\d+">\n(.*?)\n</version>', content, re.S)
            Judge.calls.append(Call(model, "complexity", versions[0], len(messages), content))
            return self.ranking(versions, content, again)
        task = between(content, "<task>\n", "\n</task>")
        if "<response>" in content:
            scorer, text = "quality", between(content, "<response>\n", "\n</response>")
        else:
            scorer, text = "difficulty", task
        Judge.calls.append(Call(model, scorer, text, len(messages), content))
        if Judge.refusing.get(model, "\0") in task:
            raise BackendError("refused by the fake judge")
        if model == "judge-mute":
            return Completion(text="Hard to say.", prompt_tokens=7, completion_tokens=3)
        chosen = chosen_number(text, model)
        return Completion(
            text=str(chosen),
            prompt_tokens=7,
            completion_tokens=1,
            top_logprobs=[single_alternatives(chosen)],
        )

    def ranking(self, versions: list[str], content: str, again: bool) -> Completion:
        shown = list(enumerate(ranks(versions), start=1))
        if "[partial]" in content and not again:  # and upside down: the second reply counts
            shown = [(place, len(versions) + 1 - rank) for place, rank in shown[:-1]]
        if "[partial-always]" in content:
            shown = shown[:-1]
        tokens: list[dict[str, float]] = []
        for place, rank in shown:
            tokens += [{"#": 0.0}, {str(place): 0.0}, {":": 0.0}]
            tokens += [ranking_alternatives(rank, len(versions)), {"\n": 0.0}]
        text = "".join(max(alternatives, key=alternatives.get) for alternatives in tokens)
        return Completion(
            text=text, prompt_tokens=9, completion_tokens=len(tokens), top_logprobs=tokens
        )

    async def default_model(self) -> str:
        return "judge-a"

    async def aclose(self) -> None:
        pass


@pytest.fixture(autouse=True)
def fresh_judge(backend_registry: None) -> None:
    """`--backend quality-judge`, with no calls recorded yet (the registry is restored after)."""
    register_backend("quality-judge", Judge)
    Judge.calls, Judge.refusing = [], {}


def score(evol, run: Path, *options: str) -> Any:
    return evol("score", run, "--backend", "quality-judge", "--quiet", *options)


def stats_of(evol, run: Path) -> dict[str, Any]:
    result = evol("stats", run, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def run_records(run: Path) -> list[dict[str, Any]]:
    return [r for path in sorted(run.glob("gen_*.jsonl")) for r in read_jsonl(path)]


def scores_file(run: Path) -> list[dict[str, Any]]:
    return read_jsonl(run / "scores.jsonl")


def expected_scores(records: list[dict[str, Any]], model: str = "judge-a") -> dict[str, dict]:
    """scorer -> record id -> the score the judge's alternatives give, worked out here."""
    out: dict[str, dict[str, float]] = {"difficulty": {}, "quality": {}, "complexity": {}}
    for r in records:
        out["difficulty"][r["id"]] = expected_single(chosen_number(task_of(r), model))
        if r["output"] is not None:
            out["quality"][r["id"]] = expected_single(chosen_number(r["output"], model))
    by_root: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_root[r["root_id"]].append(r)
    for chain in by_root.values():
        if len(chain) > 1:
            for r, rank in zip(chain, ranks([task_of(c) for c in chain]), strict=True):
                out["complexity"][r["id"]] = expected_rank(rank, len(chain))
    return out


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def assert_generation_means(stats: dict[str, Any], want: dict[str, dict[str, float]]) -> None:
    """Each generation's means in `evol stats` equal a recount from the records' generations."""
    generation_of = {r["id"]: r["generation"] for r in VARIED}
    for row in stats["generations"]:
        for scorer in ("difficulty", "complexity", "quality"):
            values = [v for i, v in want[scorer].items() if generation_of[i] == row["generation"]]
            expected = mean(values)
            got = row[f"{scorer}_mean"]
            assert got == (None if expected is None else pytest.approx(expected, abs=2e-4)), (
                scorer,
                row["generation"],
            )
        difficulty = [
            v for i, v in want["difficulty"].items() if generation_of[i] == row["generation"]
        ]
        assert row["difficulty_scored"] == len(difficulty)


# -- scores from log-probabilities, read back through evol stats ---------------------------------


def test_each_score_is_the_expectation_over_the_scale_and_stats_recount_it(
    evol, varied_run: Path
) -> None:
    result = score(evol, varied_run, "--answers", "--json")
    assert result.exit_code == 0, result.output
    want = expected_scores(VARIED)

    lines = scores_file(varied_run)
    got = {(s["scorer"], s["id"]): s.get("scores", s.get("score")) for s in lines}
    for r in VARIED:
        assert got["difficulty", r["id"]] == pytest.approx(want["difficulty"][r["id"]], abs=2e-4)
        if r["output"] is None:
            assert ("quality", r["id"]) not in got  # nothing to rate, nothing paid
        else:
            assert got["quality", r["id"]] == pytest.approx(want["quality"][r["id"]], abs=2e-4)
    for root, chain in chains().items():
        assert got["complexity", root] == {
            r["id"]: pytest.approx(want["complexity"][r["id"]], abs=2e-4) for r in chain
        }
    assert ("complexity", "zz") not in got
    assert {s["source"] for s in lines} == {"logprobs"} and {s["asked"] for s in lines} == {1}

    # One call per record and scorer (one per chain for complexity), no record asked twice.
    asked = Counter((call.scorer, call.prompt) for call in Judge.calls)
    assert set(asked.values()) == {1}
    assert Counter(scorer for scorer, _prompt in asked) == {
        "difficulty": len(VARIED),
        "quality": sum(r["output"] is not None for r in VARIED),
        "complexity": len(chains()),
    }

    summary = json.loads(result.stdout)["scorers"]
    for scorer, values in want.items():
        row = summary[scorer]
        assert (row["records_scored"], row["missing"], row["failed"]) == (len(values), 0, 0)
        assert row["mean"] == pytest.approx(mean(list(values.values())), abs=2e-4)
    assert summary["difficulty"]["from_logprobs"] == len(VARIED)

    stats = stats_of(evol, varied_run)
    assert {
        name: (s["model"], s["scored"], s["missing"]) for name, s in stats["scores"].items()
    } == {name: ("judge-a", len(values), 0) for name, values in want.items()}
    assert_generation_means(stats, want)
    # Gains over the parent (parent_id, not root_id: they differ from generation 2 on).
    gains = [
        want["difficulty"][r["id"]] - want["difficulty"][r["parent_id"]]
        for r in VARIED
        if r["parent_id"]
    ]
    assert stats["operations"]["deepen"]["difficulty_gain"] == pytest.approx(mean(gains), abs=2e-4)


def test_a_partial_ranking_is_asked_again_and_a_missing_version_stays_missing(
    evol, tmp_path: Path
) -> None:
    run = write_run(
        tmp_path / "run",
        [
            record("p1", "[partial] Plan a trip"),
            record("p1.3", "[partial] Plan a trip to Rome for a family of four"),
            record("p1.3.5", "[partial] Plan a trip to Rome"),
            record("m1", "[partial-always] Cook rice"),
            record("m1.2", "[partial-always] Cook rice without a rice cooker"),
        ],
    )
    options = ("--no-difficulty", "--model", "judge-a")
    result = score(evol, run, *options, "--json")
    assert result.exit_code == 0, result.output
    lines = {s["id"]: s for s in scores_file(run)}
    # p1: the first reply left a version out, the second gave them all, and is read alone.
    assert lines["p1"]["asked"] == 2
    p1 = [r for r in run_records(run) if r["root_id"] == "p1"]
    assert lines["p1"]["scores"] == {
        r["id"]: pytest.approx(expected_rank(rank, 3), abs=2e-4)
        for r, rank in zip(p1, ranks([r["instruction"] for r in p1]), strict=True)
    }
    # m1: never whole; what was given is kept, the rest recorded as missing, not guessed.
    assert lines["m1"]["asked"] == 2
    assert [v is None for v in lines["m1"]["scores"].values()].count(True) == 1
    # The summary counts records, as stats does: p1's three and m1's one given, m1's other
    # missing; it averages those given alone.
    given = [v for line in lines.values() for v in line["scores"].values() if v is not None]
    summary = json.loads(result.stdout)["scorers"]["complexity"]
    assert (summary["scored"], summary["missing"], summary["records_scored"]) == (4, 1, 4)
    assert summary["mean"] == pytest.approx(mean(given), abs=2e-4)
    stats = stats_of(evol, run)
    assert (stats["scores"]["complexity"]["scored"], stats["scores"]["complexity"]["missing"]) == (
        4,
        1,
    )

    calls = len(Judge.calls)
    assert score(evol, run, *options).exit_code == 0
    assert len(Judge.calls) == calls  # missing is not asked again unless asked to
    assert score(evol, run, *options, "--retry-missing").exit_code == 0
    assert [(c.scorer, c.text) for c in Judge.calls[calls:] if c.turns == 1] == [
        ("complexity", Judge.calls[calls].text)
    ]
    assert "Cook rice" in Judge.calls[calls].text


def test_stats_use_the_model_that_scored_most_and_the_latest_on_a_tie(
    evol, varied_run: Path
) -> None:
    options = ("--no-complexity", "--no-metrics")
    assert score(evol, varied_run, *options, "--model", "judge-a").exit_code == 0
    # judge-b is refused the q7 lineage's tasks: it scores fewer records than judge-a.
    Judge.refusing = {"judge-b": "Sort"}
    assert score(evol, varied_run, *options, "--model", "judge-b").exit_code == 1
    stats = stats_of(evol, varied_run)
    assert stats["scores"]["difficulty"]["model"] == "judge-a"
    assert_generation_means(
        stats, expected_scores(VARIED, "judge-a") | {"complexity": {}, "quality": {}}
    )

    Judge.refusing = {}
    result = score(evol, varied_run, *options, "--model", "judge-b", "--json")
    assert result.exit_code == 0
    sorts = sum("Sort" in r["instruction"] for r in VARIED)
    assert json.loads(result.stdout)["scorers"]["difficulty"]["already"] == len(VARIED) - sorts
    stats = stats_of(evol, varied_run)
    assert stats["scores"]["difficulty"]["model"] == "judge-b"  # as many records: the latest
    assert_generation_means(
        stats, expected_scores(VARIED, "judge-b") | {"complexity": {}, "quality": {}}
    )


def test_a_model_that_gave_no_scores_does_not_hide_one_that_did(evol, varied_run: Path) -> None:
    """Missing scores are no scores: a model whose every reply lacked a number does not win
    over one that scored all but one record (whose call failed and is left for next time)."""
    options = ("--no-complexity", "--no-metrics")
    assert score(evol, varied_run, *options, "--model", "judge-mute").exit_code == 0
    assert {s["score"] for s in scores_file(varied_run)} == {None}
    Judge.refusing = {"judge-a": "Name the capital"}
    assert score(evol, varied_run, *options, "--model", "judge-a").exit_code == 1
    stats = stats_of(evol, varied_run)
    assert stats["scores"]["difficulty"] == {
        "model": "judge-a",
        "scored": len(VARIED) - 1,
        "missing": 0,
    }
    want = expected_scores([r for r in VARIED if r["id"] != "b2"])
    assert_generation_means(stats, want | {"complexity": {}, "quality": {}})


def rewrite_record(run: Path, record_id: str, **changes: str) -> None:
    """Change one kept record in place, as `evol run --overwrite` of its step would."""
    for path in run.glob("gen_*.jsonl"):
        rows = read_jsonl(path)
        if any(r["id"] == record_id for r in rows):
            rows = [r | changes if r["id"] == record_id else r for r in rows]
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_a_score_of_text_that_changed_counts_no_more_and_only_it_is_asked_again(
    evol, varied_run: Path
) -> None:
    assert score(evol, varied_run, "--answers").exit_code == 0
    before = stats_of(evol, varied_run)["scores"]
    rewrite_record(varied_run, "q7.2.4", output="Insertion sort, since the list is short.")
    rewrite_record(varied_run, "b2.1", instruction="Name a city")
    after = stats_of(evol, varied_run)["scores"]
    assert after["quality"]["scored"] == before["quality"]["scored"] - 2
    assert after["difficulty"]["scored"] == before["difficulty"]["scored"] - 1
    assert after["complexity"]["scored"] == before["complexity"]["scored"] - 2  # b2's chain

    calls = len(Judge.calls)
    assert score(evol, varied_run, "--answers").exit_code == 0
    asked = sorted((call.scorer, call.text) for call in Judge.calls[calls:])
    assert asked == [
        ("complexity", asked[0][1]),
        ("difficulty", "Name a city"),
        ("quality", "Insertion sort, since the list is short."),
        ("quality", "Paris."),
    ]
    assert asked[0][1] in {"Name the capital city of France please", "Name a city"}
    want = expected_scores(run_records(varied_run))
    now = stats_of(evol, varied_run)
    assert {name: s["scored"] for name, s in now["scores"].items()} == {
        name: len(values) for name, values in want.items()
    }
    assert_generation_means(now, want)


def test_the_dry_run_counts_any_model_as_done_and_skips_records_without_an_answer(
    evol, varied_run: Path
) -> None:
    plan = json.loads(score(evol, varied_run, "--answers", "--dry-run", "--json").stdout)
    answered = sum(r["output"] is not None for r in VARIED)
    assert {name: p["calls"] for name, p in plan["scorers"].items()} == {
        "difficulty": len(VARIED),
        "complexity": len(chains()),
        "quality": answered,
    }
    result = score(evol, varied_run, "--model", "judge-b", "--no-metrics")
    assert result.exit_code == 0 and not (varied_run / "metrics.json").exists()
    left = json.loads(score(evol, varied_run, "--answers", "--dry-run", "--json").stdout)
    assert {name: p["calls"] for name, p in left["scorers"].items()} == {
        "difficulty": 0,
        "complexity": 0,
        "quality": answered,
    }
    assert left["scorers"]["difficulty"]["already"] == len(VARIED)
    other = json.loads(score(evol, varied_run, "--dry-run", "--json", "--model", "judge-c").stdout)
    assert other["calls"] == len(VARIED) + len(chains())
    assert score(evol, varied_run, "--no-difficulty", "--no-complexity").exit_code == 0
    assert (varied_run / "metrics.json").exists()
