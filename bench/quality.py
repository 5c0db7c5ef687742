"""What the elimination rules keep and lose, against failures planted at known rates (`make bench`).

A fake OpenAI-compatible server (tests/support/fake_server.py with the responder below) answers every
call of an `evol run` the way real models fail, at fixed rates, on top of good rewrites. Which
mode a reply takes is a pure function of the text it answers (a hash), so this script can tell
from the run's files what each record should have become:

evolver (per parent instruction P; G = P plus one clause, the good rewrite):
  good; G wrapped in a preamble, a label and quotes, a think block or a code fence (good once
  cleaned); cut at the token limit; an answer instead of a rewrite, long (caught by the growth
  bound) or short (left to the answer's signals); the evolving prompt's words copied; an equal
  paraphrase (left to the judge); P unchanged.
answerer (per instruction): good (some open "Sure!" and end by offering more, at length);
  a short refusal; "..."; cut at the token limit; "please provide"; "Sure! ...?";
  "Understood. ...?". A short non-task gets an acknowledgement, an echo of itself, or (in one
  case in five, which no rule can see) a plain elaboration.
judge: "Not Equal", prose either way, a first reply with no verdict (asked again), or none
  twice (that evolution cannot be judged: a planted failure).

Reported: the share of planted failures that end up kept (target <= 2%) and the share of good
evolutions that are lost (target <= 3%). Figures go to bench/results.json under "quality".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package tests

from tests.support.fake_server import FakeServer  # noqa: E402

RESULTS = Path(__file__).with_name("results.json")
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}

EVOLVE_MODES = [
    ("good", 0.60),
    ("preamble", 0.05),
    ("label+quotes", 0.04),
    ("think", 0.03),
    ("fence", 0.03),
    ("afterword", 0.02),
    ("cut", 0.05),
    ("answered-long", 0.04),
    ("answered-short", 0.02),
    ("leak", 0.04),
    ("equal", 0.06),
    ("unchanged", 0.02),
]
GOOD_REWRITES = {"good", "preamble", "label+quotes", "think", "fence", "afterword"}
ANSWER_MODES = [
    ("good", 0.72),
    ("good-sure-offer", 0.05),
    ("good-long-please", 0.04),
    ("good-short-question", 0.04),
    ("refusal", 0.04),
    ("dots", 0.02),
    ("cut", 0.03),
    ("please", 0.02),
    ("sure-question", 0.02),
    ("understood-question", 0.02),
]
GOOD_ANSWERS = {"good", "good-sure-offer", "good-long-please", "good-short-question"}
NON_TASK_REACTIONS = [("acknowledge", 0.5), ("echo", 0.3), ("elaborate", 0.2)]
JUDGE_MODES = [
    ("not-equal", 0.62),
    ("prose-not-equal", 0.12),
    ("prose-different", 0.08),
    ("prose-mixed", 0.04),
    ("prose-negated-same", 0.04),
    ("unclear-once", 0.08),
    ("unclear-twice", 0.02),
]
EQUAL_JUDGE = [("equal", 0.6), ("prose-equal", 0.3), ("prose-same", 0.1)]


def draw(text: str, salt: str, table: list[tuple[str, float]]) -> str:
    """The mode for `text`: the same every time, at the table's rates over many texts."""
    point = int(hashlib.sha256(f"{salt}\0{text}".encode()).hexdigest()[:12], 16) / 16**12
    for mode, rate in table:
        if point < rate:
            return mode
        point -= rate
    return table[-1][0]


def good_rewrite(parent: str) -> str:
    return f"{parent} Cover case {hashlib.sha256(parent.encode()).hexdigest()[:6]} too."


def _between(text: str, start: str, end: str) -> str:
    return text.partition(start)[2].partition(end)[0].strip("\n")


ANSWERED = "This topic is best understood step by step. "
FILLER = (
    "It starts from the definitions, works through an example with real numbers, checks the "
    "result against a second method, and ends with the common mistakes to avoid. "
)


