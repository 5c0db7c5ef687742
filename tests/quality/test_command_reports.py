"""What `evol` tells the user after a whole command, checked against what it did (#22).

Mutation testing found these promises unpinned: the lines `merge`, `select` and `score
--dry-run` print, the figures of the `stats` table, a dry run's token estimate, what a rerun
of a finished run reports, the complexity ranking prompt, and how a reply's log-probabilities
are read. Each test runs the whole command in this process (so mutmut counts
it) and compares its words with facts taken another way: the --json output, the files written,
the runs' own sizes.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evol
from evol.quality.readings import expected_score
from evol.quality.score_plan import plan_scoring
from evol.quality.scoring import ScoreConfig
from evol.rundir.records import compose
from tests.support.fake_server import FakeServer
from tests.support.runs import read_jsonl, record, run_args, write_run, write_seeds
from tests.support.scoring import ScoringResponder
from tests.support.selection import ROWS, scored_run
from tests.support.shards import seed_ids

pytestmark = pytest.mark.usefixtures("scripted_backend")

# -- merge -------------------------------------------------------------------------------------


def test_merge_says_which_shards_it_joined_what_is_missing_and_what_repeats(
    evol, tmp_path: Path
) -> None:
    first, second, third = seed_ids([0, 1, 2], 3)
    text = "Describe the water cycle for a class of ten year old pupils"
    rows = [
        {"id": first, "instruction": text},
        {"id": second, "instruction": text.upper()},
        {"id": third, "instruction": "Write a short poem about the first snow in a quiet town"},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    shards = [tmp_path / f"shard-{index}" for index in range(3)]
    for index, shard in enumerate(shards):
        with FakeServer() as server:
            made = evol(
                *run_args(server, seeds, shard, "--generations", "1", "--dedup"),
                "--shard",
                f"{index}/3",
            )
        assert made.exit_code == 0, made.output
    out = tmp_path / "merged"
    result = evol("merge", shards[0], shards[1], "--out", out, "--partial")
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "run.json").read_text())
    kept = sum(len(read_jsonl(out / f"gen_{g}.jsonl")) for g in range(2))
    eliminated = len(read_jsonl(out / "eliminated.jsonl"))
    dataset = len(read_jsonl(out / "dataset.jsonl"))
    duplicates = len(manifest["shards"]["cross_shard_duplicates"])
    assert duplicates > 0  # the water cycle, told in either shard
    assert result.stdout.splitlines() == [
        f"{out}: merged 2 shards (0/3, 1/3): 2 seeds, {kept} records kept, {eliminated} eliminated",
        f"dataset: {out / 'dataset.jsonl'} ({dataset} records)",
        "missing shards (--partial): 2/3",
        f"{duplicates} kept evolutions repeat an instruction of another shard "
        "(kept; listed in run.json under shards.cross_shard_duplicates)",
    ]
    alone = evol("merge", shards[1], "--out", tmp_path / "alone", "--partial")
    assert alone.stdout.splitlines()[2:] == ["missing shards (--partial): 0/3, 2/3"]


# -- select ------------------------------------------------------------------------------------


def select_lines(evol, run: Path, out: Path, *options: str) -> list[str]:
    result = evol("select", run, "--out", out, *options)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_select_says_what_it_picked_passed_over_and_what_to_run_next(evol, tmp_path: Path) -> None:
    """The haiku is in the evaluation set; the proof has no difficulty score; the second
    recursion prompt is too similar to the first."""
    run = scored_run(evol, tmp_path, ROWS)
    evaluation = write_seeds(
        tmp_path / "eval.jsonl", [{"instruction": "A haiku about autumn rain"}]
    )
    checked = evol("score", run, "--backend", "scripted", "--against", evaluation, "--ngram", "3")
    assert checked.exit_code == 0, checked.output
    ranked = "ranked by difficulty (script) x quality (script)"
    out = tmp_path / "picked.jsonl"

    assert select_lines(evol, run, out, "--budget", "1") == [
        f"{out}: 1 of 6 records, {ranked}",
        "passed over: none; not reached: 5",
    ]
    assert select_lines(evol, run, out, "--budget", "6") == [
        f"{out}: 5 of 6 records, {ranked}",
        "passed over: too_similar 1; not reached: 0",
        "1 picked records lack a score (ranked last); evol score --retry-missing asks again",
        "1 picked records are flagged as contaminated; --drop-contaminated leaves them out",
    ]
    grown = tmp_path / "grown"
    shutil.copytree(run, grown)
    with (grown / "gen_0.jsonl").open("a", encoding="utf-8") as fp:
        fp.write(json.dumps(record("s9", "Name a lake in Finland")) + "\n")
    assert select_lines(evol, grown, out, "--budget", "9", "--drop-contaminated") == [
        f"{out}: 5 of 7 records, {ranked}",
        "passed over: contaminated 1, too_similar 1; not reached: 0",
        "2 picked records lack a score (ranked last); evol score --retry-missing asks again",
        "the run grew after its contamination check: run evol score --against again",
    ]


# -- score --dry-run ---------------------------------------------------------------------------

GPT_4O_MINI = (0.15, 0.60)  # USD per million prompt and completion tokens, as published


def lineage(root: str, *texts: str) -> list[dict]:
    """A seed and its chain of evolutions, one per generation."""
    ids = [root + "".join(f".{n}" for n in range(1, k + 1)) for k in range(len(texts))]
    return [record(i, text) for i, text in zip(ids, texts, strict=True)]


A = lineage("a", "Name a bird", "Name a bird that cannot fly", "Name two birds that cannot fly")
B = lineage("b", "Explain how a lock works", "Explain how a pin tumbler lock resists picking")


def test_a_dry_run_estimates_two_runs_together_as_the_sum_of_each(tmp_path: Path) -> None:
    plans = {
        name: plan_scoring(ScoreConfig(run_dir=write_run(tmp_path / name, records)))
        for name, records in {"a": A, "b": B, "both": A + B}.items()
    }
    for scorer in ("difficulty", "complexity"):
        rows = {name: plan.scorers[scorer] for name, plan in plans.items()}
        assert rows["a"].calls > 0 and rows["b"].calls > 0
        for field in ("calls", "prompt_tokens", "completion_tokens"):
            alone = getattr(rows["a"], field), getattr(rows["b"], field)
            assert min(alone) > 0
            assert getattr(rows["both"], field) == sum(alone), (scorer, field)


def test_the_dry_run_names_the_run_the_model_the_checks_and_the_price(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", A + B)
    evaluation = write_seeds(tmp_path / "eval.jsonl", [{"instruction": "Name a fish"}])
    other = write_seeds(tmp_path / "other.jsonl", [{"instruction": "Name a lake"}])
    plan = plan_scoring(ScoreConfig(run_dir=run))
    rows = [
        f"  {scorer:<10} {row.calls} calls (0 records scored already), about "
        f"{row.prompt_tokens} prompt + {row.completion_tokens} completion tokens at most"
        for scorer, row in plan.scorers.items()
    ]
    prompt = sum(row.prompt_tokens for row in plan.scorers.values())
    completion = sum(row.completion_tokens for row in plan.scorers.values())
    cost = (prompt * GPT_4O_MINI[0] + completion * GPT_4O_MINI[1]) / 1e6
    against = ["--against", evaluation, "--against", other]
    priced = evol("score", run, "--dry-run", "--model", "gpt-4o-mini", *against)
    assert priced.exit_code == 0, priced.output
    assert priced.stdout.splitlines() == [
        f"{run}: {plan.calls} calls to make with gpt-4o-mini",
        *rows,
        f"  contamination check against {evaluation}, {other} (no calls)",
        f"estimated cost: ${cost:.4f}",
    ]
    unpriced = evol("score", run, "--dry-run")
    assert unpriced.stdout.splitlines() == [
        f"{run}: {plan.calls} calls to make with the server default model",
        *rows,
        "estimated cost: unknown (pass --model with a known name, or --price-in and --price-out)",
    ]


def test_a_dry_run_with_retry_missing_counts_the_missing_scores_as_calls(
    evol, tmp_path: Path
) -> None:
    run = scored_run(evol, tmp_path, ROWS)  # one difficulty recorded as missing
    again = plan_scoring(ScoreConfig(run_dir=run, retry_missing=True, complexity=False))
    assert (again.calls, again.scorers["difficulty"].already) == (1, 5)
    assert plan_scoring(ScoreConfig(run_dir=run, complexity=False)).calls == 0


# -- stats -------------------------------------------------------------------------------------


def test_the_stats_table_shows_the_figures_the_json_holds(evol, tmp_path: Path) -> None:
    """Generation 1 was never scored: its means show as -; counts show whole, means to two
    places."""
    run = scored_run(evol, tmp_path, ROWS)
    (run / "gen_1.jsonl").write_text(json.dumps(record("s1.1", "Explain recursion twice")) + "\n")
    figures = json.loads(evol("stats", run, "--json").stdout)["generations"]
    assert [(row["difficulty_mean"], row["difficulty_sd"]) for row in figures] == [
        (6.4, 2.881),
        (None, None),
    ]
    assert figures[0]["difficulty_scored"] == 5
    text = evol("stats", run).stdout.splitlines()
    header = text.index(
        next(line for line in text if line.split()[:2] == ["generation", "difficulty"])
    )
    assert text[header].split()[:4] == ["generation", "difficulty", "sd", "scored"]
    assert [row.split()[:4] for row in text[header + 2 : header + 4]] == [
        ["0", "6.40", "2.88", "5"],
        ["1", "-", "-", str(figures[1]["difficulty_scored"])],
    ]


# -- a rerun of a finished run -----------------------------------------------------------------


def test_a_finished_run_run_again_reports_every_step_done_and_nothing_to_repeat(
    server, tmp_path: Path
) -> None:
    seeds = write_seeds(
        tmp_path / "seeds.jsonl",
        [{"instruction": text} for text in ("Name a bird", "Name a tree", "Name a river")],
    )
    config = evol.RunConfig(
        seeds=seeds, out=tmp_path / "run", generations=2, base_urls=[server.base_url]
    )
    progress: list[tuple[int, int]] = []
    first = evol.run(config, on_progress=lambda p: progress.append((p.done, p.total)))
    assert first.status == "complete" and not first.resumed
    assert progress[-1] == (9, 9)  # three seeds: an answer and two rounds each
    calls = len(server.requests)
    rerun_fields = {"resumed", "steps", "steps_done_at_start", "calls_to_repeat", "calls_cut_off"}
    for _case in ("fresh", "once resumed"):
        said: list[str] = []
        again = evol.run(config, on_info=said.append)
        assert said == [f"{config.out} is complete: nothing to do"]
        assert len(server.requests) == calls
        assert again.resumed and again.steps == again.steps_done_at_start == 9
        assert (again.calls_to_repeat, again.calls_cut_off) == (0, 0)
        assert again.model_dump(exclude=rerun_fields) == first.model_dump(exclude=rerun_fields)
        # As a run resumed after a kill leaves it: its own resume repeated four calls.
        manifest = json.loads((config.out / "run.json").read_text())
        manifest["summary"] |= {"resumed": True, "steps_done_at_start": 5, "calls_to_repeat": 4}
        (config.out / "run.json").write_text(json.dumps(manifest))


# -- the complexity ranking prompt -------------------------------------------------------------


def ranking_prompt(evol, run: Path) -> str:
    """The one complexity prompt `evol score` sends for the run's one lineage."""
    with FakeServer(responder=ScoringResponder()) as server:
        result = evol("score", run, "--base-url", server.base_url, "--no-difficulty")
        prompts = [body["messages"][0]["content"] for body in server.requests]
    assert result.exit_code == 0, result.output
    (prompt,) = prompts
    return prompt


