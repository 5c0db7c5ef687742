"""What cleaning and the free rules keep and lose on hand-written model replies (`make bench`).

Every case of `bench/quality_sets/tune.jsonl` and `heldback.jsonl` (README there) goes through
the code a run uses: an evolver's reply through `clean_rewrite` and `check_rewrite` (the checks
before any paid call, with the shipped prompts' leak detector and the in-depth growth bound),
an answer through `clean_reply` and `check_answer`, a verdict through `clean_reply` and
`parse_verdict`.

Per set and per category: planted failures kept, good replies lost, and for the wrapped and
glued categories how many cleaned texts equal the case's `clean_rewrite` exactly. A good
rewrite that is kept but not as its clean text (a wrapper left on, content cut) counts as lost.
Planted failures that only a judge can catch (an equal paraphrase; a reply to the user or an
answer in place of a rewrite that no rule saw) are counted on their own line, "left to the
judge", not as caught and not in the kept share. A verdict that never decides must be read
`unclear` (the run asks again, then eliminates it as `judge_unclear`), never `different`.

The held-back set is scored, never shown: for it this script prints counts only. `--misses`
lists the tune set's misses case by case, to tune on. Figures go to bench/results.json under
"quality_sets" (`--label` names the entry: `current` by default, `baseline` for main's).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from evol.method.cleaning import clean_reply, clean_rewrite
from evol.method.elimination import EliminationRules, check_answer, check_rewrite
from evol.method.prompts import PromptSet
from evol.method.verdicts import parse_verdict

SETS = Path(__file__).with_name("quality_sets")
RESULTS = Path(__file__).with_name("results.json")
# The growth bound of the in-depth operations (five of the six): the sets name no operation.
OPERATION = "deepen"
# Planted failures that the free rules may miss by design: the judge's call in a run.
LEFT_TO_THE_JUDGE = {"equal-paraphrase", "talk-to-user", "answer-not-rewrite"}
# Good replies whose wrapper cleaning must take off, and failures that cleaning can repair.
CLEANED_EXACTLY = {"wrapped-good", "afterword-kept", "echoed-input"}


def outcome(case: dict[str, Any], rules: EliminationRules, leaks) -> tuple[str, str, bool | None]:
    """('kept' | 'eliminated' | 'repaired', what decided it, cleaned exactly?) for one case."""
    if case["role"] == "answer":
        text = clean_reply(case["reply"]).text
        failure = check_answer(case["instruction"], text, rules)
        return ("eliminated", failure.reason.value, None) if failure else ("kept", "", None)
    if case["role"] == "judge":
        verdict = parse_verdict(clean_reply(case["reply"]).text)
        return ("kept" if verdict.value != case["expected_verdict"] else "right", verdict, None)
    cleaned = clean_rewrite(case["reply"], case["input"])
    failure = check_rewrite(case["parent"], cleaned.text, rules, leaks, OPERATION)
    exact = cleaned.text == case["clean_rewrite"] if case["category"] in CLEANED_EXACTLY else None
    if failure:
        return "eliminated", failure.reason.value, exact
    if exact and case["planted_failure"]:
        return "repaired", "cleaning", exact  # the glued line or echoed input is off
    return "kept", "", exact


def score(cases: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The set's figures, and one line per miss (for the tune set only)."""
    rules, leaks = EliminationRules(), PromptSet.load().leak_detector()
    per: dict[str, Counter] = defaultdict(Counter)
    misses: list[str] = []
    verdicts = Counter()
    for case in cases:
        fate, why, exact = outcome(case, rules, leaks)
        tally = per[case["category"]]
        tally["cases"] += 1
        if exact is not None:
            tally["cleaned_exactly"] += exact
        if case["role"] == "judge":
            verdicts[f"{case['expected_verdict']}->{why}"] += 1
        if case["planted_failure"]:
            missed = fate == "kept"
            judged = case["category"] in LEFT_TO_THE_JUDGE
            if judged:
                tally["left_to_the_judge" if missed else "caught_before_the_judge"] += 1
            else:
                tally["kept" if missed else "caught"] += 1
        else:
            missed = fate == "eliminated" or (
                exact is False or (fate == "kept" and not _same(case))
            )
            tally["lost" if missed else "kept_good"] += 1
        if fate == "eliminated":
            tally[f"by:{why}"] += 1
        if missed:
            misses.append(f"{case['id']} {case['category']}: {fate} {why} exact={exact}")
    return _figures(per, verdicts), misses


