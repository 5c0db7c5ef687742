"""Promises that the third round of mutation survivors (checks 2,700 on, #22) found unpinned:
what `evol score` asks and reports, what `evol merge` writes, refuses and leaves behind, and
what `evol stats` says about contamination.

Each test goes through the CLI (the `evol` fixture, in this process, where mutation testing
sees it), so that it runs on 4f7dc9e's tree, where the mutants were found, as on `main`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_server import FakeServer, Fault, Responder, scripted
from tests.support.runs import Evol, read_jsonl, run_args, write_seeds

# -- evol score: what it asks, and the figures it reports --------------------------------------

UNREADABLE = "Hard to say: it depends on the reader."
SINGLE_AGAIN = "Reply with the number only: one whole number from 1 to 10."
RANKING_AGAIN = 'Reply with the scores only, one line per version from #1 to #{}, like "#1: 2".'


class Scores(Responder):
    """A score by length; a task marked [mute] gets no number on the first ask."""

    def __call__(self, body: dict[str, Any]) -> str:
        first, again = body["messages"][0]["content"], len(body["messages"]) > 1
        if "[mute]" in first and not again:
            return UNREADABLE
        if '<version id="' in first:
            versions = re.findall(r'<version id="\d+">\n(.*?)\n</version>', first, re.S)
            return "\n".join(f"#{k}: {k}" for k in range(1, len(versions) + 1))
        if "<task>" in first:
            return str(len(first.split()) % 10 + 1)
        return super().__call__(body)


def words(text: str) -> int:
    return len(text.split())


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of two lineages of three records, one of them [mute]."""
    base = tmp_path_factory.mktemp("score")
    seeds = write_seeds(
        base / "seeds.jsonl",
        [{"instruction": "Name a primary colour"}, {"instruction": "[mute] Name a river"}],
    )
    with FakeServer() as server:
        result = Evol()(*run_args(server, seeds, base / "run", "--generations", "2"))
    assert result.exit_code == 0, result.output
    return base / "run"


