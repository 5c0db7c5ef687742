"""`evol score` against the fake server and in process: a responder that scores by length,
the scores a run ends with, a real run to score, and a backend that returns log-probabilities."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from evol.errors import AuthenticationFailed
from evol.llm import BackendSettings, Completion, GenerationParams, LLMRequest
from tests.support.fake_server import FakeServer, Responder
from tests.support.runs import run_args, write_seeds

UNPARSEABLE = "Hard to say: it depends on the reader."


# -- a fake server that scores ---------------------------------------------------------------


def between(text: str, start: str, end: str) -> str:
    return text.partition(start)[2].partition(end)[0]


def difficulty_of(task: str) -> int:
    return min(10, max(1, len(task.split()) // 3))


def quality_of(answer: str) -> int:
    return 1 + len(answer.split()) % 10


def ranks(texts: list[str]) -> list[int]:
    """1 for the fewest words, and so on; equal lengths share a rank."""
    return [1 + sum(len(o.split()) < len(t.split()) for o in texts) for t in texts]


class ScoringResponder(Responder):
    """Scores by length; markers in the task steer the reply: [prose] answers in a sentence,
    [mute] gives no number the first time, [never] never does."""

    def __call__(self, body: dict[str, Any]) -> str:
        messages = body["messages"]
        first, again = messages[0]["content"], len(messages) > 1
        if '<version id="' in first:
            versions = re.findall(r'<version id="\d+">\n(.*?)\n</version>', first, re.S)
            if "[never]" in first or ("[mute]" in first and not again):
                return UNPARSEABLE
            return "\n".join(f"#{k}: {r}" for k, r in enumerate(ranks(versions), start=1))
        if "<response>" in first:
            answer = between(first, "<response>\n", "\n</response>")
            return self.rate(between(first, "<task>\n", "\n</task>"), quality_of(answer), again)
        if "<task>" in first:
            task = between(first, "<task>\n", "\n</task>")
            return self.rate(task, difficulty_of(task), again)
        return super().__call__(body)

    def rate(self, task: str, value: int, again: bool) -> str:
        if "[never]" in task or ("[mute]" in task and not again):
            return UNPARSEABLE
        return f"I'd rate it a {value} out of 10." if "[prose]" in task else str(value)


def kind_of_score(body: dict[str, Any]) -> str:
    first = body["messages"][0]["content"]
    if '<version id="' in first:
        return "complexity"
    return "quality" if "<response>" in first else "difficulty" if "<task>" in first else "run"


def scores(run: Path) -> list[dict[str, Any]]:
    path = run / "scores.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def by_key(run: Path) -> dict[tuple[str, str], Any]:
    """(scorer, id) -> score (or per-record scores), the latest line winning."""
    return {(s["scorer"], s["id"]): s.get("scores", s.get("score")) for s in scores(run)}


SEEDS = [
    {"instruction": "Name a primary colour"},
    {"instruction": "[prose] Explain why the sky looks blue at noon"},
    {"instruction": "[mute] List three prime numbers below twenty"},
    {"instruction": "[never] Describe a cat"},
]


def make_run(evol, tmp_path: Path) -> Path:
    seeds, run = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    with FakeServer() as server:
        result = evol(*run_args(server, seeds, run, "--generations", "2"))
    assert result.exit_code == 0, result.output
    return run


# Batches polled and retries waited for in tens of milliseconds; answers scored too.
SCORE_FAST = ("--batch-poll-interval", "0.05", "--retry-max-wait", "0.05", "--answers", "--quiet")


def score_args(run: Path, url: str, *extra: str) -> list[object]:
    """`evol score RUN --base-url URL --model fake-model` with fast polls and retries, then EXTRA."""
    return ["score", run, "--base-url", url, "--model", "fake-model", *SCORE_FAST, *extra]


def kept(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(run.glob("gen_*.jsonl")) for line in path.open()]


def task(r: dict[str, Any]) -> str:
    return f"{r['instruction']}\n\n{r['input']}" if r["input"].strip() else r["instruction"]


class LogprobBackend:
    """Replies like a server that returns top_logprobs: the score token's alternatives are
    the chosen score (p .75) and the highest one (p .25)."""

    made: list[LogprobBackend] = []

    def __init__(self, settings: BackendSettings):
        self.params: list[GenerationParams] = []
        self.closed = 0
        LogprobBackend.made.append(self)

    async def complete(self, request: LLMRequest) -> Completion:
        messages, params = request.messages, request.params
        self.params.append(params)
        content = messages[0]["content"]
        if "[auth]" in content:
            raise AuthenticationFailed("authentication failed for the fake: check the key")
        tokens: list[dict[str, float]] = []
        if '<version id="' in content:
            versions = re.findall(r'<version id="\d+">\n(.*?)\n</version>', content, re.S)
            for k, rank in enumerate(ranks(versions), start=1):
                tokens += [{"#": 0.0}, {str(k): 0.0}, {":": 0.0}]
                tokens.append(self.score_token(f" {rank}", f" {len(versions)}"))
                tokens.append({"\n": 0.0})
            tokens.pop()
        else:
            value = difficulty_of(between(content, "<task>\n", "\n</task>"))
            tokens.append(self.score_token(str(value), "10"))
        text = "".join(max(alternatives, key=alternatives.get) for alternatives in tokens)
        return Completion(
            text=text, prompt_tokens=10, completion_tokens=len(tokens), top_logprobs=tokens
        )

    @staticmethod
    def score_token(chosen: str, highest: str) -> dict[str, float]:
        if chosen == highest:
            return {chosen: 0.0}
        return {chosen: math.log(0.75), highest: math.log(0.25)}

    async def default_model(self) -> str:
        return "logprob-model"

    async def aclose(self) -> None:
        self.closed += 1
