"""Shared fixtures: a clean environment, the fake server, and a CLI runner."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from fake_server import FakeServer  # noqa: E402

import evol  # noqa: E402
from evol.cli import app  # noqa: E402

# Child processes (`python -m evol` in many tests) run the very evol these tests import: the
# source tree under test, or mutmut's mutated copy of it, never another installed one.
_SOURCE = str(Path(evol.__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_SOURCE, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's keys, endpoints or EVOL_* settings."""
    for name in list(os.environ):
        if name.startswith(("EVOL_", "OPENAI_")):
            monkeypatch.delenv(name)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as running:
        yield running


# A port bound for the whole test process and never listened on: a connection to it is
# refused, and no server a test starts can be handed the same port (a port freed a moment ago
# could be, and a test's "refused" proxy would then answer).
_REFUSING = socket.socket()
_REFUSING.bind(("127.0.0.1", 0))


def refused_url() -> str:
    """An http URL of this machine where nothing listens: every connection is refused."""
    return f"http://127.0.0.1:{_REFUSING.getsockname()[1]}/v1"


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


@pytest.fixture
def evol() -> Evol:
    return Evol()


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