def test_a_scoring_asks_as_the_user_and_reports_every_attempt_and_token(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """The summary's requests, retries and usage are what the server saw and billed; every
    request is a well-formed chat (a real server refuses a message without its role); a reply
    without a number is asked again in the words of its scorer."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    faults = scripted(Fault("status", 500), None, Fault("status", 429, retry_after=0))
    started = time.monotonic()
    with FakeServer(responder=Scores(), faults=faults) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--json", "--concurrency", "1",
            "--max-retries", "2", "--retry-max-wait", "0.01", "--no-metrics",
        )  # fmt: skip
        sent = list(server.requests)
    assert result.exit_code == 0, result.output
    wall = time.monotonic() - started
    summary = json.loads(result.stdout)
    assert summary["requests"] == len(sent) and summary["retries"] == 2
    assert summary["metrics"] is None  # --no-metrics: no file, not an empty name
    elapsed = summary["elapsed_s"]  # the scoring's own time, in milliseconds
    assert 0 < elapsed <= wall and elapsed == round(elapsed, 3)

    answered = [body for place, body in enumerate(sent) if place not in (0, 2)]
    prompt = sum(words(m["content"]) for body in answered for m in body["messages"])
    completion = sum(words(Scores()(body)) for body in answered)
    assert summary["usage"] == {"prompt_tokens": prompt, "completion_tokens": completion}

    asked_again = []
    for body in sent:
        roles = [message["role"] for message in body["messages"]]
        assert roles in (["user"], ["user", "assistant", "user"]), roles
        if len(roles) == 3:
            assert body["messages"][1]["content"] == UNREADABLE
            asked_again.append(body["messages"][2]["content"].strip())
    # The [mute] lineage: its difficulty of each of 3 records, and its ranking of 3 versions.
    assert Counter(asked_again) == {SINGLE_AGAIN: 3, RANKING_AGAIN.format(3): 1}


class Overflows(Scores):
    def __call__(self, body: dict[str, Any]) -> str:
        from tests.support.fake_server import ContextOverflow

        if "primary" in body["messages"][0]["content"]:
            raise ContextOverflow
        return super().__call__(body)


def test_a_prompt_over_the_context_is_recorded_as_asked_once_and_unscored(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    with FakeServer(responder=Overflows()) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics"
        )
    assert result.exit_code == 0, result.output
    lines = [line for line in read_jsonl(run / "scores.jsonl") if line.get("error")]
    assert len(lines) == 3 and all("maximum context length" in line["error"] for line in lines)
    for line in lines:
        assert (line["score"], line["asked"], line["reply"], line["usage"]) == (None, 1, "", {})
        assert line.get("source") is None  # nothing was read


# -- evol merge ----------------------------------------------------------------------------------

# Two seeds of 13 words that differ in one, placed in shards 0 and 1 of 2: their evolutions
# are near copies across the shards (ROUGE-L about 0.8 to 0.9), exact copies nowhere.
NEAR = "Describe the water cycle for a class of ten year old pupils in the {}"


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The seed file, and the two shards of it run without --dedup ("plain"), with --dedup at
    0.99 ("strict") and at the default 0.7 ("loose"), one generation each."""
    from evol.seeds import shard_of

    base = tmp_path_factory.mktemp("shards")
    ids = [next(f"p{n}" for n in range(100) if shard_of(f"p{n}", 2) == s) for s in (0, 1)]
    rows = [
        {"id": i, "instruction": NEAR.format(w)}
        for i, w in zip(ids, ["north", "south"], strict=True)
    ]
    seeds = write_seeds(base / "seeds.jsonl", rows)
    variants = {
        "plain": (),
        "strict": ("--dedup", "--dedup-threshold", "0.99"),
        "loose": ("--dedup",),
    }
    made: dict[str, Any] = {"seeds": seeds}
    with FakeServer() as server:
        for name, options in variants.items():
            made[name] = [base / name / f"shard-{i}" for i in range(2)]
            for index, out in enumerate(made[name]):
                extra = ("--generations", "1", "--shard", f"{index}/2", *options)
                result = Evol()(*run_args(server, seeds, out, *extra))
                assert result.exit_code == 0, result.output
    return made


def merged(evol, shard_dirs: list[Path], out: Path, *extra: object) -> dict[str, Any]:
    """`evol merge --json`, which must succeed; returns its summary."""
    result = evol("merge", *shard_dirs, "--out", out, "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cross_shard_duplicates_follow_the_runs_own_dedup_rule(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    """Listed only when the run deduplicated, and by its threshold, not the default one."""
    loose = merged(evol, shards["loose"], tmp_path / "loose")
    assert loose["cross_shard_duplicates"]  # the near copies are there to be found
    for name in ("plain", "strict"):
        summary = merged(evol, shards[name], tmp_path / name)
        assert summary["cross_shard_duplicates"] == [], name
        manifest = json.loads((tmp_path / name / "run.json").read_text())
        assert manifest["shards"]["cross_shard_duplicates"] == [], name


def test_a_merged_run_is_not_resumed_as_one_of_its_shards(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    """The shards are resumed and merged again; `evol run` on the merged directory, with the
    options of a shard or of the whole run, is refused and changes nothing."""
    out = tmp_path / "merged"
    merged(evol, shards["plain"], out)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with FakeServer() as server:
        for shard in (("--shard", "0/2"), ()):
            options = ("--generations", "1", *shard)
            result = evol(*run_args(server, shards["seeds"], out, *options))
            assert result.exit_code == 2, (shard, result.output)
            assert "shard" in result.stderr, result.stderr
        assert not server.requests
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_a_merge_with_overwrite_over_a_longer_run_leaves_none_of_its_files(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    """--out held a run of two generations: the merge of one-generation shards over it is the
    merge into an empty directory, without the old gen_2.jsonl."""
    merged(evol, shards["plain"], tmp_path / "fresh")
    out = tmp_path / "merged"
    with FakeServer() as server:
        result = evol(*run_args(server, shards["seeds"], out, "--generations", "2"))
    assert result.exit_code == 0, result.output
    merged(evol, shards["plain"], out, "--overwrite")
    assert {path.name: path.read_bytes() for path in out.glob("*.jsonl")} == {
        path.name: path.read_bytes() for path in (tmp_path / "fresh").glob("*.jsonl")
    }


def test_a_moved_seed_file_is_where_the_merged_run_json_says_it_is(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    copies = [tmp_path / "shard-0", tmp_path / "shard-1"]
    for source, copy in zip(shards["plain"], copies, strict=True):
        shutil.copytree(source, copy)
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes(shards["seeds"].read_bytes())
    for copy in copies:
        manifest = json.loads((copy / "run.json").read_text())
        manifest["config"]["seeds"] = str(tmp_path / "gone.jsonl")
        (copy / "run.json").write_text(json.dumps(manifest))
    merged(evol, copies, tmp_path / "merged", "--seeds", moved)
    manifest = json.loads((tmp_path / "merged" / "run.json").read_text())
    assert manifest["config"]["seeds"] == manifest["seeds"]["path"] == str(moved)


def test_a_failed_merge_leaves_a_run_that_says_it_is_not_complete(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    """A damaged shard stops the merge after run.json is written: the half-merged directory
    says it is running, and is refused as a shard in those words."""
    copies = [tmp_path / "shard-0", tmp_path / "shard-1"]
    for source, copy in zip(shards["plain"], copies, strict=True):
        shutil.copytree(source, copy)
    with (copies[1] / "gen_1.jsonl").open("a") as damaged:
        damaged.write('{"id": "torn"}\n')
    out = tmp_path / "merged"
    assert evol("merge", *copies, "--out", out).exit_code == 2
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    result = evol("merge", out, copies[0], "--out", tmp_path / "again")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {out}: the run is running, not complete; run its evol run command "
        "again to finish it, then merge\n"
    )


def test_shards_of_two_runs_are_refused_naming_every_difference(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    with FakeServer() as server:
        options = ("--generations", "2", "--shard", "1/3")
        assert evol(*run_args(server, shards["seeds"], other, *options)).exit_code == 0
    first = shards["plain"][0]
    result = evol("merge", first, other, "--out", tmp_path / "merged")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {other} and {first} are not shards of one run: they differ in "
        "--generations, --shard N\n"
    )


def test_a_shard_whose_run_json_this_evol_cannot_read_is_named(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    copy = tmp_path / "shard-1"
    shutil.copytree(shards["plain"][1], copy)
    manifest = json.loads((copy / "run.json").read_text())
    manifest["config"]["from_a_later_evol"] = True
    (copy / "run.json").write_text(json.dumps(manifest))
    result = evol("merge", shards["plain"][0], copy, "--out", tmp_path / "merged")
    assert result.exit_code == 2
    assert result.stderr == f"evol: error: {copy}: run.json is not one this evol can read\n"


def test_a_shard_whose_fingerprint_lacks_an_entry_is_not_merged(
    evol, shards: dict[str, Any], tmp_path: Path
) -> None:
    """A shard made by an evol that did not record an option cannot show it matched."""
    copy = tmp_path / "shard-1"
    shutil.copytree(shards["plain"][1], copy)
    manifest = json.loads((copy / "run.json").read_text())
    name = next(
        key for key in manifest["fingerprint"] if key in ("seeds file content", "seeds_digest")
    )
    del manifest["fingerprint"][name]
    (copy / "run.json").write_text(json.dumps(manifest))
    result = evol("merge", shards["plain"][0], copy, "--out", tmp_path / "merged")
    assert result.exit_code == 2, result.output
    assert "not shards of one run" in result.stderr


# -- evol export: what it refuses, in words that say what to do -----------------------------------


@pytest.fixture
def small_run(tmp_path: Path) -> Path:
    from tests.support.runs import record, write_run

    return write_run(tmp_path / "run", [record("s1", "Name a river."), record("s1.1", "Name two.")])


@pytest.mark.parametrize(
    ("shape", "what"),
    [("jsonl", "writes evol's records as they are"), ("ifeval", "has no system turn")],
)
def test_a_system_prompt_for_a_shape_without_one_is_refused_saying_which_have_one(
    evol, small_run: Path, tmp_path: Path, shape: str, what: str
) -> None:
    out = tmp_path / "out.jsonl"
    result = evol(
        "export", small_run, "--out", out, "--format", shape, "--system-prompt", "Be kind."
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: --system-prompt: the {shape} format {what}; use alpaca, sharegpt or "
        "openai-chat (or rlvr) for a system turn\n"
    )
    assert not out.exists()


def test_ifeval_to_parquet_is_refused_saying_what_to_write_instead(
    evol, small_run: Path, tmp_path: Path
) -> None:
    pytest.importorskip("pyarrow")
    out = tmp_path / "out.parquet"
    result = evol("export", small_run, "--out", out, "--format", "ifeval")
    assert result.exit_code == 2
    assert result.stderr == (
        "evol: error: --format ifeval: its kwargs differ per constraint, which one Parquet "
        "column cannot hold; write JSON Lines (or rlvr to Parquet)\n"
    )


def test_a_run_without_records_is_not_exported(evol, small_run: Path, tmp_path: Path) -> None:
    for path in small_run.glob("gen_*.jsonl"):
        path.unlink()
    result = evol("export", small_run, "--out", tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert result.stderr == f"evol: error: {small_run}: the run has no records yet\n"


# -- structured output: only a refusal of the format steps down from it ---------------------------


def test_a_server_error_or_a_refusal_for_the_content_keeps_structured_output(
    evol, tmp_path: Path
) -> None:
    """A 500 on a structured request is retried, and a 400 that does not name the format
    fails that request alone: neither makes the endpoint's later requests go without
    json_schema (each step down costs a request, and loses the schema's checks)."""
    from tests.support.fake_server import kind_of

    faults = iter(
        [Fault("status", 500), Fault("status", 400, message="flagged by the content filter")]
    )

    def plan(body: dict[str, Any]) -> Fault | None:
        return next(faults, None) if "response_format" in body else None

    seeds = write_seeds(
        tmp_path / "seeds.jsonl",
        [{"instruction": f"Explain idea {i} of gardening"} for i in range(3)],
    )
    with FakeServer(faults=plan) as server:
        result = evol(
            *run_args(server, seeds, tmp_path / "run", "--generations", "2", "--concurrency", "1"),
            "--max-retries", "2", "--retry-max-wait", "0.01",
        )  # fmt: skip
        judged = [body for body in server.requests if kind_of(body) == "judge"]
    assert result.exit_code in (0, 1), result.output
    assert len(judged) >= 6
    formats = [(body.get("response_format") or {}).get("type") for body in judged]
    assert formats == ["json_schema"] * len(judged), formats


# -- which shard a seed is in, and what a damaged record lacks ----------------------------------


def test_a_seeds_shard_is_the_same_on_every_machine_and_every_version() -> None:
    """blake2b of the id (docs/shards.md): a shard resumed by a later evol, or on another
    machine, must hold the same seeds, or the merge would see seeds twice and others never."""
    from evol.seeds import shard_of

    assert [shard_of(f"p{n}", 4) for n in range(12)] == [0, 1, 0, 3, 2, 2, 1, 3, 0, 2, 0, 3]
    assert [shard_of(seed_id, 7) for seed_id in ("a", "id-42", "ü")] == [2, 4, 3]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"generation": "zero", "round": "first"}, "wrong generation, round"),
        (
            {"generation": "zero", "instruction": None, "output": None},
            "wrong generation; missing instruction, output",
        ),
    ],
)
def test_a_damaged_record_is_named_with_every_field_at_fault(
    evol, small_run: Path, tmp_path: Path, change: dict[str, Any], why: str
) -> None:
    path = small_run / "gen_1.jsonl"
    [damaged] = read_jsonl(path)
    damaged = {key: value for key, value in (damaged | change).items() if value is not None}
    path.write_text(json.dumps(damaged) + "\n")
    result = evol("export", small_run, "--out", tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"evol: error: {path}:1: not an evol record ({why})"), (
        result.stderr
    )