class PlantingResponder:
    """Replies as real models fail, at the tables' rates."""

    def __call__(self, body: dict[str, Any]) -> str | tuple[str, str]:
        turns = [m["content"] for m in body["messages"] if m["role"] == "user"]
        if "<first>" in turns[0]:
            parent = _between(turns[0], "<first>\n", "\n</first>")
            second = _between(turns[0], "<second>\n", "\n</second>")
            return self.judge(parent, second, asked_again=len(turns) > 1)
        if "<instruction>" in turns[0]:
            return self.evolve(_between(turns[0], "<instruction>\n", "\n</instruction>"))
        return self.answer(turns[0])

    def evolve(self, parent: str) -> str | tuple[str, str]:
        mode, rewrite = draw(parent, "evolve", EVOLVE_MODES), good_rewrite(parent)
        return {
            "good": rewrite,
            "preamble": f"Sure! Here is the rewritten instruction:\n{rewrite}",
            "label+quotes": f'**New instruction:** "{rewrite}"',
            "think": f"<think>Add one case, keep it short.</think>\n{rewrite}",
            "fence": f"```\n{rewrite}\n```",
            "afterword": f"{rewrite}\n\nThis version adds one more case to cover.",
            "cut": (rewrite[: len(rewrite) // 2], "length"),
            "answered-long": ANSWERED + FILLER * 5,
            "answered-short": f"The topic of {parent[:40]} is widely studied.",
            # A model that leaks echoes the prompt it was given (tests/../prompts/*.txt).
            "leak": f"{rewrite} It must stay reasonable, something a person could understand.",
            "equal": f"Please: {parent}",
            "unchanged": parent,
        }[mode]

    def answer(self, instruction: str) -> str | tuple[str, str]:
        if instruction.startswith(ANSWERED) or (
            instruction.startswith("The topic of ") and instruction.endswith("is widely studied.")
        ):  # not a task: how a chat model reacts to text that asks for nothing
            reaction = draw(instruction, "non-task", NON_TASK_REACTIONS)
            return {
                "acknowledge": "Thank you for sharing! Which part would you like me to expand on?",
                "echo": instruction,
                "elaborate": "Indeed, it has a long history. " + FILLER,
            }[reaction]
        mode = draw(instruction, "answer", ANSWER_MODES)
        return {
            "good": "Here is a careful answer. " + FILLER,
            "good-sure-offer": "Sure! " + FILLER * 3 + "Would you like more examples?",
            "good-long-please": FILLER * 3 + "If you have your own data, please provide it.",
            "good-short-question": "Light becomes sugar in the leaves. Curious about the steps?",
            "refusal": "Sorry, I can't help with that.",
            "dots": "...",
            "cut": ("Here is the first part of a long answer, and then", "length"),
            "please": "Please provide the data you want me to use.",
            "sure-question": "Sure! Which format would you like?",
            "understood-question": "Understood. What should I do next?",
        }[mode]

    def judge(self, parent: str, second: str, *, asked_again: bool) -> str:
        if second.startswith("Please: "):
            mode = draw(second, "judge-equal", EQUAL_JUDGE)
            return {
                "equal": "Equal",
                "prose-equal": "They are equal: same constraints and depth.",
                "prose-same": "Both ask the very same thing.",
            }[mode]
        mode = draw(second, "judge", JUDGE_MODES)
        if mode == "unclear-twice" or (mode == "unclear-once" and not asked_again):
            return "Hmm, that is a subtle one."
        return {
            "not-equal": "Not Equal",
            "prose-not-equal": "Not equal, because the second adds a case to cover.",
            "prose-different": "Same topic, but a different depth of inquiry.",
            "prose-mixed": "Equal in topic, but the second adds a case, so they are not equal.",
            "prose-negated-same": "They are not the same: the second asks for one more case.",
            "unclear-once": "Not Equal",
        }[mode]


def expected_fate(parent: str) -> tuple[str, str]:
    """('good' | 'failure', why) for the evolution of `parent`, and the clean rewrite."""
    mode = draw(parent, "evolve", EVOLVE_MODES)
    if mode not in GOOD_REWRITES:
        return "failure", f"rewrite:{mode}"
    rewrite = good_rewrite(parent)
    answer = draw(rewrite, "answer", ANSWER_MODES)
    if answer not in GOOD_ANSWERS:
        return "failure", f"answer:{answer}"
    if draw(rewrite, "judge", JUDGE_MODES) == "unclear-twice":
        return "failure", "judge:unclear-twice"
    return "good", f"rewrite:{mode}"


def score(out: Path) -> dict[str, Any]:
    """Compare each record with what its planted mode says it should have become."""
    kept = [json.loads(line) for path in sorted(out.glob("gen_*.jsonl")) for line in path.open()]
    eliminated = [json.loads(line) for line in (out / "eliminated.jsonl").open()]
    instructions = {r["id"]: r["instruction"] for r in kept + eliminated if r["generation"] == 0}
    instructions |= {r["id"]: r["instruction"] for r in kept}
    planted, failures_kept, good, good_lost = Counter(), Counter(), Counter(), Counter()
    for record, is_kept in [(r, True) for r in kept] + [(r, False) for r in eliminated]:
        if record["generation"] == 0:
            mode = draw(record["instruction"], "answer", ANSWER_MODES)
            fate, why = ("good", "seed") if mode in GOOD_ANSWERS else ("failure", f"seed:{mode}")
        else:
            parent = instructions[record["parent_id"]]
            fate, why = expected_fate(parent)
            if fate == "good" and is_kept and record["instruction"] != good_rewrite(parent):
                fate, why = "failure", f"{why} (wrapper left on)"
        if fate == "failure":
            planted[why.split(" ")[0]] += 1
            failures_kept[why] += is_kept
        else:
            good[why] += 1
            good_lost[why] += not is_kept
    return {
        "planted_failures": sum(planted.values()),
        "planted_failures_kept": sum(failures_kept.values()),
        "share_of_failures_kept": round(
            sum(failures_kept.values()) / max(1, sum(planted.values())), 4
        ),
        "good_evolutions": sum(good.values()),
        "good_evolutions_lost": sum(good_lost.values()),
        "share_of_good_lost": round(sum(good_lost.values()) / max(1, sum(good.values())), 4),
        "failures_kept_by_mode": {k: v for k, v in sorted(failures_kept.items()) if v},
        "good_lost_by_mode": {k: v for k, v in sorted(good_lost.items()) if v},
        "planted_by_mode": dict(sorted(planted.items())),
        "kept": len(kept),
        "eliminated": len(eliminated),
        "eliminated_per_reason": dict(Counter(r["reason"] for r in eliminated).most_common()),
    }


def run_quality(seeds: int, generations: int, *extra: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work, FakeServer(responder=PlantingResponder()) as server:
        seed_file = Path(work) / "seeds.jsonl"
        with seed_file.open("w") as fp:
            for number in range(seeds):
                fp.write(
                    json.dumps(
                        {"instruction": f"Explain idea number {number} of topic {number % 17}."}
                    )
                    + "\n"
                )
        out = Path(work) / "run"
        command = [
            sys.executable, "-m", "evol", "run", str(seed_file), "--out", str(out),
            "--base-url", server.base_url, "--generations", str(generations),
            "--concurrency", "64", "--quiet", *extra,
        ]  # fmt: skip
        subprocess.run(command, env=ENV, check=True)
        figures = score(out)
        manifest = json.loads((out / "run.json").read_text())
        usage = manifest["summary"]["usage"]
        figures["completion_tokens"] = {
            role: u.get("completion_tokens", 0) for role, u in usage.items()
        }
        figures["requests"] = manifest["summary"]["requests"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=600)
    parser.add_argument("--generations", type=int, default=3)
    args = parser.parse_args()
    figures = run_quality(args.seeds, args.generations)
    figures |= {"seeds": args.seeds, "generations": args.generations}
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["quality"] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    targets = figures["share_of_failures_kept"] <= 0.02 and figures["share_of_good_lost"] <= 0.03
    print(f"targets (failures kept <= 2%, good lost <= 3%): {'met' if targets else 'MISSED'}")


if __name__ == "__main__":
    main()
