"""A run made against the fake server for `evol score` and `evol stats` to read: two lineages
of three records, one of them [mute] (scored_run, a module-scoped fixture; a test module that
uses it imports it and names it in __all__)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fake_server import FakeServer
from tests.support.runs import Evol, run_args, write_seeds


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of two lineages of three records, one of them [mute]."""
    base = tmp_path_factory.mktemp("score")
    seeds = write_seeds(
        base / "seeds.jsonl",
        [{"instruction": "Name a primary colour"}, {"instruction": "[mute] Name a river"}],
    )
    with FakeServer() as server:
        result = Evol()(*run_args(server, seeds, base / "run", "--generations", "2"))
    assert result.exit_code == 0, result.output
    return base / "run"
