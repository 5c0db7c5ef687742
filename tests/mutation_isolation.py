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

import contextlib
import json
import os
import signal
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


# A mutant that makes a test wait (a retry hint a thousand times longer, a poll that never ends)
# burns no CPU, so mutmut's CPU limit never ends it: only the tests' own 600 s guards did. Under
# a mutant, a test that runs far longer than it did in the clean run fails at once instead,
# with its children (a hung `python -m evol`) killed so that the test's own cleanup returns.
# A test slowed that much fails the suite either way; this only ends it sooner.
HANG_FACTOR = 8
HANG_FLOOR_S = 60.0


def _clean_durations() -> dict[str, float]:
    try:
        return json.loads(Path("mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError):
        return {}


CLEAN_DURATIONS = _clean_durations()


def _kill_children() -> None:
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            with contextlib.suppress(OSError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    if "__mutmut_" not in os.environ.get("MUTANT_UNDER_TEST", ""):
        return (yield)
    clean = CLEAN_DURATIONS.get(item.nodeid, CLEAN_DURATIONS.get("mutants/" + item.nodeid, 20.0))
    limit = max(HANG_FLOOR_S, HANG_FACTOR * clean)

    def expire(signum, frame):
        _kill_children()
        pytest.fail(f"over {limit:.0f} s under a mutant ({clean:.1f} s clean): a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
