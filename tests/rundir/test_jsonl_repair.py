"""A promise of the record files that the fifth round of mutation survivors (checks 6,120 on,
#22) found unpinned: a file evol must cut a torn line from, but cannot open for writing, is
named with the system's reason, as one error a user can act on, not a traceback.

Through `evol run` against the fake server, resuming a run, so that it runs on 4f7dc9e's tree,
where the mutant was found, as on `main`.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.fake_server import FakeServer
from tests.support.runs import run_args, write_seeds


def test_a_record_file_that_cannot_be_opened_to_repair_it_is_named_with_the_reason(
    evol, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket in the place of eliminated.jsonl (opening one gives ENXIO): the resume that
    would cut its torn line says so, in one line, and exits 2."""
    monkeypatch.chdir(tmp_path)  # a socket's path is short
    seeds = write_seeds(
        Path("seeds.jsonl"), [{"instruction": f"Name river {i}."} for i in range(3)]
    )
    with FakeServer() as server:
        first = evol(*run_args(server, seeds, Path("out"), "--generations", "1"))
        assert first.exit_code == 0, first.output
        Path("out/eliminated.jsonl").unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX) as listening:
            listening.bind("out/eliminated.jsonl")
            again = evol(*run_args(server, seeds, Path("out"), "--generations", "1"))
    assert again.exit_code == 2, again.output
    assert "out/eliminated.jsonl: cannot write it: No such device or address" in again.output
    assert "Traceback" not in again.output
