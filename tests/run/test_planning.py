"""`evol validate` and `evol run --dry-run`: facts about the work before any call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.fake_server import FakeServer
from tests.support.runs import run_args, write_seeds
from tests.support.verifiable import SEEDS

ROWS = [
    {"instruction": "Name a river", "topic": "geo"},
    {"instruction": "Summarize this", "input": "Cats nap.", "topic": "reading"},
    {"instruction": "Add 2 and 3", "output": "5"},
]


def test_validate_reports_what_the_file_holds(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", ROWS)
    report = json.loads(evol("validate", seeds, "--json").stdout)
    assert (report["seeds"], report["with_input"], report["with_output"]) == (3, 1, 1)
    assert report["metadata_fields"] == {"topic": 2}
    words = sorted(len(row["instruction"].split()) for row in ROWS)
    assert words == [2, 3, 4]
    assert report["instruction_words"] == {"mean": 3.0, "p50": 3.0, "p90": 3.8, "max": 4}
    text = evol("validate", seeds).stdout
    assert text.startswith(f"{seeds}: 3 valid seeds (jsonl)") and "topic (2)" in text


def test_validate_stops_at_a_bad_row_or_lists_them(evol, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"instruction": "ok"}\n{"instruction": 1}\nnope\n')
    strict = evol("validate", seeds)
    assert strict.exit_code == 2
    assert (
        strict.stderr.strip()
        == f"evol: error: {seeds}:2: 'instruction' must be a string, got a number"
    )
    lenient = evol("validate", seeds, "--skip-invalid")
    assert lenient.exit_code == 0
    assert (
        "skipped line 2: 'instruction' must be a string" in lenient.stdout
        and "skipped line 3: invalid JSON" in lenient.stdout
    )


def test_dry_run_counts_the_calls_and_calls_nothing(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", ROWS), tmp_path / "run"
    common = ["--out", out, "--base-url", server.base_url, "--model", "fake-model", "--quiet"]
    plan = json.loads(
        evol("run", seeds, *common, "--generations", "3", "--dry-run", "--json").stdout
    )
    assert server.requests == [] and not out.exists()
    # Two seeds lack an output; each of 3 seeds x 3 rounds is an evolve, an answer and a judge.
    expected = {"evolve": 9, "answer": 2 + 9, "judge": 9}
    assert {role: item["calls"] for role, item in plan["roles"].items()} == expected
    assert plan["calls"] == 29 and plan["steps_done"] == 0 and plan["cost_usd"] is None

    # The fake server keeps every evolution, so the real run makes exactly the bound.
    assert evol("run", seeds, *common, "--generations", "1").exit_code == 0
    assert len(server.requests) == 2 + 3 * 3
    more = json.loads(
        evol("run", seeds, *common, "--generations", "3", "--dry-run", "--json").stdout
    )
    assert more["steps_done"] == 3 + 3 and more["calls"] == 3 * 2 * 3
    assert {role: item["calls"] for role, item in more["roles"].items()} == {
        "evolve": 6,
        "answer": 6,
        "judge": 6,
    }

    priced = json.loads(
        evol(
            "run",
            seeds,
            *common,
            "--generations",
            "3",
            "--no-judge",
            "--dry-run",
            "--json",
            "--price-in",
            "1",
            "--price-out",
            "2",
        ).stdout
    )
    assert "judge" not in priced["roles"]
    for item in priced["roles"].values():
        assert item["cost_usd"] == round(
            (item["prompt_tokens"] + 2 * item["completion_tokens"]) / 1e6, 6
        )
    assert priced["cost_usd"] == round(
        sum(item["cost_usd"] for item in priced["roles"].values()), 6
    )
    text = evol("run", seeds, *common, "--generations", "3", "--dry-run").stdout
    assert "at most 18 calls" in text


def test_dry_run_uses_the_price_table_for_known_models(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", ROWS)
    result = evol(
        "run",
        seeds,
        "--out",
        tmp_path / "run",
        "--backend",  # with no API configured, the embedded model runs: free
        "openai",
        "--model",
        "gpt-4o-mini",
        "--max-tokens",
        "100",
        "--dry-run",
        "--json",
    )
    plan = json.loads(result.stdout)
    answer = plan["roles"]["answer"]
    assert answer["completion_tokens"] == answer["calls"] * 100
    assert answer["cost_usd"] == round(
        (answer["prompt_tokens"] * 0.15 + answer["completion_tokens"] * 0.60) / 1e6, 6
    )


@pytest.mark.parametrize(
    ("urls", "key", "warned"),
    [
        ([], None, "api.openai.com"),  # the openai backend's default
        (["https://api.openai.com/v1"], None, "api.openai.com"),
        (["https://my-res.openai.azure.com/openai/deployments/x"], None, "my-res.openai.azure.com"),
        (["https://api.mistral.ai/v1"], None, "api.mistral.ai"),
        (["https://api.openai.com/v1"], "sk-x", None),
        (["http://localhost:8000/v1"], None, None),  # a local server takes any key
        (["https://notapi.openai.com.evil.example/v1"], None, None),
    ],
)
def test_a_hosted_api_without_a_key_is_warned_about_once(
    evol, tmp_path: Path, urls: list[str], key: str | None, warned: str | None
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a bird"}])
    options = [option for url in urls for option in ("--base-url", url)]
    options += ["--backend", "openai", "--model", "gpt-4o-mini"] + (
        ["--api-key", key] if key else []
    )
    result = evol("run", seeds, "--out", tmp_path / "run", "--dry-run", *options)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    if warned:
        assert warnings == [f"warning: no API key for {warned}: set OPENAI_API_KEY (or --api-key)"]
    else:
        assert warnings == []


TWO_SEEDS = [{"instruction": f"Task {i}: explain the idea"} for i in range(2)]


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        (["--base-url", "http://127.0.0.1:9/v1", "--base-url", "http://127.0.0.1:10/v1"],
         "--batch takes one --base-url"),
        (["--base-url", "http://127.0.0.1:9/v1", "--rpm", "10"], "--rpm and --tpm pace live"),
        (["--base-url", "http://127.0.0.1:9/v1", "--backend", "openai-sdk"],
         "it works with the openai backend, not with --backend openai-sdk"),
    ],
)  # fmt: skip
def test_a_dry_run_of_batch_refuses_what_the_run_refuses(
    evol, tmp_path: Path, extra: list[str], refusal: str
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", TWO_SEEDS), tmp_path / "run"
    real = evol("run", seeds, "--out", out, "--batch", *extra)
    assert real.exit_code == 2 and refusal in real.stderr
    dry = evol("run", seeds, "--out", out, "--batch", "--dry-run", *extra)
    assert dry.exit_code == 2
    assert refusal in dry.stderr
    assert not out.exists()


def test_a_dry_run_of_batch_names_the_backend_the_run_uses(evol, tmp_path: Path) -> None:
    """With nothing configured, --batch runs the openai backend at api.openai.com; its dry run
    planned the embedded model, '$0 (free: runs on this machine) at the Batch API rate'."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", TWO_SEEDS), tmp_path / "run"
    dry = evol("run", seeds, "--out", out, "--batch", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "backend openai" in dry.stdout
    assert "free" not in dry.stdout
    assert "no API key for api.openai.com" in dry.stdout + dry.stderr


@pytest.mark.parametrize("command", ["run", "score"])
@pytest.mark.parametrize("option", ["--rpm", "--tpm"])
def test_an_endless_budget_is_refused_not_taken_for_no_cap(
    evol, tmp_path: Path, command: str, option: str
) -> None:
    """`inf` parses as a number above the option's minimum; a budget must be finite."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", TWO_SEEDS), tmp_path / "run"
    target = [seeds, "--out", out] if command == "run" else [out]
    if command == "score":
        out.mkdir()
    result = evol(command, *target, "--base-url", "http://127.0.0.1:9/v1", option, "inf")
    assert result.exit_code == 2, result.output
    assert "finite" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.usefixtures("private_cache")
def test_a_dry_run_counts_every_answer_sampling_may_draw(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "s.jsonl", SEEDS[:2])
    with FakeServer() as server:
        plain = evol(*run_args(server, seeds, tmp_path / "a", "--dry-run", "--json"))
        sampled = evol(*run_args(
            server, seeds, tmp_path / "b", "--dry-run", "--json", "--verifiable",
            "--answer-attempts", "2",
        ))  # fmt: skip
    answers = [json.loads(r.stdout)["roles"]["answer"]["calls"] for r in (plain, sampled)]
    assert answers == [2 + 2 * 4, 2 + 2 * 4 * 3]  # the seeds', then 1 + 2 per evolution
