"""No command writes into a run directory's own files, and no writer follows a link.

Every command that writes where the user says (`report`, `export`, `export --split`, `select`,
`run`/`merge` through the store) refuses a path that is, or lies inside, a file evol keeps in a
run directory, links and `..` resolved; and every file evol writes is opened without
following a link: a link planted at its name is refused in one line, its target untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import threading
from pathlib import Path

import pytest

from evol.errors import RunDirError, UsageError
from evol.jsonl import atomic_write
from evol.quality.scores import Sidecar
from evol.rundir.layout import refuse_run_state
from evol.rundir.store import RunStore
from tests.support.runs import record, run_args, write_run, write_seeds
from tests.support.selection import SCRIPT

pytestmark = pytest.mark.usefixtures("scripted_backend")

RECORDS = [
    record("s1", "Name a river"),
    record("s2", "Name a lake"),
    record("s1.1", "Name a river in Europe"),
    record("s2.2", "Name a lake in Africa"),
    record("s1.1.2", "Name a river in Europe longer than 500 km"),
]
# What a run directory holds beside its records (gen_*.jsonl, run.json), as bytes to compare.
STATE = {
    "dataset.jsonl": b"".join(json.dumps(r).encode() + b"\n" for r in RECORDS),
    ".evol.lock": b"",
    "batch/results.jsonl": b'{"custom_id": "paid for"}\n',
}


@pytest.fixture
def run(tmp_path: Path) -> Path:
    run_dir = write_run(tmp_path / "run", RECORDS)
    for name, content in STATE.items():
        (run_dir / name).parent.mkdir(exist_ok=True)
        (run_dir / name).write_bytes(content)
    return run_dir


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def one_line_refusal(result, *names: object) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for name in names:
        assert str(name) in result.stderr, result.stderr


def score_scripted(evol, run: Path, *options: object):
    """`evol score` with test_select's scripted backend: difficulty only, no network."""
    SCRIPT.clear()
    SCRIPT.update({r["instruction"]: (5, 5) for r in RECORDS})
    return evol("score", run, "--backend", "scripted", "--no-complexity", *options)


COMMANDS = {
    "report": lambda out: ("report", "{run}", "--out", out),
    "report --png": lambda out: ("report", "{run}", "--out", "{tmp}/r.html", "--png", out),
    "export": lambda out: ("export", "{run}", "--out", out),
    "export --split": lambda out: ("export", "{run}", "--out", out, "--split", "a=0.5,b=0.5"),
    "select": lambda out: ("select", "{run}", "--out", out, "--budget", "2"),
}
TARGETS = [
    "{run}/dataset.jsonl",
    "{run}/gen_1.jsonl",
    "{run}/run.json",
    "{run}/batch/results.jsonl",
    "{run}/batch",
    "{run}/calls.jsonl",
    "{run}/.evol.lock",
    "{run}/scores.jsonl",
    "{run}/nowhere/../dataset.jsonl",  # `..` resolved
    "{tmp}/link-to-run/eliminated.jsonl",  # a link to the run resolved
]


@pytest.mark.parametrize(
    ("command", "target"),
    [(command, target) for command in COMMANDS for target in TARGETS if command != "export --split"]
    # A split writes <stem>.<part><suffix>: names of the run's only inside one of its folders.
    + [
        ("export --split", "{run}/batch/results.jsonl"),
        ("export --split", "{tmp}/link-to-run/batch/x"),
    ],
)
def test_no_command_writes_into_a_runs_own_files(
    evol, run: Path, tmp_path: Path, command: str, target: str
) -> None:
    (tmp_path / "link-to-run").symlink_to(run)
    if command == "select":
        assert score_scripted(evol, run).exit_code == 0
    before = snapshot(run)
    fill = {"run": run, "tmp": tmp_path}
    args = [str(a).format(**fill) for a in COMMANDS[command](target)]
    result = evol(*args)
    one_line_refusal(result, target.format(**fill).rsplit("/", 1)[0])
    assert "of the run in" in result.stderr
    assert snapshot(run) == before
    assert not (tmp_path / "r.html").exists()  # refused before anything is written


