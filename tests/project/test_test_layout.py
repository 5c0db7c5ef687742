"""The tests' own layout: a test module is not a library. What several test modules share lives
in the tests.support package, and no test module imports from another one."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    """`tests.llm.test_ray` for tests/llm/test_ray.py; a package is named by its folder."""
    parts = path.relative_to(TESTS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module that `source` (the module `module`) imports, anywhere in it (a lazy import in
    a function counts), relative imports resolved, and `from package import name` counted as
    `package.name` (it may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(filter(None, [*anchor, base]))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def strays(imported: set[str]) -> set[str]:
    """The test modules (and conftests) among `imported`, outside tests.support: a name imported
    from one counts as the module itself."""
    found = set()
    for name in imported:
        parts = name.split(".")
        if parts[0] != "tests" or parts[1:2] == ["support"]:
            continue
        for end, part in enumerate(parts[1:], start=2):
            if part.startswith("test_") or part == "conftest":
                found.add(".".join(parts[:end]))
                break
    return found


def stray_imports() -> dict[str, set[str]]:
    """Each module under tests/ that imports a test module (or a conftest), with what it imports."""
    found = {}
    for path in sorted(TESTS.rglob("*.py")):
        module = module_name(path)
        imported = imported_modules(
            path.read_text(encoding="utf-8"), module, path.stem == "__init__"
        )
        if stray := strays(imported):
            found[module] = stray
    return found


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        (
            "from tests.llm.test_hostile import run_evol",
            "tests.llm.test_x",
            {"tests.llm.test_hostile"},
        ),
        ("import tests.seeds.test_seeds", "tests.rundir.test_x", {"tests.seeds.test_seeds"}),
        ("from tests.seeds import test_seeds", "tests.rundir.test_x", {"tests.seeds.test_seeds"}),
        ("from .test_hostile import run_evol", "tests.llm.test_x", {"tests.llm.test_hostile"}),
        (
            "from ..quality.test_score_batch import a",
            "tests.llm.batch.test_x",
            {"tests.llm.quality.test_score_batch"},
        ),  # fmt: skip
        ("from . import test_hostile", "tests.llm.test_x", {"tests.llm.test_hostile"}),
        ("from tests.conftest import server", "tests.llm.test_x", {"tests.conftest"}),
        (
            "def f():\n    from tests.quality.test_contamination import WORDS\n",
            "tests.q.test_x",
            {"tests.quality.test_contamination"},
        ),  # fmt: skip
        ("from tests.support.runs import write_seeds", "tests.llm.test_x", set()),
        ("from tests.support import runs", "tests.llm.test_x", set()),
        ("from .support.runs import Evol", "tests.conftest", set()),
        ("from evol.llm.test_helpers import x", "tests.llm.test_x", set()),
        ("import pytest\nfrom pathlib import Path", "tests.llm.test_x", set()),
    ],
)
def test_an_import_of_a_test_module_is_found_however_it_is_written(
    source: str, module: str, expected: set[str]
) -> None:
    assert strays(imported_modules(source, module)) == expected


def test_no_test_module_imports_from_another_test_module() -> None:
    """A helper that two test modules share moves to tests.support (a module named for what it
    holds), where both import it: a test module's helpers can change with its tests alone."""
    found = {module: sorted(names) for module, names in stray_imports().items() if names}
    assert not found, f"move these helpers into tests.support: {found}"


HISTORY_WORDS = ("attack", "round", "mutants")


def history_words(name: str) -> list[str]:
    """The parts of a test file's name that tell when or how its tests were found (an attack, a
    mutation round, a number) rather than what they test; a format version (`v1`) is a name."""
    parts = name.removesuffix(".py").split("_")
    return [
        part
        for part in parts
        if part.startswith(HISTORY_WORDS)
        or (any(c.isdigit() for c in part) and not re.fullmatch(r"v\d+", part))
    ]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("test_attack23.py", ["attack23"]),
        ("test_attack_answer_n.py", ["attack"]),
        ("test_mutants_round4.py", ["mutants", "round4"]),
        ("test_mutants_store.py", ["mutants"]),
        ("test_batch_26b.py", ["26b"]),
        ("test_batch_hostile.py", []),
        ("test_run_v1_fixtures.py", []),
        ("test_dedup_rules.py", []),
    ],
)
def test_a_history_name_is_told_from_a_module_name(name: str, expected: list[str]) -> None:
    assert history_words(name) == expected


def test_test_files_are_named_for_what_they_test() -> None:
    """A test file is named for the module or the feature it tests (tests/<package>/
    test_<module>[_<aspect>].py), never for the attack or mutation round that found its
    tests: a newcomer looks for a module's tests by its name. Why a test exists may stay in
    its docstring."""
    found = {
        str(path.relative_to(TESTS)): words
        for path in sorted(TESTS.rglob("test_*.py"))
        if (words := history_words(path.name))
    }
    assert not found, f"name these by the module or feature they test: {found}"
