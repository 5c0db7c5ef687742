"""A pytest plugin for `make mutate`: every pytest session imports the test modules anew.

mutmut runs each mutant's tests in a process forked from the one that ran the clean tests, and
Python would hand that session the test modules already imported there, with no mutant on:
what a module builds when imported (`LEAKS = PromptSet.load().leak_detector()`, or an `ENV`
copied from os.environ that a `python -m evol` child then inherits) would come from the
original code and hide the mutant. Dropping them (and the helpers in tests/support/) before the
conftest loads makes each session import them with the mutant switched on. Libraries and evol
itself stay imported (evol's functions look the mutant up on every call), so this costs only
the test modules' own code.

pyproject.toml's [tool.mutmut] loads it with `-p tests.mutation_isolation`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests() -> None:
    """Forget every module imported from the tests folder or below it, tests/support/ too
    (this plugin aside)."""
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and name != __name__ and Path(path).resolve().is_relative_to(TESTS):
            del sys.modules[name]