def test_writing_beside_a_runs_files_is_fine(evol, run: Path) -> None:
    assert evol("report", run, "--out", run / "report.html", "--png", run).exit_code == 0
    assert evol("export", run, "--out", run / "alpaca.jsonl").exit_code == 0
    assert (run / "instruction_length.png").is_file() and (run / "alpaca.jsonl").is_file()


def test_a_run_and_a_merge_refuse_an_out_inside_a_runs_state(
    evol, server, run: Path, tmp_path: Path
) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a sea"}])
    before = snapshot(run)
    result = evol(*run_args(server, seeds, run / "batch" / "new-run"))
    one_line_refusal(result, run / "batch" / "new-run", "inside batch of the run in")
    assert snapshot(run) == before
    with pytest.raises(UsageError, match="batch: is batch of the run in"):
        RunStore.open(run / "batch", generations=1, overwrite=True)  # what merge opens
    assert snapshot(run) == before


def test_the_guard_knows_a_run_by_its_manifest_or_lock(tmp_path: Path) -> None:
    (tmp_path / "not-a-run").mkdir()
    refuse_run_state(tmp_path / "not-a-run" / "dataset.jsonl", "--out")  # a user's name
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / ".evol.lock").write_text("")
    with pytest.raises(UsageError, match=r"give --png a path outside"):
        refuse_run_state(locked / "gen_3.jsonl.tmp", "--png")


# -- no writer follows a link ------------------------------------------------------------------


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """The file a planted link points at: it must come through every test unchanged."""
    path = tmp_path / "precious.txt"
    path.write_bytes(b"precious\nlast line, not JSON")
    return path


@pytest.mark.parametrize(
    ("args", "link"),
    [
        (("export", "{run}", "--out", "{tmp}/out.jsonl"), "{tmp}/out.jsonl"),
        (("export", "{run}", "--out", "{tmp}/out.jsonl"), "{tmp}/out.jsonl.tmp"),
        (
            ("export", "{run}", "--out", "{tmp}/d.jsonl", "--split", "a=0.5,b=0.5"),
            "{tmp}/d.b.jsonl.tmp",
        ),
        (("export", "{run}", "--out", "{tmp}/out.parquet"), "{tmp}/out.parquet.tmp"),
        (("report", "{run}", "--out", "{tmp}/r.html"), "{tmp}/r.html"),
        (
            ("report", "{run}", "--out", "{tmp}/r.html", "--png", "{tmp}/png"),
            "{tmp}/png/lineages.png",
        ),
        (("select", "{run}", "--out", "{tmp}/s.jsonl", "--budget", "2"), "{tmp}/s.jsonl.tmp"),
        (("select", "{run}", "--out", "{tmp}/s.jsonl", "--budget", "2"), "{tmp}/s.jsonl"),
    ],
)
def test_no_output_is_written_through_a_link(
    evol, run: Path, tmp_path: Path, target: Path, args: tuple[str, ...], link: str
) -> None:
    if args[0] == "select":
        assert score_scripted(evol, run).exit_code == 0
    fill = {"run": run, "tmp": tmp_path}
    planted = Path(link.format(**fill))
    planted.parent.mkdir(exist_ok=True)
    planted.symlink_to(target)
    result = evol(*[a.format(**fill) for a in args])
    one_line_refusal(result, planted, "is a symbolic link")
    assert target.read_bytes() == b"precious\nlast line, not JSON"
    assert planted.is_symlink()  # the user's link is left as it was
    assert not [p for p in tmp_path.glob("*.tmp") if not p.is_symlink()]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("scores.jsonl", ()),
        ("score_calls.jsonl", ()),
        ("score_calls.jsonl.tmp", ()),
        ("metrics.json.tmp", ("--no-difficulty",)),
        ("metrics.json", ("--no-difficulty",)),
        (".evol.lock", ("--no-difficulty",)),
        ("contamination.json.tmp", ("--no-difficulty", "--no-metrics", "--against", "EVAL")),
    ],
)
def test_score_writes_through_no_link(
    evol, run: Path, tmp_path: Path, target: Path, name: str, options: tuple[str, ...]
) -> None:
    evaluation = write_seeds(tmp_path / "eval.jsonl", [{"instruction": "Name a river"}])
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(target)
    before = snapshot(run)
    result = score_scripted(evol, run, *(str(evaluation) if o == "EVAL" else o for o in options))
    one_line_refusal(result, run / name, "is a symbolic link")
    assert target.read_bytes() == b"precious\nlast line, not JSON"
    assert snapshot(run) == before and (run / name).is_symlink()


