"""Fixtures and hooks for every test: a clean environment, the fake server, a CLI runner, and
a backend registry that each test leaves as it found it. Helpers live in tests/support/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from evol.llm import register_backend
from tests.support.backends import restored_registry
from tests.support.fake_server import FakeServer
from tests.support.runs import Evol
from tests.support.scoring import LogprobBackend
from tests.support.selection import ScriptedBackend


def pytest_configure(config: pytest.Config) -> None:
    """What holds for the whole session, set once here rather than by a test module's import."""
    import evol as package

    # Child processes (`python -m evol` in many tests) run the very evol these tests import:
    # the source tree under test, or mutmut's mutated copy of it, never another installed one.
    source = str(Path(package.__file__).resolve().parents[1])
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [source, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    )
    # `datasets` and the Hugging Face hub never go online: the tests load local files.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    # Property tests draw the same examples on every machine and run, with no deadline: a slow
    # or loaded machine may take longer, never fail.
    settings.register_profile(
        "evol",
        derandomize=True,
        deadline=None,
        max_examples=150,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    settings.load_profile("evol")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's keys, endpoints or EVOL_* settings."""
    for name in list(os.environ):
        if name.startswith(("EVOL_", "OPENAI_")):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def backend_registry() -> Iterator[None]:
    """A backend that a test or a fixture registers is gone after the test: `--backend` names
    nothing another test registered."""
    with restored_registry():
        yield


@pytest.fixture
def scripted_backend(backend_registry: None) -> None:
    """`--backend scripted`: scores as tests.support.selection.SCRIPT says."""
    register_backend("scripted", ScriptedBackend)


@pytest.fixture
def logprob_backend(backend_registry: None) -> None:
    """`--backend logprob-fake`: replies with top_logprobs (tests.support.scoring)."""
    register_backend("logprob-fake", LogprobBackend)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as running:
        yield running


@pytest.fixture
def evol() -> Evol:
    return Evol()


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """XDG_CACHE_HOME pointed at a cache of the module's own (evol writes NLTK's punkt_tab
    model there), never the developer's ~/.cache."""
    saved = os.environ.get("XDG_CACHE_HOME")
    cache = tmp_path_factory.mktemp("cache")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    yield cache
    if saved is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = saved