# -- evol stats: the contamination it reports ----------------------------------------------------


def test_stats_lists_each_contaminated_record_with_every_place_it_matched(
    evol, tmp_path: Path
) -> None:
    from tests.support.contamination import NO_LLM, WORDS, write_bench
    from tests.support.runs import record, write_run

    copied = " ".join(WORDS)
    run = write_run(
        tmp_path / "run",
        [record("s1", copied), record("s2", "Name a river."), record("s3", f"Say: {copied}")],
    )
    first = write_bench(tmp_path / "a.jsonl", ["Nothing alike here.", copied])
    second = write_bench(tmp_path / "b.jsonl", [copied] * 6)
    scored = evol("score", run, *NO_LLM, "--against", first, "--against", second)
    assert scored.exit_code == 0, scored.output
    said = scored.stdout.splitlines()
    assert f"  {first}: 2 items, 1 shorter than 13 words" in said
    assert f"  {second}: 6 items" in said
    assert said[-1] == "  s3: 2 more items" and "  s1: 2 more items" in said
    with (run / "gen_0.jsonl").open("a") as grown:
        grown.write(json.dumps(record("s4", "Name a lake.")) + "\n")
    result = evol("stats", run)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("contaminated:"))
    assert lines[start - 1] == ""
    assert lines[start].endswith(f" share 13 words in a row with {first}, {second}"), lines[start]
    kept = ", ".join([f"{first}:2", *(f"{second}:{line}" for line in range(1, 5))])
    assert lines[start + 1 : start + 4] == [
        f"  s1: {kept}",
        f"  s3: {kept}",
        "  the run grew after this check: run evol score --against again",
    ]


