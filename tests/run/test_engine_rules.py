"""The engine's promises, on the engine itself: which calls a step pays for and with which model
and settings, what a kept or eliminated record holds, how the judge and the answer rules
combine, what a failure of each kind costs, and that a journalled reply is never paid again.

A scripted backend that satisfies the `ChatBackend` Protocol answers in-process (pure engine
logic, no HTTP: the CLI tests do the same against the fake server). The run directory is opened
as `evol run` opens it (evol.pipeline): the store, its records read into the lineage index, and
the call journal of the steps not recorded yet.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from evol.config import JUDGE_DEFAULTS, RoleParams, RunConfig
from evol.engine import Engine, EngineStats, FailedItem, RoleModels
from evol.errors import (
    AuthenticationFailed,
    BackendError,
    ContextLengthExceeded,
    EndpointUnreachable,
    RateLimited,
    TransientBackendError,
    Unreachable,
)
from evol.llm import ChatBackend, Completion, GenerationParams, LLMRequest, Message
from evol.method.dedup import DuplicateIndex
from evol.method.elimination import EliminationRules
from evol.method.judging import VERDICT_FORMAT
from evol.method.operations import choose_operation, parse_weights
from evol.method.prompts import PromptSet
from evol.rundir.journal import CallJournal
from evol.rundir.layout import JOURNAL
from evol.rundir.lineage import LineageIndex
from evol.rundir.manifest import load_manifest, write_manifest
from evol.rundir.records import compose
from evol.rundir.runjson import Manifest, RecordedConfig
from evol.rundir.store import RunStore
from evol.seeds import Seed
from tests.support.runs import read_jsonl

MODELS = RoleModels(evolve="the-evolver", answer="the-answerer", judge="the-judge")
PROMPTS = PromptSet.load()
Reply = str | Completion | BaseException


def kind_of(messages: list[Message]) -> str:
    first = next(m["content"] for m in messages if m["role"] == "user")
    return "judge" if "<first>" in first else "evolve" if "<instruction>" in first else "answer"


def instruction_in(messages: list[Message]) -> str:
    prompt = messages[0]["content"]
    return prompt.partition("<instruction>\n")[2].partition("\n</instruction>")[0]


def plain(kind: str, messages: list[Message]) -> Reply:
    """Rewrites add a clause, the judge says Not equal, answers are plain."""
    if kind == "evolve":
        return instruction_in(messages) + " Give two examples."
    return "Not equal" if kind == "judge" else "Light bends when it enters water, slowing down."


@dataclass
class ScriptedBackend:
    """Answers each request with what `script(kind, messages)` returns, or raises it."""

    script: Callable[[str, list[Message]], Reply] = plain
    calls: list[tuple[str, str, GenerationParams, list[Message]]] = field(default_factory=list)

    async def complete(self, request: LLMRequest) -> Completion:
        messages, model, params = request.messages, request.model, request.params
        kind = kind_of(messages)
        self.calls.append((kind, model, params, messages))
        reply = self.script(kind, messages)
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply
        return Completion(
            text=reply,
            prompt_tokens=100,
            completion_tokens=len(reply.split()),
            finish_reason="stop",
        )

    async def default_model(self) -> str:
        return "scripted"

    async def aclose(self) -> None:
        return None

    def kinds(self) -> list[str]:
        return [kind for kind, *_ in self.calls]


@dataclass
class Outcome:
    kept: dict[str, dict[str, Any]]
    eliminated: dict[str, dict[str, Any]]
    stats: EngineStats
    backend: ScriptedBackend
    steps: int
    out: Path
    engine: Engine


def evolve(
    out: Path,
    seeds: list[Seed],
    script: Callable[[str, list[Message]], Reply] = plain,
    *,
    generations: int = 1,
    pool: DuplicateIndex | None = None,
    **options: Any,
) -> Outcome:
    """Run the engine over `seeds` into the run directory `out` (opened, or reopened)."""
    options.setdefault("operations", {"deepen": 1.0})
    options.setdefault("concurrency", 1)
    config = RunConfig(seeds=out / "seeds.jsonl", out=out, generations=generations, **options)
    backend = ScriptedBackend(script)
    assert isinstance(backend, ChatBackend)
    store, journal, lineages = open_run(out, generations)
    steps = 0

    def step() -> None:
        nonlocal steps
        steps += 1

    engine = Engine(
        backend=backend,
        prompts=PROMPTS,
        store=store,
        journal=journal,
        lineages=lineages,
        models=MODELS,
        config=config,
        pool=pool,
        on_step=step,
    )
    try:
        stats = asyncio.run(engine.run(seeds))
    finally:
        journal.close()
        store.close()
    kept = {r["id"]: r for path in sorted(out.glob("gen_*.jsonl")) for r in read_jsonl(path)}
    eliminated = {r["id"]: r for r in read_jsonl(out / "eliminated.jsonl")}
    return Outcome(kept, eliminated, stats, backend, steps, out, engine)


def open_run(out: Path, generations: int) -> tuple[RunStore, CallJournal, LineageIndex]:
    """Open (or reopen) a run directory as `evol run` does: lock it, write a manifest the first
    time, read its records into the lineage index, then open the journal of unrecorded steps."""
    store = RunStore.open(out, generations=generations, overwrite=False)
    if load_manifest(out, required=False) is None:
        write_manifest(out, Manifest(config=RecordedConfig(generations=generations)))
    lineages, recorded = LineageIndex(generations), set[str]()
    store.scan(also=[lineages.add, lambda data, _reason: recorded.add(data["id"])])
    return store, CallJournal.open(out / JOURNAL, recorded), lineages


def seed(number: int = 1, instruction: str = "Explain why the sky is blue", **fields: Any) -> Seed:
    return Seed(id=f"s{number}", line=number, instruction=instruction, **fields)


# -- what a step pays for, and what its record holds ------------------------------------------


def test_each_role_calls_its_own_model_with_its_own_settings(tmp_path: Path) -> None:
    params = RoleParams(
        evolve=GenerationParams(temperature=0.9),
        answer=GenerationParams(max_tokens=50),
        judge=JUDGE_DEFAULTS,
    )
    result = evolve(tmp_path / "run", [seed()], params=params)
    sent = {(kind, model, json.dumps(p.to_request())) for kind, model, p, _ in result.backend.calls}
    # The judge is asked for its verdict in a schema, with the judge's own settings.
    judge = JUDGE_DEFAULTS.to_request() | {"response_format": VERDICT_FORMAT}
    assert sent == {
        ("answer", "the-answerer", json.dumps({"max_tokens": 50})),
        ("evolve", "the-evolver", json.dumps({"temperature": 0.9})),
        ("judge", "the-judge", json.dumps(judge)),
    }
    assert result.stats.requests == {"answer": 2, "evolve": 1, "judge": 1}


def test_a_kept_seed_and_a_kept_evolution_hold_exactly_this(tmp_path: Path) -> None:
    first = seed(instruction="Sort the table", input="a, 3\nb, 1", metadata={"topic": "data"})
    result = evolve(tmp_path / "run", [first])
    answer = "Light bends when it enters water, slowing down."
    assert result.kept["s1"] == {
        "id": "s1",
        "parent_id": None,
        "root_id": "s1",
        "generation": 0,
        "round": 0,
        "operation": None,
        "instruction": "Sort the table",
        "input": "a, 3\nb, 1",
        "output": answer,
        "judge": None,
        "metadata": {"topic": "data"},
        "usage": {"answer": {"prompt_tokens": 100, "completion_tokens": 8}},
        "detail": None,
    }
    assert result.kept["s1.1"] == {
        "id": "s1.1",
        "parent_id": "s1",
        "root_id": "s1",
        "generation": 1,
        "round": 1,
        "operation": "deepen",
        "instruction": "Sort the table Give two examples.",
        "input": "a, 3\nb, 1",  # an in-depth rewrite keeps its parent's input
        "output": answer,
        "judge": "different",
        "metadata": {},
        "usage": {
            "evolve": {"prompt_tokens": 100, "completion_tokens": 6},
            "answer": {"prompt_tokens": 100, "completion_tokens": 8},
            "judge": {"prompt_tokens": 100, "completion_tokens": 2},
        },
        "detail": None,
    }
    assert result.eliminated == {} and result.steps == 2
    # What each call was sent: the seed's instruction with its input, in its roles' prompts.
    evolve_prompt = next(m for kind, _, _, m in result.backend.calls if kind == "evolve")
    assert evolve_prompt == [
        {"role": "user", "content": PROMPTS.evolve_prompt("deepen", "Sort the table", "a, 3\nb, 1")}
    ]
    judge_prompt = next(m for kind, _, _, m in result.backend.calls if kind == "judge")
    both = (
        compose("Sort the table", "a, 3\nb, 1"),
        compose(result.kept["s1.1"]["instruction"], "a, 3\nb, 1"),
    )
    assert judge_prompt == [{"role": "user", "content": PROMPTS.judge_prompt(*both)}]
    answers = [m for kind, _, _, m in result.backend.calls if kind == "answer"]
    assert answers == [
        [{"role": "user", "content": "Sort the table\n\na, 3\nb, 1"}],
        [{"role": "user", "content": "Sort the table Give two examples.\n\na, 3\nb, 1"}],
    ]


def test_a_breadth_rewrite_is_a_new_instruction_without_the_old_input(tmp_path: Path) -> None:
    result = evolve(tmp_path / "run", [seed(input="some data")], operations={"breadth": 1.0})
    assert result.kept["s1.1"]["input"] == "" and result.kept["s1.1"]["operation"] == "breadth"
    prompt = next(m for kind, _, _, m in result.backend.calls if kind == "evolve")[0]["content"]
    assert prompt == PROMPTS.evolve_prompt("breadth", "Explain why the sky is blue", "")


def test_each_round_evolves_the_tip_with_the_operation_its_id_and_round_choose(
    tmp_path: Path,
) -> None:
    weights = parse_weights(None)
    result = evolve(tmp_path / "run", [seed(3)], generations=4, operations=weights, seed=7)
    tips = ["s3", "s3.1", "s3.1.2", "s3.1.2.3"]
    expected = [choose_operation(weights, 7, tip, round_) for round_, tip in enumerate(tips, 1)]
    records = [result.kept[f"{tip}.{round_}"] for round_, tip in enumerate(tips, 1)]
    assert [r["operation"] for r in records] == expected
    assert [(r["parent_id"], r["generation"], r["round"]) for r in records] == [
        (tip, round_, round_) for round_, tip in enumerate(tips, 1)
    ]
    assert result.steps == 5


def test_after_an_eliminated_round_the_next_one_evolves_the_same_parent(tmp_path: Path) -> None:
    rewrites = iter(["Explain it, as the given prompt asks"])  # then plain ones

    def script(kind: str, messages: list[Message]) -> Reply:
        return (
            next(rewrites, None) or plain(kind, messages)
            if kind == "evolve"
            else plain(kind, messages)
        )

    result = evolve(tmp_path / "run", [seed()], script, generations=2)
    assert result.eliminated["s1.1"]["reason"] == "prompt_leak"
    assert set(result.eliminated["s1.1"]["usage"]) == {"evolve"}  # nothing else was paid
    assert result.backend.kinds() == ["answer", "evolve", "evolve", "judge", "answer"]
    second = result.kept["s1.2"]
    assert (second["parent_id"], second["generation"], second["round"]) == ("s1", 1, 2)
    assert result.steps == 3


@pytest.mark.parametrize(
    ("output", "answer_seeds", "calls", "kept_output"),
    [
        (None, True, ["answer"], "Light bends when it enters water, slowing down."),
        ("The seed's own answer.", True, [], "The seed's own answer."),
        (None, False, [], None),
    ],
)
def test_a_seed_is_answered_only_when_it_has_no_answer_and_answers_are_asked_for(
    tmp_path: Path, output: str | None, answer_seeds: bool, calls: list[str], kept_output: str
) -> None:
    result = evolve(
        tmp_path / "run", [seed(output=output)], generations=0, answer_seeds=answer_seeds
    )
    assert result.backend.kinds() == calls
    assert result.kept["s1"]["output"] == kept_output and result.steps == 1


def test_a_seed_whose_answer_fails_is_eliminated_and_still_evolves(tmp_path: Path) -> None:
    def script(kind: str, messages: list[Message]) -> Reply:
        if kind == "answer" and "examples" not in messages[-1]["content"]:
            return "Sorry, I cannot."
        return plain(kind, messages)

    result = evolve(tmp_path / "run", [seed()], script)
    assert result.eliminated["s1"]["reason"] == "sorry" and result.eliminated["s1"]["round"] == 0
    assert "s1" not in result.kept and result.kept["s1.1"]["parent_id"] == "s1"
    assert result.steps == 2


# -- the judge and the answer rules -----------------------------------------------------------


def judging(*verdicts: str, answer: str | None = None) -> Callable[[str, list[Message]], Reply]:
    """The judge replies `verdicts` in turn; evolution answers are `answer` when given."""
    pending = list(verdicts)

    def script(kind: str, messages: list[Message]) -> Reply:
        if kind == "judge":
            return pending.pop(0)
        if kind == "answer" and answer and "examples" in messages[-1]["content"]:
            return answer
        return plain(kind, messages)

    return script


LONG = "I would need to think about this for quite a while before I could answer you properly"


@pytest.mark.parametrize(
    ("verdicts", "answer", "reason", "detail"),
    [
        (["Equal"], None, "no_information_gain", "the judge found it equal: 'Equal'"),
        (["<think>hm</think>Equal."], None, "no_information_gain", "the judge found it equal: 'Equal.'"),
        (["Hmm.", "Still hmm."], None, "judge_unclear", "no verdict in 'Hmm.' / 'Still hmm.'"),
        ([LONG, "?"], None, "judge_unclear", f"no verdict in {LONG[:80]!r} / '?'"),
        (["Hmm.", "Equal"], None, "no_information_gain", "the judge found it equal: 'Equal'"),
        (["Equal"], "Sorry, no.", "no_information_gain", "the judge found it equal: 'Equal'"),
        (["Not equal"], "Sorry, no.", "sorry", "the answer says sorry in 2 words"),
        (["Hmm.", "Not equal"], None, None, None),
    ],
)  # fmt: skip
def test_the_judge_speaks_first_then_the_answer_rules(
    tmp_path: Path, verdicts: list[str], answer: str | None, reason: str | None, detail: str | None
) -> None:
    result = evolve(tmp_path / "run", [seed()], judging(*verdicts, answer=answer))
    judged = result.backend.kinds().count("judge")
    assert judged == len(verdicts)
    if reason is None:
        assert result.kept["s1.1"]["judge"] == "different"
        return
    record = result.eliminated["s1.1"]
    assert (record["reason"], record["detail"]) == (reason, detail)
    assert record["judge"] == (
        "equal"
        if reason == "no_information_gain"
        else "different"
        if reason == "sorry"
        else "unclear"
    )


def test_an_unclear_verdict_is_asked_again_in_the_same_conversation(tmp_path: Path) -> None:
    result = evolve(tmp_path / "run", [seed()], judging("<think>x</think>Hmm.", "Not equal"))
    first, again = [m for kind, _, _, m in result.backend.calls if kind == "judge"]
    assert again == [
        *first,
        {"role": "assistant", "content": "<think>x</think>Hmm."},
        {"role": "user", "content": PROMPTS.judge_again()},
    ]
    assert result.kept["s1.1"]["usage"]["judge"] == {"prompt_tokens": 200, "completion_tokens": 3}
    journal = [json.loads(line) for line in (result.out / JOURNAL).read_text().splitlines()]
    assert [(e["item"], e["role"]) for e in journal] == [
        ("s1", "answer"),
        ("s1.1", "evolve"),
        ("s1.1", "judge"),
        ("s1.1", "judge_again"),
        ("s1.1", "answer"),
    ]
    assert journal[-2]["reply"] | {"top_logprobs": None} == {
        "top_logprobs": None,
        "text": "Not equal",
        "prompt_tokens": 100,
        "completion_tokens": 2,
        "finish_reason": "stop",
    }


def test_without_the_judge_no_verdict_is_asked_for(tmp_path: Path) -> None:
    result = evolve(tmp_path / "run", [seed()], rules=EliminationRules(judge=False))
    assert "judge" not in result.backend.kinds()
    assert result.kept["s1.1"]["judge"] is None and "judge" not in result.kept["s1.1"]["usage"]


def test_a_rewrite_that_fails_a_free_check_pays_for_nothing_more(tmp_path: Path) -> None:
    def unchanged(kind: str, messages: list[Message]) -> Reply:
        return instruction_in(messages) if kind == "evolve" else plain(kind, messages)

    result = evolve(tmp_path / "run", [seed()], unchanged)
    assert result.eliminated["s1.1"]["reason"] == "unchanged"
    assert result.backend.kinds() == ["answer", "evolve"]


def test_what_cleaning_took_off_is_said_in_the_detail(tmp_path: Path) -> None:
    def wrapped(kind: str, messages: list[Message]) -> Reply:
        if kind == "evolve":
            return f"Sure! Here is the rewritten instruction:\n{plain(kind, messages)}"
        if kind == "answer":
            return "<think>short</think>Sorry, no."
        return plain(kind, messages)

    result = evolve(tmp_path / "run", [seed(output="given")], wrapped)
    record = result.eliminated["s1.1"]
    assert record["instruction"] == "Explain why the sky is blue Give two examples."
    assert record["output"] == "Sorry, no."
    assert record["detail"] == (
        "the answer says sorry in 2 words; "
        "from the rewrite: stripped preamble 'Sure! Here is the rewritten instruction:'; "
        "from the answer: stripped a <think> block"
    )


def test_a_copy_of_the_input_comes_off_the_rewrite(tmp_path: Path) -> None:
    table = "name, age\nada, 36\nalan, 41"  # 20 characters or more: a copy is taken off

    def copying(kind: str, messages: list[Message]) -> Reply:
        if kind == "evolve":
            return f"Sort the table by age, oldest first:\n{table}"
        return plain(kind, messages)

    result = evolve(tmp_path / "run", [seed(instruction="Sort the table", input=table)], copying)
    kept = result.kept["s1.1"]
    assert (kept["instruction"], kept["input"]) == ("Sort the table by age, oldest first:", table)
    assert kept["detail"] == "from the rewrite: stripped a copy of the input"


def test_a_rewrite_that_grew_past_its_operations_bound_is_eliminated_unanswered(
    tmp_path: Path,
) -> None:
    grown = "Explain why the sky is blue " + "and why " * 30  # 6 + 60 = 66 words: allowed

    def growing(extra: int) -> Callable[[str, list[Message]], Reply]:
        def script(kind: str, messages: list[Message]) -> Reply:
            return grown + "more " * extra if kind == "evolve" else plain(kind, messages)

        return script

    allowed = evolve(tmp_path / "allowed", [seed()], growing(0))
    assert "s1.1" in allowed.kept
    result = evolve(tmp_path / "run", [seed()], growing(1))
    record = result.eliminated["s1.1"]
    assert (record["reason"], record["detail"]) == (
        "overgrown",
        "the rewrite grew from 6 to 67 words (deepen allows 66)",
    )
    assert result.backend.kinds() == ["answer", "evolve"]


@pytest.mark.parametrize("role", ["evolve", "answer", "seed answer"])
def test_a_reply_cut_at_the_token_limit_is_never_kept(tmp_path: Path, role: str) -> None:
    def cut(kind: str, messages: list[Message]) -> Reply:
        reply = plain(kind, messages)
        seed_answer = kind == "answer" and "examples" not in messages[-1]["content"]
        target = {
            "evolve": kind == "evolve",
            "answer": kind == "answer" and not seed_answer,
            "seed answer": seed_answer,
        }[role]
        return (
            Completion(text=str(reply), completion_tokens=7, finish_reason="length")
            if target
            else reply
        )

    result = evolve(tmp_path / "run", [seed()], cut)
    item = "s1" if role == "seed answer" else "s1.1"
    what = "rewrite" if role == "evolve" else "answer"
    record = result.eliminated[item]
    assert record["reason"] == "truncated"
    assert record["detail"] == (
        f"the {what} stopped at the token limit after 7 tokens (finish_reason 'length'): "
        "raise its --*-max-tokens"
    )
    if role == "evolve":
        assert result.backend.kinds() == ["answer", "evolve"]


def test_a_system_prompt_goes_to_the_answers_only(tmp_path: Path) -> None:
    result = evolve(tmp_path / "run", [seed()], system_prompt="Be brief.")
    for kind, _, _, messages in result.backend.calls:
        roles = [m["role"] for m in messages]
        assert roles == (["system", "user"] if kind == "answer" else ["user"])
        if kind == "answer":
            assert messages[0]["content"] == "Be brief."


# -- the duplicate pool -----------------------------------------------------------------------


def test_a_rewrite_that_repeats_the_pool_is_eliminated_before_any_answer(tmp_path: Path) -> None:
    pool = DuplicateIndex()
    pool.add("t9.2", "t9", "Explain why the sky is blue Give two examples.")
    result = evolve(tmp_path / "run", [seed()], pool=pool)
    record = result.eliminated["s1.1"]
    assert (record["reason"], record["duplicate_of"], record["detail"]) == (
        "duplicate",
        "t9.2",
        "the rewrite repeats t9.2",
    )
    assert result.backend.kinds() == ["answer", "evolve"]


def test_a_kept_evolution_joins_the_pool_under_its_lineage(tmp_path: Path) -> None:
    pool = DuplicateIndex()
    evolve(tmp_path / "run", [seed()], pool=pool)
    assert len(pool) == 1
    assert pool.find("Explain why the sky is blue Give two examples.", "other") == "s1.1"
    assert pool.find("Explain why the sky is blue Give two examples.", "s1") is None


# -- failures: what each costs ----------------------------------------------------------------


def failing(role: str, error: BaseException, times: int = 1_000) -> Callable[..., Reply]:
    """`role`'s requests for the evolution of s1 (the sky) raise `error`, `times` times."""
    left = [times]

    def script(kind: str, messages: list[Message]) -> Reply:
        content = messages[-1]["content"]
        seed_answer = kind == "answer" and "examples" not in content
        if kind == role and "sky" in content and not seed_answer and left[0] > 0:
            left[0] -= 1
            return error
        return plain(kind, messages)

    return script