def test_the_ranking_prompt_shows_each_version_once_numbered_and_in_a_fixed_order(
    evol, tmp_path: Path
) -> None:
    """Every version with its input, numbered 1 to N, the count stated; the order drawn from
    the lineage, so a rerun asks the same question."""
    texts = [f"Write {n} lines about the sea, each rhyming with the one before" for n in range(6)]
    chain = [
        record(".".join(["r", *map(str, range(1, k + 1))]), text, input=f"Use the word tide {k}")
        for k, text in enumerate(texts)
    ]
    prompt = ranking_prompt(evol, write_run(tmp_path / "one", chain))
    blocks = re.findall(r'<version id="(\d+)">\n(.*?)\n</version>', prompt, re.S)
    assert [place for place, _text in blocks] == [str(n) for n in range(1, 7)]
    assert sorted(text for _place, text in blocks) == sorted(
        compose(r["instruction"], r["input"]) for r in chain
    )
    shown = "\n\n".join(f'<version id="{place}">\n{text}\n</version>' for place, text in blocks)
    assert shown in prompt and "Below are 6 versions" in prompt
    assert ranking_prompt(evol, write_run(tmp_path / "two", chain)) == prompt
    (line,) = read_jsonl(tmp_path / "one" / "scores.jsonl")  # the reply held no logprobs
    assert (line["scorer"], line["source"]) == ("complexity", "text")