# -- evol score: a record's input is part of its task, and of what its score is for ------------


def test_a_records_input_is_scored_with_it_and_a_new_input_is_scored_again(
    evol, tmp_path: Path
) -> None:
    """The scorer sees the instruction with its input (a task without its data is another
    task); a score is for that input, so a record whose input changed is asked again, and
    only it (and its lineage's ranking)."""
    rows = [
        {"instruction": "Summarize the text", "input": "Rivers carve canyons over time."},
        {"instruction": "Translate the sentence", "input": "Good morning, friends."},
    ]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    run = tmp_path / "run"
    with FakeServer() as server:
        assert evol(*run_args(server, seeds, run, "--generations", "1")).exit_code == 0
    records = [r for g in (0, 1) for r in read_jsonl(run / f"gen_{g}.jsonl")]
    assert all(r["input"].strip() for r in records) and len(records) == 4

    def score() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        with FakeServer(responder=Scores()) as server:
            result = evol(
                "score", run, "--base-url", server.base_url, "--answers", "--json", "--no-metrics"
            )
            sent = list(server.requests)
        assert result.exit_code == 0, result.output
        return sent, json.loads(result.stdout)

    sent, summary = score()
    assert len(sent) == 4 + 4 + 2  # difficulty and quality of each record, a ranking per lineage
    for body in sent:
        prompt = body["messages"][0]["content"]
        shown = [r for r in records if r["instruction"] in prompt]
        assert shown and all(r["input"] in prompt for r in shown), prompt
    for scorer in ("difficulty", "quality", "complexity"):
        assert summary["scorers"][scorer]["records_scored"] == 4, scorer

    changed = records[1]  # the first seed's evolution
    path = run / "gen_1.jsonl"
    path.write_text(
        path.read_text().replace(json.dumps(changed["input"])[1:-1], "Lakes fill slowly.")
    )
    sent, summary = score()
    prompts = [body["messages"][0]["content"] for body in sent]
    assert len(prompts) == 3 and all("Lakes fill slowly." in prompt for prompt in prompts)
    assert summary["scorers"]["difficulty"]["records_scored"] == 4


class Sevens(Scores):
    """Another judge: 7 for every single score, none for the [mute] task's."""

    def __call__(self, body: dict[str, Any]) -> str:
        if '<version id="' in body["messages"][0]["content"]:
            return super().__call__(body)
        return UNREADABLE if "[mute]" in body["messages"][0]["content"] else "7"