def _same(case: dict[str, Any]) -> bool:
    """A good rewrite or answer comes through unchanged (answers are not cleaned but for think)."""
    if case["role"] != "evolve":
        return True
    return clean_rewrite(case["reply"], case["input"]).text == case["clean_rewrite"]


def _figures(per: dict[str, Counter], verdicts: Counter) -> dict[str, Any]:
    total = Counter()
    for tally in per.values():
        total.update({k: v for k, v in tally.items() if not k.startswith("by:")})
    judged = total["caught_before_the_judge"] + total["left_to_the_judge"]
    planted = total["caught"] + total["kept"] + judged
    decidable = total["caught"] + total["kept"]
    good = total["lost"] + total["kept_good"]
    return {
        "cases": total["cases"],
        "planted_failures": planted,
        "planted_for_the_rules": decidable,
        "planted_kept": total["kept"],
        "share_planted_kept": round(total["kept"] / max(1, decidable), 4),
        "planted_for_the_judge": judged,
        "caught_before_the_judge": total["caught_before_the_judge"],
        "left_to_the_judge": total["left_to_the_judge"],
        "share_kept_if_the_judge_caught_none": round(
            (total["kept"] + total["left_to_the_judge"]) / max(1, planted), 4
        ),
        "good": good,
        "good_lost": total["lost"],
        "share_good_lost": round(total["lost"] / max(1, good), 4),
        "undecided_read_as_different": verdicts["unclear->different"],
        "verdicts": dict(sorted(verdicts.items())),
        "per_category": {name: dict(sorted(t.items())) for name, t in sorted(per.items())},
    }


def _report(name: str, figures: dict[str, Any]) -> None:
    print(
        f"{name}: planted kept {figures['planted_kept']}/{figures['planted_for_the_rules']}"
        f" ({figures['share_planted_kept']:.1%}), good lost {figures['good_lost']}/"
        f"{figures['good']} ({figures['share_good_lost']:.1%}), undecided read as different "
        f"{figures['undecided_read_as_different']}"
    )
    print(
        f"  left to the judge: {figures['left_to_the_judge']} of {figures['planted_for_the_judge']}"
        f" ({figures['caught_before_the_judge']} caught by the rules; kept if the judge caught none: "
        f"{figures['share_kept_if_the_judge_caught_none']:.1%})"
    )
    for category, tally in figures["per_category"].items():
        shown = ", ".join(f"{k} {v}" for k, v in tally.items() if k != "cases")
        print(f"  {category} ({tally['cases']}): {shown}")
    print(f"  verdicts (expected->read): {figures['verdicts']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current", help="the entry in results.json")
    parser.add_argument("--misses", action="store_true", help="list the tune set's misses")
    parser.add_argument("--sets", nargs="+", default=["tune", "heldback"])
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    entry: dict[str, Any] = {}
    for name in args.sets:
        cases = [json.loads(line) for line in (SETS / f"{name}.jsonl").open(encoding="utf-8")]
        entry[name], misses = score(cases)
        _report(name, entry[name])
        if args.misses and name == "tune":  # never the held-back set's: it stays unread
            print("\n".join(misses))
    results.setdefault("quality_sets", {})[args.label] = entry
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    if held := entry.get("heldback"):
        met = (
            held["share_planted_kept"] <= 0.02
            and held["share_good_lost"] <= 0.03
            and held["undecided_read_as_different"] == 0
        )
        print(f"held-back targets (<= 2% kept, <= 3% lost, 0 undecided as different): "
              f"{'met' if met else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