# -- a reply's log-probabilities -----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    honest=st.dictionaries(st.integers(1, 9).map(str), st.floats(-20, -0.01), max_size=9),
    forged=st.dictionaries(
        st.integers(1, 9).map(str),
        st.floats(1e-5, 5) | st.sampled_from([math.inf, -math.inf, math.nan]),
        min_size=1,
        max_size=9,
    ),
)
def test_log_probabilities_no_model_gives_never_move_a_score(
    honest: dict[str, float], forged: dict[str, float]
) -> None:
    """A reply is untrusted: a positive or non-finite log-probability counts for nothing."""
    honest = honest | {"5": 0.0}  # the number written
    forged = {token: value for token, value in forged.items() if token not in honest}
    clean = expected_score([honest], "5", 0, 1, 9)
    assert expected_score([honest | forged], "5", 0, 1, 9) == clean


def test_probabilities_that_all_round_to_zero_leave_the_number_written() -> None:
    assert expected_score([{"7": -800.0, "x": -900.0}], "7", 0, 1, 10) is None


def test_a_number_right_after_another_token_is_read_from_its_own_alternatives() -> None:
    tokens = [{"Score:": 0.0}, {"7": math.log(0.75), "3": math.log(0.25)}]
    assert expected_score(tokens, "Score:7", 6, 7, 10) == 6.0


# -- what select writes ------------------------------------------------------------------------


def test_select_writes_the_same_rows_to_parquet_and_to_jsonl_without_pyarrow(
    evol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pyarrow = pytest.importorskip("pyarrow.parquet")
    run = scored_run(evol, tmp_path, ROWS)
    select_lines(evol, run, tmp_path / "picked.parquet", "--budget", "3")
    with monkeypatch.context() as blocked:
        blocked.setitem(sys.modules, "pyarrow", None)  # pyarrow is optional: jsonl needs none
        select_lines(evol, run, tmp_path / "picked.jsonl", "--budget", "3")
    rows = read_jsonl(tmp_path / "picked.jsonl")
    assert len(rows) == 3 and set(rows[0]) == {"instruction", "input", "output"}
    assert pyarrow.read_table(tmp_path / "picked.parquet").to_pylist() == rows