def test_a_second_models_summary_is_of_its_own_scores(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """Scores of two models in one scores.jsonl: the summary of a scoring is of its model's,
    even where the other model's lines come first and give more scores."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    common = ("--json", "--no-metrics", "--no-complexity", "--max-retries", "0")
    with FakeServer(models=("judge-a", "judge-b"), responder=Scores()) as server:
        first = evol("score", run, "--base-url", server.base_url, "--model", "judge-a", *common)
    assert first.exit_code == 0, first.output
    with FakeServer(models=("judge-a", "judge-b"), responder=Sevens()) as server:
        second = evol("score", run, "--base-url", server.base_url, "--model", "judge-b", *common)
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)["scorers"]["difficulty"]
    assert (summary["model"], summary["records_scored"], summary["mean"]) == ("judge-b", 3, 7.0)


# -- evol score without log-probabilities --------------------------------------------------------

LOGPROBS_REFUSED = "logprobs are not supported by this model"


def test_without_logprobs_a_scorer_still_asks_at_temperature_0_within_its_token_cap(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """The step down drops only the log-probabilities: the requests after it are as
    deterministic and as short as before, the user is told once, and every score says it
    was read from the text."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    refusal = Fault("status", 400, message=LOGPROBS_REFUSED)
    with FakeServer(
        responder=Scores(), faults=lambda body: refusal if body.get("logprobs") else None
    ) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--concurrency", "1",
        )  # fmt: skip
        sent = list(server.requests)
    assert result.exit_code == 0, result.output
    first, *after = sent
    assert first["logprobs"] and first["temperature"] == 0
    assert after and all(not body.get("logprobs") for body in after)
    assert all(
        body["temperature"] == 0 and body["max_tokens"] == first["max_tokens"] for body in after
    )
    told = [line for line in result.stderr.splitlines() if "refused log-probabilities" in line]
    assert (
        len(told) == 1
        and LOGPROBS_REFUSED in told[0]
        and "difficulty goes on without them" in told[0]
    )
    lines = read_jsonl(run / "scores.jsonl")
    assert lines and all(line["source"] == "text" for line in lines if line["score"] is not None)
    muted = next(line for line in lines if line["asked"] == 2)
    assert muted["reply"].startswith(f"{UNREADABLE}\n---\n")


def test_a_server_that_refuses_logprobs_even_without_them_is_paid_once_more_per_record(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """A refusal that names logprobs although none were asked is the request's own: it fails
    that record, it is not one more step down to pay for."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    refusal = Fault("status", 400, message=LOGPROBS_REFUSED)
    with FakeServer(responder=Scores(), faults=lambda body: refusal) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--concurrency", "1", "--json",
        )  # fmt: skip
        sent = len(server.requests)
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["scorers"]["difficulty"]["failed"] == 6
    assert sent == 1 + 6  # the first step down, then each record once without


def test_a_number_followed_by_prose_is_still_read_from_its_log_probabilities() -> None:
    """ "7 out of 10": the expected score is taken from the number's token, the words after it
    aside (Deita's score, not the text's 7)."""
    try:
        from evol.quality.readings import single_reading
    except ImportError:  # 4f7dc9e, before the quality package
        from evol.scoring import single_reading
    from evol.llm import Completion

    half = math.log(0.5)
    tokens = [{"7": half, "8": half}, {" out": 0.0}, {" of": 0.0}, {" 10": 0.0}, {".": 0.0}]
    reading = single_reading(Completion(text="7 out of 10.", top_logprobs=tokens), 10)
    assert (reading.value, reading.source) == (7.5, "logprobs")


class Unreadable(Responder):
    def __call__(self, body: dict[str, Any]) -> str:
        return UNREADABLE


LOGPROBS_REFUSAL = Fault("status", 400, message=LOGPROBS_REFUSED)


@pytest.mark.parametrize(
    ("responder", "faults"),
    [
        (Scores, None),
        (Scores, lambda body: LOGPROBS_REFUSAL if body.get("logprobs") else None),
        (Unreadable, None),
    ],
    ids=["scored", "logprobs refused", "nothing read"],
)
def test_the_score_table_shows_the_figures_of_the_json_summary_in_its_columns(
    evol, scored_run: Path, tmp_path: Path, responder: type[Responder], faults: Any
) -> None:
    """`evol score` prints, for a person, the figures `--json` gives a program: each scorer's
    row under the header, each cell starting where its column's name does."""
    runs = [tmp_path / "text", tmp_path / "json"]
    outputs = []
    for run, extra in zip(runs, [(), ("--json",)], strict=True):
        shutil.copytree(scored_run, run)
        with FakeServer(responder=responder(), faults=faults) as server:
            result = evol("score", run, "--base-url", server.base_url, "--no-metrics", *extra)
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout)
    text, summary = outputs[0].splitlines(), json.loads(outputs[1])
    assert text[0] == f"{runs[0]}: complete"
    header = [
        "scorer",
        "model",
        "now",
        "missing",
        "already",
        "failed",
        "logprobs",
        "records",
        "mean",
    ]
    assert text[1].split() == header
    starts = [text[1].index(name) for name in header]
    rows = text[2 : 2 + len(summary["scorers"])]
    for line, (name, s) in zip(rows, summary["scorers"].items(), strict=True):
        cells = [
            name, s["model"], str(s["scored"]), str(s["missing"]), str(s["already"]),
            str(s["failed"]), "refused" if s["logprobs_refused"] else str(s["from_logprobs"]),
            str(s["records_scored"]), "-" if s["mean"] is None else f"{s['mean']:.2f}",
        ]  # fmt: skip
        assert line.split() == cells and line == line.rstrip(), line
        assert [
            line.index(cell, start) for cell, start in zip(cells, starts, strict=True)
        ] == starts
    assert text[2 + len(rows)] == (
        "(counted in records, each version of a lineage for complexity; failed: calls)"
    )