def test_a_step_that_keeps_failing_is_recorded_and_ends_its_lineage_for_this_run(
    tmp_path: Path,
) -> None:
    error = TransientBackendError("503 from the server", retry_after=0)
    result = evolve(
        tmp_path / "run",
        [seed(), seed(2, "Name three rivers")],
        failing("answer", error),
        generations=2,
        max_retries=2,
    )
    assert result.stats.failed == [FailedItem("s1.1", 1, "answer", "503 from the server")]
    assert result.stats.retries == {"answer": 2}
    assert "s1.1" not in result.kept and "s1.1" not in result.eliminated
    assert not any(key.startswith("s1.1.") or key == "s1.2" for key in result.kept)
    assert {"s2.1", "s2.1.2"} <= set(result.kept)  # the other lineage went on
    assert result.steps == 1 + 3  # s1's seed; s2's seed and two rounds


def test_a_transient_failure_that_clears_costs_only_its_retries(tmp_path: Path) -> None:
    error = RateLimited("429", retry_after=0)
    result = evolve(tmp_path / "run", [seed()], failing("evolve", error, times=1), max_retries=1)
    assert "s1.1" in result.kept and result.stats.failed == []
    assert result.stats.retries == {"evolve": 1} and result.stats.requests["evolve"] == 2


