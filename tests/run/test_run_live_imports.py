"""A live run loads what it uses: the Batch API's client (the openai SDK, ~0.4 s of CPU) only
where the run directory holds batches or --batch is asked for, and the other commands' library
code (export, stats, report, merge, score, select, optimize) not at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.fake_server import FakeServer
from tests.support.runs import write_seeds

_LOADED = """
import sys
from evol.cli import main
sys.argv = ["evol", *sys.argv[1:]]
try:
    main()
except SystemExit as stop:
    assert not stop.code, stop.code
print(" ".join(sorted(m for m in sys.modules if m == "openai" or m.startswith("evol.llm.batch"))))
"""


def _loaded_by_run(*args: object) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _LOADED, *map(str, args)], capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


@pytest.mark.slow
def test_a_live_run_and_its_overwrite_do_not_load_the_batch_client(
    server: FakeServer, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Explain the tides."}])
    run = ["run", seeds, "--out", tmp_path / "out", "--base-url", server.base_url, "--quiet"]
    assert _loaded_by_run(*run, "--generations", "1") == set()
    assert _loaded_by_run(*run, "--generations", "1", "--overwrite") == set()


# What the other commands call; `evol` loads each when its command runs.
_OTHER_COMMANDS = (
    "evol.dataset.export",
    "evol.dataset.merge",
    "evol.dataset.report",
    "evol.dataset.stats",
    "evol.dataset.verification",
    "evol.optimize",
    "evol.quality",
)
# What only some runs need: the retry policy's controller (after a call failed) and the
# progress bar (on a terminal).
_ONLY_SOME_RUNS = ("tenacity", "tqdm")


@pytest.mark.slow  # a child that imports evol's command line: about half a second idle
def test_the_command_line_loads_neither_other_commands_code_nor_what_few_runs_need() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys, evol.cli; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = done.stdout.split()
    assert "evol.pipeline" in loaded  # what `evol run` calls is there
    assert [m for m in loaded if m.startswith(_OTHER_COMMANDS)] == []
    assert [m for m in loaded if m.split(".")[0] in _ONLY_SOME_RUNS] == []