def test_a_server_that_cannot_say_which_model_it_serves_is_named_as_the_step_that_failed(
    evol, scored_run: Path
) -> None:
    """Without --model, evol score asks the server for its model first: a failure there says
    so, rather than leave the user to guess which call failed."""
    from tests.support.hostile_server import HostileServer, response

    async def unavailable(request, writer) -> bool:
        writer.write(response("503 Service Unavailable", b'{"error": {"message": "busy"}}'))
        return True

    with HostileServer(unavailable) as server:
        result = evol(
            "score", scored_run, "--base-url", server.base_url, "--max-retries", "0",
            "--no-metrics", "--quiet",
        )  # fmt: skip
        chats = len(server.chat_requests())
    assert result.exit_code != 0 and chats == 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("evol: error: ") and line.endswith(" (asking it which model it serves)")
    assert "503" in line, line


def test_a_key_revoked_before_the_ask_again_stops_the_scoring_and_records_nothing(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    """A fatal error (here a 401) on the second ask of a [mute] record stops the scoring like
    on any ask; that record's line is not written as missing, so the next run asks again."""
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    revoked = Fault("status", 401, message="Incorrect API key provided")
    with FakeServer(
        responder=Scores(), faults=lambda body: revoked if len(body["messages"]) > 1 else None
    ) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--concurrency", "1", "--quiet",
        )  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = read_jsonl(run / "scores.jsonl") if (run / "scores.jsonl").exists() else []
    assert all(line["score"] is not None for line in lines), lines


