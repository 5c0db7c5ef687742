"""What judging before answering saves: completion tokens per kept record, both ways (`make bench`).

The same seeds go twice through `evol run` against one fake OpenAI-compatible server (the
tests' tests/support/fake_server.py, L = 10 ms, --concurrency 64), once judge-first (the default:
evolve, judge, then answer only a rewrite the judge let through) and once with
--parallel-judge (answer and judge at once, the old order). The server's replies are
deterministic and shaped like a real model's bill:

- an evolve request gets the instruction back with a clause appended (tens of tokens);
- the judge says "Equal" for a fixed half of the rewrites (chosen by a hash of the rewrite:
  users report about half of round-one evolutions failing the judge) and "Not Equal" for the
  rest: a few tokens;
- an answer is long: 300 to 700 words (tokens, as the server counts them), by a hash of the
  instruction.

Reported for each order: requests by kind, completion tokens by kind and in all, kept
records, completion tokens per kept record (and, leaving out the seeds' answers, which cost the
same either way, per kept evolution); then the savings, and whether both orders kept the same
records (same ids, instructions and answers). Figures go to bench/results.json under
"judge_first".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package tests

from throughput import write_seeds  # noqa: E402  (bench/ is on the path: the script's own folder)

from tests.support.fake_server import FakeServer, Responder, kind_of  # noqa: E402

RESULTS = Path(__file__).with_name("results.json")
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
ORDERS = {"judge_first": (), "parallel_judge": ("--parallel-judge",)}
SENTENCES = (
    "Start from the definitions and say what each term means in this setting.",
    "Then work through an example with real numbers, one step at a time.",
    "Check the result against a second method, since one derivation can hide an error.",
    "Note the cases where the usual rule breaks down and what to do instead.",
    "Finally, list the common mistakes students make and how to avoid them.",
)


def _share(text: str, salt: str) -> float:
    """A number in [0, 1) fixed by `text`: the same every run, spread evenly over many texts."""
    return int(hashlib.sha256(f"{salt}\0{text}".encode()).hexdigest()[:12], 16) / 16**12


class BillingResponder(Responder):
    """The tests' responder with a judge that rejects half the rewrites and long answers;
    it counts the requests and completion tokens it serves, by kind."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: Counter[str] = Counter()
        self.completion_tokens: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def reset(self) -> None:
        """Start counting afresh (for the next run against the same server)."""
        with self._count_lock:
            self.requests.clear()
            self.completion_tokens.clear()

    def __call__(self, body: dict[str, Any]) -> str | tuple[str, str]:
        reply = super().__call__(body)
        text = reply[0] if isinstance(reply, tuple) else reply
        kind = kind_of(body)
        with self._count_lock:
            self.requests[kind] += 1
            # The fake server reports a word as a token: the same count it puts in `usage`.
            self.completion_tokens[kind] += len(text.split())
        return reply

    def judge(self, second: str, *, asked_again: bool = False, structured: bool = False) -> str:
        return "Equal" if _share(second, "judge") < 0.5 else "Not Equal"

    def answer(self, instruction: str) -> str:
        words = 300 + int(_share(instruction, "length") * 400)
        text: list[str] = [f"Here is a worked answer to: {instruction}"]
        count = len(text[0].split())
        while count < words:
            sentence = SENTENCES[len(text) % len(SENTENCES)]
            text.append(sentence)
            count += len(sentence.split())
        return " ".join(text)


def kept_records(out: Path) -> dict[str, tuple[str, str, str | None]]:
    """Every kept record of a run: id -> (instruction, input, output)."""
    kept = {}
    for path in sorted(out.glob("gen_*.jsonl")):
        for line in path.read_text().splitlines():
            data = json.loads(line)
            kept[data["id"]] = (data["instruction"], data["input"], data["output"])
    return kept


def run_order(
    server: FakeServer, name: str, seed_file: Path, out: Path, generations: int
) -> tuple[dict[str, Any], dict[str, tuple[str, str, str | None]]]:
    responder = server.responder
    assert isinstance(responder, BillingResponder)
    responder.reset()
    command = [
        sys.executable, "-m", "evol", "run", str(seed_file), "--out", str(out),
        "--base-url", server.base_url, "--quiet", "--generations", str(generations),
        "--concurrency", "64", *ORDERS[name],
    ]  # fmt: skip
    subprocess.run(command, env=ENV, check=True)
    summary = json.loads((out / "run.json").read_text())["summary"]
    kept = kept_records(out)
    tokens = sum(responder.completion_tokens.values())
    billed = sum(role["completion_tokens"] for role in summary["usage"].values())
    if billed != tokens:  # the run's own account must match what the server sent
        raise SystemExit(f"{name}: run.json counts {billed} completion tokens, the server {tokens}")
    seed_answers = sum(
        json.loads(line)["usage"].get("answer", {}).get("completion_tokens", 0)
        for line in (out / "gen_0.jsonl").read_text().splitlines()
    )
    evolutions = sum(1 for record_id in kept if "." in record_id)
    figures = {
        "requests": dict(sorted(responder.requests.items())),
        "completion_tokens": dict(sorted(responder.completion_tokens.items())),
        "completion_tokens_in_all": tokens,
        "kept_records": len(kept),
        "kept_evolutions": evolutions,
        "eliminated": summary["eliminated"],
        "completion_tokens_per_kept_record": round(tokens / len(kept), 1),
        # The seeds' answers cost the same either way: the evolutions' own bill, per kept one.
        "evolution_completion_tokens_per_kept_evolution": round(
            (tokens - seed_answers) / evolutions, 1
        ),
    }
    return figures, kept


def measure(work: Path, seeds: int, generations: int) -> dict[str, Any]:
    seed_file = write_seeds(work / "seeds.jsonl", seeds)
    figures: dict[str, Any] = {
        "seeds": seeds,
        "generations": generations,
        "judge_says_equal_share": 0.5,
        "answer_words": "300-700",
    }
    kept = {}
    with FakeServer(latency=0.01, responder=BillingResponder(), record=False) as server:
        for name in ORDERS:
            figures[name], kept[name] = run_order(server, name, seed_file, work / name, generations)
    first, parallel = figures["judge_first"], figures["parallel_judge"]
    figures["same_kept_records"] = kept["judge_first"] == kept["parallel_judge"]
    per_first = first["completion_tokens_in_all"] / first["kept_records"]
    per_parallel = parallel["completion_tokens_in_all"] / parallel["kept_records"]
    figures["saving_per_kept_record"] = round(1 - per_first / per_parallel, 3)
    figures["saving_per_kept_evolution"] = round(
        1
        - first["evolution_completion_tokens_per_kept_evolution"]
        / parallel["evolution_completion_tokens_per_kept_evolution"],
        3,
    )
    figures["answers_saved"] = parallel["requests"]["answer"] - first["requests"]["answer"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--generations", type=int, default=2)
    args = parser.parse_args()
    figures = measure(Path(tempfile.mkdtemp(prefix="evol-bench-")), args.seeds, args.generations)
    for name, value in figures.items():
        print(f"{name:>34}: {value}")
    if not figures["same_kept_records"]:
        raise SystemExit("the two orders kept different records")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["judge_first"] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