@pytest.mark.parametrize(
    ("role", "error", "reason", "detail"),
    [
        ("evolve", ContextLengthExceeded("the prompt is too long"), "too_long", "evolve: the prompt is too long"),
        ("judge", ContextLengthExceeded("too long"), "too_long", "judge: too long"),
        ("answer", BackendError("content filter"), "rejected", "answer: content filter"),
    ],
)  # fmt: skip
def test_a_request_refused_for_good_eliminates_its_step(
    tmp_path: Path, role: str, error: BaseException, reason: str, detail: str
) -> None:
    result = evolve(tmp_path / "run", [seed()], failing(role, error), max_retries=3)
    record = result.eliminated["s1.1"]
    assert (record["reason"], record["detail"]) == (reason, detail)
    assert result.stats.retries == {}
    # A refused rewrite has no instruction yet; a refused answer or verdict keeps the rewrite.
    rewrite = "" if role == "evolve" else "Explain why the sky is blue Give two examples."
    assert record["instruction"] == rewrite


def test_a_fatal_error_stops_the_run_and_nothing_more_is_sent(tmp_path: Path) -> None:
    seeds = [seed(), *(seed(n, f"Name {n} rivers") for n in range(2, 6))]
    with pytest.raises(AuthenticationFailed):
        evolve(tmp_path / "run", seeds, failing("evolve", AuthenticationFailed("bad key")))
    # s1's seed answer, then its evolve request failed: nothing was sent after it.
    journal = (tmp_path / "run" / JOURNAL).read_text().splitlines()
    assert [json.loads(line)["item"] for line in journal] == ["s1"]