def test_a_scoring_says_what_it_will_ask_and_which_record_failed(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    records = [r for g in (0, 1, 2) for r in read_jsonl(run / f"gen_{g}.jsonl")]
    broken = Fault("status", 500)
    with FakeServer(responder=Scores(), faults=lambda body: broken) as server:
        result = evol(
            "score", run, "--base-url", server.base_url, "--no-complexity", "--no-metrics",
            "--max-retries", "0",
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    said = result.stderr
    assert f"backend openai, model fake-model: {len(records)} calls to make" in said
    for r in records:
        assert f"difficulty of {r['id']} failed after retries: " in said, r["id"]


def test_a_second_scoring_with_the_model_named_says_there_is_nothing_to_ask(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    command = ("score", run, "--no-complexity", "--no-metrics", "--model", "fake-model")
    with FakeServer(responder=Scores()) as server:
        assert evol(*command, "--base-url", server.base_url).exit_code == 0
        again = evol(*command, "--base-url", server.base_url)
        assert again.exit_code == 0, again.output
        assert again.stderr == "evol: every record is scored already: nothing to ask\n"


# -- the judge's prose: what a clause decides -------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        # A question decides nothing, even one that names a verdict.
        ("Are the two instructions the same?", "UNCLEAR"),
        # Negation by a contraction.
        ("They aren't equal.", "DIFFERENT"),
        ("The second isn't equivalent to the first.", "DIFFERENT"),
        # A likeness of one aspect, two words either side, is no verdict...
        ("Tone same.", "UNCLEAR"),
        ("Wording the same.", "UNCLEAR"),
        ("The words are identical.", "UNCLEAR"),
        ("The length is the same but the task is different.", "UNCLEAR"),
        ("they are the same tone and different", "UNCLEAR"),
        ("Different in topic wording but equal.", "UNCLEAR"),
        ("The first and second share topic but differ.", "UNCLEAR"),
        # ...and does not hide a verdict elsewhere in the clause, nor one further off.
        ("they differ in tone only and are equal", "EQUAL"),
        ("same subject matter entirely and equal", "EQUAL"),
        ("The rewrite is the same apart from style.", "EQUAL"),
        ("It is identical save for tone.", "EQUAL"),
    ],
)
def test_a_judges_prose_is_read_clause_by_clause(reply: str, verdict: str) -> None:
    """The judge decides whether an evolution is kept: a misread "equal" drops it, a misread
    "different" keeps a copy."""
    try:
        from evol.method.verdicts import parse_verdict
    except ImportError:  # 4f7dc9e, before the method package
        from evol.elimination import parse_verdict

    assert parse_verdict(reply).name == verdict


# -- evol stats: what the run cost --------------------------------------------------------------


@pytest.mark.parametrize(("price_in", "price_out"), [(1_000_000, 2_000_000), (0.3, 0.7)])
def test_a_runs_cost_is_its_tokens_at_the_prices_per_million_to_the_micro_dollar(
    evol, scored_run: Path, price_in: float, price_out: float
) -> None:
    result = evol("stats", scored_run, "--price-in", price_in, "--price-out", price_out, "--json")
    assert result.exit_code == 0, result.output
    roles = json.loads(result.stdout)["roles"]
    for name, role in roles.items():
        paid = role["prompt_tokens"] * price_in + role["completion_tokens"] * price_out
        assert role["cost_usd"] == round(paid / 1_000_000, 6), name


def test_with_one_price_of_two_for_a_model_without_a_price_the_cost_is_unknown(
    evol, scored_run: Path
) -> None:
    result = evol("stats", scored_run, "--price-in", "3", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total_cost_usd"] is None
    assert all(role["cost_usd"] is None for role in summary["roles"].values())


# -- evol run --batch: a look at another run's batches changes nothing ----------------------------


def test_the_check_for_a_runs_batches_leaves_a_line_being_written_alone(
    evol, tmp_path: Path
) -> None:
    """Before it takes the run's lock, `evol run` reads the batch state to refuse what would
    pay again. A `--batch` run may be writing that file's last line right then: the check
    must not cut it as torn, or the batch it records would be forgotten, and paid again."""
    from tests.support.batch_server import BatchServer

    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Write a haiku about the sea"}])
    out = tmp_path / "batch"
    fast = ("--batch-poll-interval", "0.05", "--retry-max-wait", "0.05", "--model", "fake-model")
    with BatchServer(hold=True) as server, FakeServer() as live:
        made = evol(
            "run", seeds, "--out", out, "--base-url", server.base_url, "--batch", *fast,
            "--batch-no-wait", "--quiet",
        )  # fmt: skip
        assert made.exit_code == 3, made.output
        state = out / "batch" / "batches.jsonl"
        with state.open("ab") as writing:
            writing.write(b'{"event": "created", "ba')  # the other run, mid-line
        before = state.read_bytes()
        resumed = evol(
            "run", seeds, "--out", out, "--base-url", live.base_url, "--model", "fake-model",
            "--generations", "2", "--quiet",
        )  # fmt: skip
        assert resumed.exit_code == 2 and not live.requests
        assert state.read_bytes() == before


# -- NO_PROXY: the default port, and empty entries ---------------------------------------------


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        ("example.com:80", "http://example.com/v1", True),
        ("example.com:443", "https://example.com/v1", True),
        ("example.com:443", "http://example.com/v1", False),
        ("example.com:80", "https://example.com/v1", False),
        (" , ,example.com", "http://example.com/v1", True),
        ("other.org,,example.com", "http://example.com/v1", True),
    ],
)
def test_a_no_proxy_entry_with_a_port_matches_a_url_on_its_schemes_default_port(
    no_proxy: str, url: str, direct: bool
) -> None:
    """A URL without a port is on 80 (http) or 443 (https), as curl and httpx2 read it; an
    empty entry (a stray comma) is passed over, not the end of the list."""
    from evol.llm.transport import proxy_for

    assert (proxy_for(url, {"all": "http://p:1", "no": no_proxy}) is None) == direct


# -- cleaning a rewrite: quotes come off only as one pair, and nothing of the task with them ----

COPIED = "The river carved a deep canyon over many years."


@pytest.mark.parametrize(
    ("reply", "input_text", "rewrite"),
    [
        # The outer quotes are one pair only when the inner ones open and close in turn.
        (
            '"Write "" for an empty value in the table"',
            "",
            'Write "" for an empty value in the table',
        ),
        ('"Translate "x "a"b" y" into French"', "", '"Translate "x "a"b" y" into French"'),
        ('""Hello" is a greeting, and "bye"', "", '""Hello" is a greeting, and "bye"'),
        # In single quotes, an apostrophe within or at the end of a word is no quote...
        ("'Explain Rutherford's model of the atom'", "", "Explain Rutherford's model of the atom"),
        ("'I'm told to list three rivers'", "", "I'm told to list three rivers"),
        ("'Summarize O'Neill's first play'", "", "Summarize O'Neill's first play"),
        ("'Explain the laws of Newton's'", "", "Explain the laws of Newton's"),
        ("'Grade the students' essays fairly'", "", "Grade the students' essays fairly"),
        # ...but a quote that opens and never closes, or one doubled at an end, is.
        ("'Explain Rutherford's 'model'", "", "'Explain Rutherford's 'model'"),
        ("''hello' is how the letter starts'", "", "''hello' is how the letter starts'"),
        ("'Grade the essays of the students''", "", "'Grade the essays of the students''"),
        # A quote opens after a space or a bracket, or at the very start.
        ('""Hi" is what she said first"', "", '"Hi" is what she said first'),
        ('"See X"Y" in the table"', "", '"See X"Y" in the table"'),
        # Emphasis marks inside: the outer ones are not one pair either.
        ("*Explain *why* the sky is blue*", "", "*Explain *why* the sky is blue*"),
        # A copy of the input after the rewrite goes; the rewrite's own last character stays.
        (
            f"Summarize the passage in two lines :{COPIED}",
            COPIED,
            "Summarize the passage in two lines :",
        ),
        (
            f"Summarize the passage in two lines.\n\nInput:\n```\n{COPIED}\n```",
            COPIED,
            "Summarize the passage in two lines.",
        ),
        (
            "Summarize the passage in two lines.\n\nInput:\n```text\nN/A\n```",
            "",
            "Summarize the passage in two lines.",
        ),
    ],
)
def test_a_rewrite_loses_its_wrappers_and_nothing_of_its_own(
    reply: str, input_text: str, rewrite: str
) -> None:
    try:
        from evol.method.cleaning import clean_rewrite
    except ImportError:  # 4f7dc9e, before the method package
        from evol.cleaning import clean_rewrite

    assert clean_rewrite(reply, input_text).text == rewrite


