"""What run.json says when a run that was already in its directory cannot go on
(evol.rundir.manifest.record_failed_restart): a complete run stays complete, as its files are;
any other says "failed" and why, whatever its run.json held (#22)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.fake_server import FakeServer
from tests.support.runs import refused_url, run_args, write_seeds

SEEDS = [{"instruction": f"Task {i}: explain the idea of number {i}"} for i in range(3)]


def run_at(url: str, seeds: Path, out: Path, *extra: object) -> list[object]:
    """`evol run ... --json` against `url`, which may be a server that is not there."""
    return ["run", seeds, "--out", out, "--base-url", url, "--quiet", "--json", *extra]


def run_json(out: Path) -> dict[str, Any]:
    return json.loads((out / "run.json").read_text(encoding="utf-8"))


def test_a_complete_run_extended_while_its_server_is_gone_stays_complete(
    evol, server, tmp_path: Path
) -> None:
    """More generations asked of a finished run whose server is now unreachable: the run
    stops before its first call, and run.json still says what its files are, a complete run
    of one generation (a "failed" would mislabel a dataset nothing touched)."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    first = evol(*run_args(server, seeds, out, "--generations", "1"))
    assert first.exit_code == 0, first.stderr
    before = (out / "run.json").read_bytes()
    assert json.loads(before)["status"] == "complete"
    stopped = evol(*run_at(refused_url(), seeds, out, "--generations", "2"))
    assert stopped.exit_code == 2
    assert stopped.stderr.startswith("evol: error: cannot reach ")
    assert (out / "run.json").read_bytes() == before


def test_a_run_json_without_a_summary_is_marked_failed_when_its_run_cannot_go_on(
    evol, tmp_path: Path
) -> None:
    """run.json's format allows a null summary; a resume of such a run that cannot reach its
    server still ends in one line, exit 2, and a run.json that says "failed", updated then."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    with FakeServer() as server:  # the run stops half-way: generation 1 of 2 left undone
        first = evol(*run_args(server, seeds, out, "--generations", "1"))
    assert first.exit_code == 0, first.stderr
    manifest = run_json(out)
    manifest["status"], manifest["summary"] = "interrupted", None
    manifest["updated_at"] = "2020-01-02T03:04:05+00:00"  # as a stop long ago left it
    (out / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    stopped = evol(*run_at(refused_url(), seeds, out, "--generations", "2"))
    assert stopped.exit_code == 2
    (line,) = stopped.stderr.splitlines()
    assert line.startswith("evol: error: cannot reach ")
    after = run_json(out)
    assert (after["status"], after["summary"]) == ("failed", None)
    assert after["updated_at"] != manifest["updated_at"]  # run.json says when it last changed
    unchanged = {"status", "updated_at"}
    assert {k: v for k, v in after.items() if k not in unchanged} == {
        k: v for k, v in manifest.items() if k not in unchanged
    }