def test_the_scores_sidecar_neither_cuts_nor_appends_through_a_link(
    run: Path, target: Path
) -> None:
    (run / "scores.jsonl").symlink_to(target)
    with pytest.raises(RunDirError, match="is a symbolic link"):
        Sidecar(run)
    assert target.read_bytes() == b"precious\nlast line, not JSON"


@pytest.mark.parametrize("planted", ["dataset.jsonl", "dataset.jsonl.tmp"])
def test_an_atomic_write_follows_no_link(tmp_path: Path, target: Path, planted: str) -> None:
    (tmp_path / planted).symlink_to(target)
    with pytest.raises(RunDirError, match=f"{planted}: is a symbolic link"):
        atomic_write(tmp_path / "dataset.jsonl", "new\n")
    assert target.read_bytes() == b"precious\nlast line, not JSON"
    assert os.path.islink(tmp_path / planted)


THEIRS = b'{"root_id": "b", "round": 1}\n{"root_id": "a", "round": 1}\n'


@pytest.mark.parametrize("step", ["sort_outputs", "write_dataset"])
def test_a_run_sorts_and_joins_its_record_files_through_no_link(tmp_path: Path, step: str) -> None:
    """A run's end reads its record files back to put them in order and to join them into
    dataset.jsonl: a link planted in a record file's place since the run began is refused (a
    link there at the start is refused by the open), neither read, followed nor replaced."""
    out, theirs = tmp_path / "run", tmp_path / "theirs.jsonl"
    theirs.write_bytes(THEIRS)
    store = RunStore.open(out, generations=1, overwrite=False)
    try:
        (out / "gen_1.jsonl").symlink_to(theirs)
        with pytest.raises(RunDirError) as raised:
            store.sort_outputs(
                {"a": 0, "b": 1}
            ) if step == "sort_outputs" else store.write_dataset()
    finally:
        store.close()
    link = out / "gen_1.jsonl"
    assert str(raised.value) == f"{link}: is a symbolic link; remove it (evol made none)"
    assert theirs.read_bytes() == THEIRS and link.is_symlink()
    assert not (out / "dataset.jsonl").exists() and not list(out.glob("*.tmp"))


# -- no writer goes through a hard link or into a FIFO ------------------------------------------
# O_NOFOLLOW stops symbolic links only: every output is written to a temporary made afresh
# (O_EXCL, a stale one removed) and renamed into place, so no open ever lands on an old inode.

OUTPUTS = {
    "report": (("report", "{run}", "--out", "{tmp}/r.html"), "{tmp}/r.html"),
    "report --png": (
        ("report", "{run}", "--out", "{tmp}/r.html", "--png", "{tmp}/png"),
        "{tmp}/png/lineages.png",
    ),
    "export": (("export", "{run}", "--out", "{tmp}/out.jsonl"), "{tmp}/out.jsonl"),
    "export .tmp": (("export", "{run}", "--out", "{tmp}/out.jsonl"), "{tmp}/out.jsonl.tmp"),
    "export --split .tmp": (
        ("export", "{run}", "--out", "{tmp}/d.jsonl", "--split", "a=0.5,b=0.5"),
        "{tmp}/d.b.jsonl.tmp",
    ),
    "select": (("select", "{run}", "--out", "{tmp}/s.jsonl", "--budget", "2"), "{tmp}/s.jsonl"),
    "select .tmp": (
        ("select", "{run}", "--out", "{tmp}/s.jsonl", "--budget", "2"),
        "{tmp}/s.jsonl.tmp",
    ),
    "score metrics.json.tmp": (("--no-difficulty",), "{run}/metrics.json.tmp"),
    "score contamination.json.tmp": (
        ("--no-difficulty", "--no-metrics", "--against", "{tmp}/eval.jsonl"),
        "{run}/contamination.json.tmp",
    ),
}


