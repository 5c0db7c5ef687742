"""Running evol the way a user does, and the run directories it writes: seeds files, `evol run`
arguments against the fake servers, the in-process CLI, a check of a finished run, and run
directories built by hand."""

from __future__ import annotations

import json
import socket
from functools import cache
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from evol.cli import app
from tests.support.fake_server import FakeServer


@cache
def _refusing_socket() -> socket.socket:
    """A port bound for the whole test process and never listened on: a connection to it is
    refused, and no server a test starts can be handed the same port (a port freed a moment ago
    could be, and a test's "refused" proxy would then answer). Bound on first use, not at import."""
    refusing = socket.socket()
    refusing.bind(("127.0.0.1", 0))
    return refusing


def refused_url() -> str:
    """An http URL of this machine where nothing listens: every connection is refused."""
    return f"http://127.0.0.1:{_refusing_socket().getsockname()[1]}/v1"


def write_seeds(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    return path


def run_args(
    servers: FakeServer | list[FakeServer], seeds: Path, out: Path, *extra: object
) -> list[object]:
    """`evol run SEEDS --out OUT --base-url ... --quiet EXTRA` against one or more fake servers."""
    urls = [
        option
        for server in (servers if isinstance(servers, list) else [servers])
        for option in ("--base-url", server.base_url)
    ]
    return ["run", seeds, "--out", out, *urls, "--quiet", *extra]


def run_at(url: str, seeds: Path, out: Path, *extra: object) -> list[object]:
    """`evol run` against `url`, which may be a server that is not there."""
    return ["run", seeds, "--out", out, "--base-url", url, "--quiet", *extra]


def without_quiet(arguments: list[object]) -> list[object]:
    return [a for a in arguments if a != "--quiet"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class Evol:
    """Runs `evol` in-process through Typer's CliRunner, the way a user types it."""

    def __init__(self) -> None:
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None):
        return self.runner.invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def assert_valid_run(out: Path) -> dict[str, Any]:
    """Check a finished run directory whatever the model wrote; return its run.json.

    Every line is a valid record, ids are unique, lineage is consistent (each parent exists,
    generation = parent's + 1, same root), every reason is a known one, run.json's counts
    equal the files, and dataset.jsonl is gen_0 .. gen_N in order.
    """
    from evol.method.elimination import Reason
    from evol.rundir.records import EliminatedRecord, Record

    manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
    generations = manifest["config"]["generations"]
    kept = {
        g: [Record.model_validate(r) for r in read_jsonl(out / f"gen_{g}.jsonl")]
        for g in range(generations + 1)
    }
    eliminated = [EliminatedRecord.model_validate(r) for r in read_jsonl(out / "eliminated.jsonl")]
    # A seed whose answer failed is eliminated at generation 0 and still evolves.
    failed_seeds = [r for r in eliminated if r.generation == 0]
    by_id = {r.id: r for records in [*kept.values(), failed_seeds] for r in records}
    all_ids = [r.id for records in kept.values() for r in records] + [r.id for r in eliminated]
    assert len(all_ids) == len(set(all_ids)), "duplicate ids"
    for generation, records in kept.items():
        for record in records:
            assert record.generation == generation
            if generation == 0:
                assert (
                    record.parent_id is None and record.root_id == record.id and record.round == 0
                )
                continue
            parent = by_id[record.parent_id]
            assert record.generation == parent.generation + 1 and record.root_id == parent.root_id
            assert 1 <= record.round <= generations and record.operation
    for record in eliminated:
        if record.generation == 0:
            assert record.parent_id is None and record.root_id == record.id and record.round == 0
            assert record.id not in {r.id for r in kept[0]}
            continue
        parent = by_id[record.parent_id]
        assert record.generation == parent.generation + 1 and record.root_id == parent.root_id
        assert record.reason in set(Reason)
    counts = manifest["counts"]
    assert counts["kept_per_generation"] == {str(g): len(rs) for g, rs in kept.items() if rs}
    reasons: dict[str, int] = {}
    for record in eliminated:
        reasons[record.reason.value] = reasons.get(record.reason.value, 0) + 1
    assert counts["eliminated_per_reason"] == reasons
    dataset = read_jsonl(out / "dataset.jsonl")
    assert [r["id"] for r in dataset] == [r.id for g in sorted(kept) for r in kept[g]]
    return manifest


# -- run directories built by hand -----------------------------------------------------------


def record(
    record_id: str, instruction: str, *, output: str | None = "An answer.", **fields: Any
) -> dict[str, Any]:
    """A kept record as evol writes it; lineage fields follow from the id (s1.1.2: root s1)."""
    parts = record_id.split(".")
    generation = len(parts) - 1
    data = {
        "id": record_id,
        "parent_id": ".".join(parts[:-1]) or None,
        "root_id": parts[0],
        "generation": generation,
        "round": int(parts[-1]) if generation else 0,
        "operation": "deepen" if generation else None,
        "instruction": instruction,
        "input": "",
        "output": output,
        "judge": "different" if generation else None,
        "metadata": {},
        "usage": {},
    }
    return data | fields


def write_run(
    run_dir: Path, records: list[dict[str, Any]], eliminated: list[dict[str, Any]] = ()
) -> Path:
    """A run directory as `evol run` leaves it: gen_<k>.jsonl, eliminated.jsonl, run.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    generations = max(r["generation"] for r in records)
    for generation in range(generations + 1):
        rows = [r for r in records if r["generation"] == generation]
        if rows:
            text = "".join(json.dumps(r) + "\n" for r in rows)
            (run_dir / f"gen_{generation}.jsonl").write_text(text, encoding="utf-8")
    if eliminated:
        text = "".join(json.dumps(r) + "\n" for r in eliminated)
        (run_dir / "eliminated.jsonl").write_text(text, encoding="utf-8")
    manifest = {
        "status": "complete",
        "config": {"generations": generations},
        "backend": {"name": "openai", "models": {"evolve": "m", "answer": "m", "judge": "m"}},
    }
    (run_dir / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    return run_dir


def bare_record(record_id: str, **fields: object) -> dict[str, object]:
    """A seed's record with every field the record model requires."""
    return {
        "id": record_id,
        "parent_id": None,
        "root_id": record_id.split(".")[0],
        "round": 0,
        "generation": 0,
        "operation": None,
        "instruction": f"Instruction {record_id}",
        "output": None,
    } | fields