def test_an_endpoint_that_stays_unreachable_stops_the_run_naming_the_tries(
    tmp_path: Path,
) -> None:
    error = Unreachable("connection refused by 127.0.0.1:9", retry_after=0)
    with pytest.raises(EndpointUnreachable) as raised:
        evolve(tmp_path / "run", [seed()], failing("evolve", error), max_retries=2)
    assert str(raised.value) == "connection refused by 127.0.0.1:9 (3 tries)"


def test_a_429_halves_the_requests_in_flight(tmp_path: Path) -> None:
    error = RateLimited("429", retry_after=0)
    result = evolve(
        tmp_path / "run", [seed()], failing("evolve", error, times=1), concurrency=8, max_retries=1
    )
    assert "s1.1" in result.kept
    assert (result.engine.slots.cuts, result.engine.slots.lowest) == (1, 4)


@pytest.mark.parametrize(
    ("rpm", "tpm", "rates"),
    [(None, None, None), (6000.0, None, (100.0, None)), (None, 6e6, (None, 1e5)),
     (6000.0, 6e6, (100.0, 1e5))],
)  # fmt: skip
def test_the_engine_paces_its_requests_by_the_caps_given_and_only_those(
    tmp_path: Path, rpm: float | None, tpm: float | None, rates: tuple[float | None, ...] | None
) -> None:
    result = evolve(tmp_path / "run", [seed()], rpm=rpm, tpm=tpm)
    assert "s1.1" in result.kept
    budget = result.engine.calls._budget
    if rates is None:
        assert budget is None
        return
    assert budget is not None
    per_second = tuple(None if b is None else b.rate for b in (budget.requests, budget.tokens))
    assert per_second == rates


