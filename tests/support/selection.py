"""`evol select` on runs scored as scripted: a backend that gives each instruction and answer
the scores SCRIPT says (registered as `--backend scripted` by the `scripted_backend` fixture),
and a run of one seed per row scored that way."""

from __future__ import annotations

from pathlib import Path

from evol.llm import BackendSettings, Completion, LLMRequest
from tests.support.runs import record, write_run

# instruction -> (difficulty, answer quality); None: the scorer's reply holds no number.
SCRIPT: dict[str, tuple[int | None, int | None]] = {}


class ScriptedBackend:
    """Gives each instruction and answer the score SCRIPT says, keyed by the text."""

    def __init__(self, settings: BackendSettings):
        pass

    async def complete(self, request: LLMRequest) -> Completion:
        messages = request.messages
        content = messages[0]["content"]
        task = content.partition("<task>\n")[2].partition("\n</task>")[0]
        difficulty, quality = SCRIPT[task]
        value = quality if "<response>" in content else difficulty
        return Completion(text="no idea" if value is None else str(value))

    async def default_model(self) -> str:
        return "script"

    async def aclose(self) -> None:
        pass


def scored_run(evol, tmp_path: Path, rows: dict[str, tuple[int | None, int | None]]) -> Path:
    """A run of one seed per row, scored for difficulty and answer quality as scripted."""
    SCRIPT.clear()
    SCRIPT.update(rows)
    records = [record(f"s{n}", text, output=f"Answer {n}.") for n, text in enumerate(rows, start=1)]
    run = write_run(tmp_path / "run", records)
    result = evol("score", run, "--backend", "scripted", "--answers", "--no-complexity")
    assert result.exit_code == 0, result.output
    return run


ROWS = {
    "Explain recursion with an example": (8, 9),  # 72
    "Write a haiku about autumn rain": (5, 8),  # 40
    "Sort a list of names in Python": (9, 5),  # 45
    "Translate hello into French": (2, 10),  # 20
    "Prove that the square root of two is irrational": (None, 10),  # no difficulty: last
    "Explain recursion with an example please": (8, 8),  # 64, but ROUGE-L 0.91 to the first
}