def planted_path(evol, run: Path, tmp_path: Path, name: str) -> Path:
    """Where the link or FIFO goes for the command `name`, with what the command needs made."""
    write_seeds(tmp_path / "eval.jsonl", [{"instruction": "Name a river"}])
    if name.startswith("select"):
        assert score_scripted(evol, run).exit_code == 0
    path = Path(OUTPUTS[name][1].format(run=run, tmp=tmp_path))
    path.parent.mkdir(exist_ok=True)
    return path


def run_output_command(evol, run: Path, tmp_path: Path, name: str):
    args = tuple(a.format(run=run, tmp=tmp_path) for a in OUTPUTS[name][0])
    return score_scripted(evol, run, *args) if name.startswith("score") else evol(*args)


@pytest.mark.parametrize("name", OUTPUTS)
def test_no_output_is_written_through_a_hard_link(
    evol, run: Path, tmp_path: Path, name: str
) -> None:
    victim = run / "dataset.jsonl"  # a run's own file: the worst place a write could land
    os.link(victim, planted_path(evol, run, tmp_path, name))
    before = snapshot(run)
    result = run_output_command(evol, run, tmp_path, name)
    assert result.exit_code == 0, result.output
    assert victim.read_bytes() == before["dataset.jsonl"]
    if not name.startswith("score"):
        assert snapshot(run) == before


class FifoReader:
    """Holds a FIFO's read end open and drains it, so that a writer can neither block on the
    open nor on a full pipe: whatever a command writes into the FIFO ends up in `read`."""

    def __init__(self, fifo: Path):
        self.fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.read = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while not self.done.is_set():
            select.select([self.fd], [], [], 0.1)
            with contextlib.suppress(BlockingIOError):
                chunk = os.read(self.fd, 1 << 16)
                self.read += chunk
                if not chunk:
                    self.done.wait(0.01)  # no writer: nothing to read yet

    def close(self) -> bytes:
        self.done.set()
        self.thread.join()
        with contextlib.suppress(BlockingIOError):
            self.read += os.read(self.fd, 1 << 20)
        os.close(self.fd)
        return self.read


@pytest.mark.parametrize("name", OUTPUTS)
def test_no_output_is_written_into_a_fifo(evol, run: Path, tmp_path: Path, name: str) -> None:
    fifo = planted_path(evol, run, tmp_path, name)
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    try:
        result = run_output_command(evol, run, tmp_path, name)
    finally:
        leaked = reader.close()
    assert result.exit_code == 0, result.output
    assert leaked == b""


TWO_SEEDS = [{"instruction": f"Task {i}: explain the idea"} for i in range(2)]


def loop_at(tmp_path: Path) -> Path:
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    return tmp_path / "loop-a"


def test_a_symbolic_link_loop_as_run_out_is_one_line(evol, server, tmp_path: Path) -> None:
    seeds, loop = write_seeds(tmp_path / "seeds.jsonl", TWO_SEEDS), loop_at(tmp_path)
    result = evol(*run_args(server, seeds, loop))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"evol: error: {loop}: a loop of symbolic links; give --out another path"
    ]
    assert server.requests == []


def test_a_symbolic_link_loop_as_export_out_is_one_line(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", TWO_SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    loop = loop_at(tmp_path)
    result = evol("export", out, "--out", loop)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"evol: error: {loop}: a loop of symbolic links; give --out another path"
    ]