# -- the journal: a reply is paid once --------------------------------------------------------


def test_a_journalled_reply_is_replayed_instead_of_paid_again(tmp_path: Path) -> None:
    out = tmp_path / "run"
    store, journal, _ = open_run(out, generations=1)
    reply = {"text": "Explain the sky, in three steps", "prompt_tokens": 11, "completion_tokens": 6}
    journal.remember("s1.1", "evolve", reply | {"finish_reason": "stop"})
    journal.close()
    store.close()

    result = evolve(out, [seed()])
    assert result.backend.kinds() == ["answer", "judge", "answer"]  # no evolve request
    record = result.kept["s1.1"]
    assert record["instruction"] == "Explain the sky, in three steps"
    assert record["usage"]["evolve"] == {"prompt_tokens": 11, "completion_tokens": 6}
    assert result.stats.requests == {"answer": 2, "judge": 1}


def test_a_resumed_lineage_goes_on_from_where_it_stands(tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = evolve(out, [seed()], generations=1)
    assert first.steps == 2
    again = evolve(out, [seed()], generations=2)
    assert again.backend.kinds() == ["evolve", "judge", "answer"]  # no seed answer, round 2 only
    assert again.kept["s1.1.2"]["parent_id"] == "s1.1" and again.steps == 1
    done = evolve(out, [seed()], generations=2)
    assert done.backend.calls == [] and done.steps == 0
