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


# Test files named for no one module, package or command, on purpose: each checks one promise
# over many modules at once, where a file per module would split one table of cases.
CROSS_CUTTING = {
    # Repository checks: the docs, the Makefile, the import contracts, the tests' own layout
    # and their servers; they test the project, not a module of evol.
    "project/",
    # One Hypothesis property per function, over seeds, operations, prompts and jsonl alike
    # (any input, derandomized): the property is the unit, not the module.
    "method/test_properties.py",
    # One linearity check (issue #21) over every cleaning, parsing and scoring function: the
    # same adversarial shapes and the same CPU-time ratio for all of them.
    "method/test_linear_text.py",
}


def evol_names() -> set[str]:
    """What a test file may be named for: every module and package of evol (the one imported,
    mutmut's copy under mutation) and every command of the CLI, `-` read as `_`."""
    from typer.main import get_command

    import evol
    from evol.cli import app

    source = Path(evol.__file__).parent
    names = {path.stem for path in source.rglob("*.py") if path.stem != "__init__"}
    names |= {path.parent.name for path in source.rglob("__init__.py")}
    return names | {command.replace("-", "_") for command in get_command(app).commands}


def named_for(file_name: str, names: set[str]) -> str | None:
    """The module, package or command a test file is named for: the longest `_`-joined start of
    what follows `test_` that is one of `names` (the rest is the aspect), or None."""
    parts = file_name.removesuffix(".py").removeprefix("test_").split("_")
    for end in range(len(parts), 0, -1):
        if (candidate := "_".join(parts[:end])) in names:
            return candidate
    return None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("test_dedup.py", "dedup"),
        ("test_stats_scoring.py", "stats"),  # a module and an aspect
        ("test_stats_costs.py", "stats_costs"),  # the longest start that names a module
        ("test_record_files_damaged.py", "record_files"),
        ("test_run_dir.py", "run"),  # a command
        ("test_ray.py", "ray"),  # a package
        ("test_verify.py", "verify"),
        ("test_frobnicate.py", None),  # made up
        ("test_seed_details.py", None),  # `seed` is not `seeds`
        ("test_promises.py", None),
        ("test_help_and_stats.py", None),  # a start that names nothing, then a command
        ("test_.py", None),
    ],
)
def test_a_file_name_is_read_as_the_module_it_is_named_for(name: str, expected: str | None) -> None:
    assert named_for(name, evol_names()) == expected


def test_each_test_file_is_named_for_a_module_package_or_command() -> None:
    """tests/<package>/test_<module>[_<aspect>].py: a newcomer finds a module's tests by its
    name. A file that checks one promise across many modules is named in CROSS_CUTTING, with
    the reason."""
    names = evol_names()
    found = []
    for path in sorted(TESTS.rglob("test_*.py")):
        relative = path.relative_to(TESTS).as_posix()
        if relative in CROSS_CUTTING or any(
            relative.startswith(folder) for folder in CROSS_CUTTING if folder.endswith("/")
        ):
            continue
        if named_for(path.name, names) is None:
            found.append(relative)
    assert not found, f"name these test_<module>[_<aspect>].py, or list them with a reason: {found}"


def test_every_cross_cutting_entry_is_still_there() -> None:
    """A stale entry would let a new file of that name through unexamined."""
    assert [entry for entry in sorted(CROSS_CUTTING) if not (TESTS / entry).exists()] == []
