"""A write that fails (full disk, file-size or open-file limit) ends the run with one line and a
status, and the same command afterwards finishes it as if nothing had happened.

The faults are real: a child process under RLIMIT_FSIZE gets EFBIG on the write that crosses
the limit (Python ignores SIGXFSZ), under RLIMIT_NOFILE EMFILE, and /dev/full ENOSPC.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evol.errors import StorageError
from evol.jsonl import append_line, open_for_append
from tests.support.fake_server import FakeServer
from tests.support.runs import write_seeds

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
# Lineages of every shape: kept, eliminated each round, eliminated once then kept (so that a
# later round appends to an earlier generation's file).
MARKERS = ["", "", "[leak-once] ", "", "[sorry] ", "[equal] ", "[leak] "]
SEEDS = [{"instruction": f"{MARKERS[i % 7]}Task {i}: explain topic {i}"} for i in range(40)]


def evol_run(
    server: FakeServer, seeds: Path, out: Path, generations: int, *, file_size: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`evol run ... --json` in a child process, under a file-size limit if one is given."""
    command = [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out),
        "--base-url", server.base_url, "--quiet", "--json", "--generations", str(generations),
        "--concurrency", "4", "--seed", "3",
    ]  # fmt: skip

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return subprocess.run(
        command,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit_file_size if file_size else None,
    )


def record_files(out: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out.glob("*.jsonl"))}


def assert_one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, one line on stderr and no traceback, a `--json` object saying `failed`."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("evol: error: ")
    assert json.loads(result.stdout)["status"] == "failed"
    return line


@pytest.mark.slow
@pytest.mark.heavy  # left out of make mutate
def test_a_write_cut_at_each_point_ends_cleanly_and_the_resume_loses_nothing(
    tmp_path: Path,
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    first, straight = tmp_path / "first", tmp_path / "straight"
    with FakeServer() as server:
        # Two generations first, then two more: the second part appends to every kind of
        # file that already holds something, and starts the journal and new generations.
        assert evol_run(server, seeds, first, 1).returncode == 0
        shutil.copytree(first, straight)
        assert evol_run(server, seeds, straight, 3).returncode == 0
        before = {path.name: path.stat().st_size for path in first.iterdir()}
        after = {path.name: path.stat().st_size for path in straight.iterdir()}
        cuts = [
            before["run.json"] // 2,  # the first write: run.json saying `running`
            before["run.json"] + 40,  # a record, and then run.json cannot say `failed`
            before["gen_1.jsonl"] + 50,  # a lineage eliminated once, kept in round 2
            before["eliminated.jsonl"] + 50,
            *range(before["eliminated.jsonl"] + 4000, after["dataset.jsonl"], 8000),
            after["dataset.jsonl"] - 100,  # every record written, then the dataset
        ]
        named: set[str] = set()
        unsaid = 0
        for cut in cuts:
            out = tmp_path / f"cut-at-{cut}"
            shutil.copytree(first, out)
            line = assert_one_clean_line(evol_run(server, seeds, out, 3, file_size=cut))
            path = line.removeprefix("evol: error: ").split(": ", 1)[0]
            assert Path(path).parent == out and "(ulimit -f) is reached" in line, line
            named.add(Path(path).name)
            manifest = json.loads((out / "run.json").read_text())
            if "run.json was not updated either" in line:
                unsaid += 1
            elif Path(path).name != "run.json":
                assert manifest["status"] == "failed" and manifest["summary"]["error"] in line
            resumed = evol_run(server, seeds, out, 3)
            assert resumed.returncode == 0, resumed.stderr
            assert record_files(out) == record_files(straight), cut
            assert json.loads((out / "run.json").read_text())["status"] == "complete"
    assert {"run.json", "gen_1.jsonl", "eliminated.jsonl", "dataset.jsonl"} <= named, named
    assert "calls.jsonl" in named or any(
        name.startswith("gen_") for name in named - {"gen_1.jsonl"}
    )
    assert unsaid >= 1


def test_a_failed_append_is_taken_back_whole(tmp_path: Path) -> None:
    """At a file-size limit the OS writes what fits, then refuses: no half line is left."""
    path = tmp_path / "gen_1.jsonl"
    child = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from evol.errors import StorageError\n"
        "from evol.jsonl import append_line, open_for_append\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        f"writer = open_for_append(Path({str(path)!r}))\n"
        "try:\n"
        "    for number in range(100):\n"
        "        append_line(writer, {'id': f'record {number}', 'text': 'x' * 90})\n"
        "except StorageError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert result.stdout.startswith(f"{path}: cannot write it: File too large: "), result.stderr
    assert "the file-size limit of 1,000 bytes (ulimit -f) is reached" in result.stdout
    content = path.read_bytes()
    assert 0 < len(content) <= 1000 and content.endswith(b"\n")
    assert [json.loads(line)["id"] for line in content.splitlines()] == [
        f"record {number}" for number in range(len(content.splitlines()))
    ]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_names_the_file_and_what_to_do() -> None:
    writer = open_for_append(Path("/dev/full"))
    try:
        with pytest.raises(StorageError) as raised:
            append_line(writer, {"id": "a"})
    finally:
        writer.close()
    assert str(raised.value) == (
        "/dev/full: cannot write it: No space left on device: free some space, then run the "
        "same command again"
    )


def test_running_out_of_open_files_on_a_write_says_the_limit_and_the_remedy(
    tmp_path: Path,
) -> None:
    child = (
        "import resource\n"
        "from pathlib import Path\n"
        "from evol.errors import StorageError\n"
        "from evol.jsonl import open_for_append\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))\n"
        "held = []\n"
        "try:\n"
        "    while True:\n"
        "        held.append(open('/dev/null'))\n"
        "except OSError:\n"
        "    held.pop().close()\n"
        "    held.append(open('/dev/null'))  # every descriptor taken\n"
        "try:\n"
        f"    open_for_append(Path({str(tmp_path / 'calls.jsonl')!r}))\n"
        "except StorageError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
    assert result.stdout.strip() == (
        f"{tmp_path / 'calls.jsonl'}: cannot write it: too many open files: the limit is 64 "
        "(ulimit -n), lower --concurrency or raise the limit"
    ), result.stderr


@pytest.mark.slow
def test_an_open_file_limit_below_the_concurrency_is_refused_before_any_call(
    tmp_path: Path,
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:8]), tmp_path / "run"

    def run_under(limit: int, concurrency: int) -> subprocess.CompletedProcess[str]:
        def limit_open_files() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        command = [
            sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out),
            "--base-url", server.base_url, "--quiet", "--json", "--generations", "1",
            "--concurrency", str(concurrency),
        ]  # fmt: skip
        return subprocess.run(
            command,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=limit_open_files,
        )

    with FakeServer() as server:
        refused = run_under(48, concurrency=64)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr
        assert refused.stderr.strip() == (
            "evol: error: too many open files: the limit is 48 (ulimit -n) and --concurrency 64 "
            "needs about 81: lower --concurrency or raise the limit"
        )
        assert json.loads(refused.stdout)["status"] == "failed"
        assert server.requests == [] and not (out / "run.json").exists()
        lowered = run_under(48, concurrency=8)  # what the message says to do works
        assert lowered.returncode == 0, lowered.stderr
