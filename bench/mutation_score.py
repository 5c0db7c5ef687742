"""Mutation testing of the modules that decide what is kept and what is paid (`make mutate`).

Runs mutmut (configured in pyproject.toml, [tool.mutmut]) and prints the share of mutants
caught per module (`--report-only`: of the last run; `--markdown`: as a table for
docs/mutation.md); figures go to bench/results.json under "mutation". Mutants that survive are
either killed by a new test or listed in docs/mutation.md, with the reason they cannot be told
apart from the original.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("results.json")
MUTMUT = [sys.executable, "-m", "mutmut"]


def mutmut_environment() -> dict[str, str]:
    """The environment without PYTHONDONTWRITEBYTECODE: each mutant's pytest imports its test
    modules anew (tests/mutation_isolation.py), and without the bytecode pytest caches it
    rewrites every assert of every one of them again, about 0.35 s a module (a fourfold slower
    collection, measured on 48 modules)."""
    return {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def scores(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """Per module: how many mutants ended in each of mutmut's statuses."""
    listing = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=root, capture_output=True, text=True, check=True
    ).stdout
    per_module: dict[str, Counter[str]] = defaultdict(Counter)
    for line in listing.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name.startswith("evol."):
            continue
        module = name.split(".x")[0].split(".xǁ")[0]
        per_module[module][status] += 1
    return {module: dict(counts) for module, counts in sorted(per_module.items())}


# A mutant is caught when a test fails on it, or hangs (mutmut's "timeout": under any CI time
# limit a hung test fails). One that no selected test runs ("no tests") counts as not caught.
CAUGHT = ("killed", "timeout")
MISSED = ("survived", "no tests")


def caught_and_total(counts: dict[str, int]) -> tuple[int, int]:
    """Mutants caught, and mutants that count (caught or missed), of one module."""
    caught = sum(counts.get(status, 0) for status in CAUGHT)
    return caught, caught + sum(counts.get(status, 0) for status in MISSED)


def save_verdicts(root: Path, target: Path) -> int:
    """Write every decided mutant's exit code (mutants/**/*.meta) to `target`, per function,
    with the commit of the tree they were found on: a pass that outlives one machine is
    resumed from it (`--restore-verdicts`), and its table is computed from it."""
    tree = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    verdicts: dict[str, dict[str, int]] = {}
    for meta in sorted((root / "mutants").glob("src/**/*.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if code is not None:
                function, number = _split(name)
                verdicts.setdefault(function, {})[number] = code
    rows = ",\n".join(
        f"  {json.dumps(function)}: {json.dumps(codes, separators=(',', ':'))}"
        for function, codes in verdicts.items()
    )
    target.write_text(f'{{"tree": "{tree}", "verdicts": {{\n{rows}\n}}}}\n')
    return sum(map(len, verdicts.values()))


def restore_verdicts(root: Path, source: Path) -> int:
    """Put the verdicts of `source` back into mutants/**/*.meta (as `mutmut run` generated them
    for the same tree), so that the pass goes on where it stopped."""
    saved = json.loads(source.read_text())
    tree = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    if saved["tree"] != tree:
        raise SystemExit(f"{source} holds the verdicts of {saved['tree']}, not of {tree}")
    restored = 0
    for meta in sorted((root / "mutants").glob("src/**/*.meta")):
        data = json.loads(meta.read_text())
        for name in data["exit_code_by_key"]:
            function, number = _split(name)
            code = saved["verdicts"].get(function, {}).get(number)
            if code is not None:
                data["exit_code_by_key"][name] = code
                restored += 1
        meta.write_text(json.dumps(data, indent=4))
    return restored


def _split(name: str) -> tuple[str, str]:
    function, number = re.fullmatch(r"(.*)__mutmut_(\d+)", name).groups()
    return function, number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", help="only this module's mutants: merge, llm.batch, ...")
    parser.add_argument("--report-only", action="store_true", help="the last run's figures")
    parser.add_argument("--markdown", action="store_true", help="as a table")
    parser.add_argument("--root", type=Path, default=ROOT, help="the tree mutmut runs in")
    parser.add_argument("--save-verdicts", type=Path, help="write the decided mutants here")
    parser.add_argument("--restore-verdicts", type=Path, help="put saved verdicts back")
    args = parser.parse_args()
    if args.save_verdicts:
        print(f"{save_verdicts(args.root, args.save_verdicts)} verdicts saved")
        return
    if args.restore_verdicts:
        print(f"{restore_verdicts(args.root, args.restore_verdicts)} verdicts restored")
        return
    only = f"evol.{args.module}." if args.module else None
    if not args.report_only:
        subprocess.run(
            [*MUTMUT, "run", *([only + "*"] if only else [])],
            cwd=args.root,
            env=mutmut_environment(),
            check=False,
        )
    figures = scores(args.root)
    if only:
        figures = {module: counts for module, counts in figures.items() if module + "." == only}
        results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        figures = {**results.get("mutation", {}), **figures}
    markdown = args.markdown
    if markdown:
        print("| module | caught | total | score |\n|---|---:|---:|---:|")
    else:
        print(f"{'module':<22} {'caught':>7} {'total':>7} {'not run':>8} {'score':>7}")
    for module, counts in figures.items():
        caught, total = caught_and_total(counts)
        not_run = sum(counts.values()) - total  # not checked yet, skipped...
        score = caught / max(1, total)
        if markdown:
            print(f"| {module} | {caught} | {total} | {score:.1%} |")
        else:
            print(f"{module:<22} {caught:>7} {total:>7} {not_run:>8} {score:>7.1%}")
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["mutation"] = figures
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