def test_a_run_another_process_writes_is_not_scored_and_the_user_is_told_when_to(
    evol, scored_run: Path, tmp_path: Path
) -> None:
    from filelock import FileLock

    run = tmp_path / "run"
    shutil.copytree(scored_run, run)
    with FileLock(run / ".evol.lock"):  # the lock an evol run holds while it writes
        result = evol("score", run, "--no-complexity", "--no-metrics", "--model", "m")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {run}: another evol process is writing to this directory; score it "
        "when it has stopped\n"
    )


# -- a CSV header without an instruction column: which columns the refusal shows -----------------


@pytest.mark.parametrize(
    ("columns", "shown"),
    [
        (
            [*(f"c{i}" for i in range(1, 8)), "y" * 40],
            ", ".join([*(f"'c{i}'" for i in range(1, 8)), f"'{'y' * 40}'"]),
        ),
        (
            [f"c{i}" for i in range(1, 10)],
            ", ".join(f"'c{i}'" for i in range(1, 9)) + " and 1 more",
        ),
        (
            [f"c{i}" for i in range(1, 9)] + ["z" * 41],
            ", ".join(f"'c{i}'" for i in range(1, 9)) + " and 1 more",
        ),
    ],
    ids=["eight, one of 40 characters", "nine", "nine, the last long"],
)
def test_a_header_without_an_instruction_column_is_shown_up_to_eight_columns(
    evol, tmp_path: Path, columns: list[str], shown: str
) -> None:
    seeds = tmp_path / "seeds.csv"
    seeds.write_text(",".join(columns) + "\n" + ",".join("v" for _ in columns) + "\n")
    result = evol("run", seeds, "--out", tmp_path / "run", "--dry-run")
    assert result.exit_code == 2
    assert f"the CSV header has no instruction column: found {shown}; it must name" in result.stderr


def test_a_run_json_without_a_status_is_exported_with_a_warning_that_says_so(
    evol, small_run: Path, tmp_path: Path
) -> None:
    manifest = json.loads((small_run / "run.json").read_text())
    del manifest["status"]
    (small_run / "run.json").write_text(json.dumps(manifest))
    result = evol("export", small_run, "--out", tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"evol: warning: {small_run} is unknown: exporting the 2 records written so far\n"
    )


def test_a_merged_run_counts_the_retries_of_every_shard(evol, tmp_path: Path) -> None:
    from evol.seeds import shard_of

    ids = [next(f"p{n}" for n in range(100) if shard_of(f"p{n}", 2) == s) for s in (0, 1)]
    seeds = write_seeds(
        tmp_path / "seeds.jsonl",
        [{"id": i, "instruction": f"Explain idea {i} of gardening"} for i in ids],
    )
    shard_dirs = [tmp_path / f"shard-{i}" for i in range(2)]
    for index, out in enumerate(shard_dirs):
        faults = scripted(Fault("status", 500), Fault("status", 503))
        with FakeServer(faults=faults) as server:
            options = ("--generations", "1", "--shard", f"{index}/2", "--retry-max-wait", "0.01")
            assert evol(*run_args(server, seeds, out, *options)).exit_code == 0
    merged(evol, shard_dirs, tmp_path / "merged")
    retries = [json.loads((d / "run.json").read_text())["retries"] for d in shard_dirs]
    assert all(retries)
    total = Counter(retries[0]) + Counter(retries[1])
    assert json.loads((tmp_path / "merged" / "run.json").read_text())["retries"] == dict(total)


def test_a_shuffled_export_is_the_same_file_for_the_same_seed_on_any_machine(
    evol, tmp_path: Path
) -> None:
    """docs/export.md: "the same seed, the same files". The order is seeded by the seed and
    the part (none here), so a dataset exported again elsewhere, or by a later evol, is the
    same file."""
    from tests.support.runs import record, write_run

    run = write_run(tmp_path / "run", [record(f"s{i}", f"Name river {i}.") for i in range(8)])
    out = tmp_path / "out.jsonl"
    result = evol("export", run, "--out", out, "--format", "jsonl", "--shuffle", "--seed", "3")
    assert result.exit_code == 0, result.output
    order = [row["id"] for row in read_jsonl(out)]
    assert order == ["s6", "s7", "s2", "s3", "s4", "s1", "s0", "s5"]
