"""The run directory's promises for a resume, on the store itself: the call journal replays each
reply once and only for unfinished steps, the lineage index says exactly where each seed
stands, a torn tail is cut at any length, a corrupt line is named by its number, a run made
with other options is refused naming them, and dataset.jsonl holds every kept generation.

These open the run directory in-process as `evol run` does (evol.pipeline: the store, its records
read into the lineage index, the call journal, the manifest checked by `check_resume` and
`is_finished`), while the crash tests in test_rundir_durability.py kill a real `python -m evol`, so
that each rule is checked where it is decided.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evol.config import RunConfig
from evol.errors import ConfigMismatch, RunDirError
from evol.jsonl import repair_torn_tail
from evol.method.elimination import Reason
from evol.rundir.fingerprint import Fingerprint
from evol.rundir.journal import CallJournal
from evol.rundir.layout import JOURNAL
from evol.rundir.lineage import LineageIndex, LineageProgress, Tip
from evol.rundir.manifest import Manifest, check_resume, is_finished, load_manifest, write_manifest
from evol.rundir.records import EliminatedRecord, Record
from evol.rundir.runjson import RecordedConfig
from evol.rundir.store import RunStore
from tests.support.batch_backend import MODEL
from tests.support.fake_server import FakeServer, Fault, kind_of
from tests.support.runs import bare_record, read_jsonl, run_args, write_seeds

MODELS = {"evolve": "fake-model"}
FINGERPRINT = Fingerprint(models=MODELS, seed=0)
REPLY = {"text": "a reply", "prompt_tokens": 3, "completion_tokens": 2, "finish_reason": "stop"}


@dataclass
class OpenRun:
    """A run directory opened as `evol run` opens it."""

    store: RunStore
    journal: CallJournal
    lineages: LineageIndex
    finished: bool

    def close(self) -> None:
        self.journal.close()
        self.store.close()


def config(out: Path, generations: int) -> RunConfig:
    return RunConfig(seeds=out / "seeds.jsonl", out=out, generations=generations)


def open_run(out: Path, generations: int = 3, fingerprint: Fingerprint | None = None) -> OpenRun:
    """Open (or reopen) a run directory in evol.pipeline's order, with a manifest like its own:
    lock it, refuse other options, answer a finished run without reading it, else read every
    record into the lineage index and open the journal of the steps not recorded."""
    fingerprint = fingerprint or FINGERPRINT
    store = RunStore.open(out, generations=generations, overwrite=False)
    try:
        previous = load_manifest(out, required=False)
        if previous is None:
            write_manifest(out, manifest(fingerprint, generations, "running"))
        else:
            check_resume(out, previous, fingerprint, config(out, generations))
        lineages = LineageIndex(generations)
        if previous is not None and is_finished(
            previous, config(out, generations), store.output_sizes()
        ):
            return OpenRun(store, CallJournal(out / JOURNAL), lineages, finished=True)
        recorded: set[str] = set()
        store.scan(also=[lineages.add, lambda data, _reason: recorded.add(data["id"])])
        return OpenRun(store, CallJournal.open(out / JOURNAL, recorded), lineages, finished=False)
    except BaseException:
        store.close()
        raise


def peek(out: Path, generations: int) -> LineageIndex:
    """Where each lineage stands, read from outside a run (as `evol plan` reads it): no lock,
    no repair."""
    lineages = LineageIndex(generations)
    if out.is_dir():
        RunStore(out, generations).scan(repair=False, also=[lineages.add])
    return lineages


def manifest(fingerprint: Fingerprint, generations: int, status: str) -> Manifest:
    return Manifest(
        status=status, fingerprint=fingerprint, config=RecordedConfig(generations=generations)
    )


def kept(record_id: str, generation: int, round_: int, text: str = "") -> Record:
    root = record_id.split(".")[0]
    parent = record_id.rsplit(".", 1)[0] if generation else None
    return Record(
        id=record_id,
        parent_id=parent,
        root_id=root,
        generation=generation,
        round=round_,
        operation="deepen" if generation else None,
        instruction=text or f"instruction of {record_id}",
        input=f"input of {record_id}",
        output="an answer",
    )


def eliminated(record_id: str, generation: int, round_: int) -> EliminatedRecord:
    data = kept(record_id, generation, round_).model_dump()
    return EliminatedRecord(**data, reason=Reason.SORRY)


def journal_lines(out: Path) -> list[tuple[str, str]]:
    lines = (out / JOURNAL).read_text(encoding="utf-8").splitlines()
    return [(entry["item"], entry["role"]) for entry in map(json.loads, lines)]


# -- the call journal ------------------------------------------------------------------------


def test_a_journalled_reply_is_replayed_once_and_only_for_an_unfinished_step(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    run = open_run(out)
    run.journal.remember("s1.1", "evolve", REPLY | {"text": "rewrite of s1"})
    run.journal.remember("s1.1", "judge", REPLY | {"text": "Not equal"})
    run.journal.remember("s2.1", "evolve", REPLY | {"text": "rewrite of s2"})
    run.store.add(kept("s2.1", 1, 1))  # s2's step is recorded: its reply is spent
    assert run.journal.recall("s1.1", "evolve") is None  # only replies from before the open
    run.close()

    run = open_run(out)
    assert run.journal.recall("s1.1", "evolve") == REPLY | {"text": "rewrite of s1"}
    assert run.journal.recall("s1.1", "evolve") is None  # replayed once, then paid again
    assert run.journal.recall("s1.1", "answer") is None  # never journalled
    assert run.journal.recall("s2.1", "evolve") is None
    assert run.journal.recall("s1.1", "judge") == REPLY | {"text": "Not equal"}
    run.close()
    # The journal was rewritten with what is left to replay, in the order it came.
    assert journal_lines(out) == [("s1.1", "evolve"), ("s1.1", "judge")]


def test_an_eliminated_step_spends_its_journalled_replies_too(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out)
    run.journal.remember("s1.1", "evolve", REPLY)
    run.store.add_eliminated(eliminated("s1.1", 1, 1))
    run.close()
    run = open_run(out)
    assert run.journal.recall("s1.1", "evolve") is None
    run.close()
    assert journal_lines(out) == []


def test_a_torn_journal_entry_is_cut_and_the_whole_ones_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out)
    run.journal.remember("s1.1", "evolve", REPLY)
    run.close()
    with (out / JOURNAL).open("ab") as journal:
        journal.write(b'{"item": "s1.1", "role": "answer", "reply": {"te')  # killed mid-write
    run = open_run(out)
    assert run.journal.recall("s1.1", "evolve") == REPLY
    assert run.journal.recall("s1.1", "answer") is None
    run.close()


def test_the_journal_is_dropped_once_every_step_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out)
    run.journal.remember("s1.1", "evolve", REPLY)
    run.journal.clear()
    assert not (out / JOURNAL).exists()
    run.journal.remember("s1.2", "evolve", REPLY)  # a later call opens a new journal
    run.close()
    assert journal_lines(out) == [("s1.2", "evolve")]


# -- the lineage index -----------------------------------------------------------------------


def test_the_index_says_where_each_lineage_stands(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out, generations=4)
    run.store.add(kept("a", 0, 0))
    run.store.add(kept("a.1", 1, 1))
    run.store.add_eliminated(eliminated("a.1.2", 2, 2))  # round 2 failed: a.1 stays the tip
    run.store.add(kept("a.1.3", 2, 3, text="the newest kept rewrite"))
    run.store.add_eliminated(eliminated("b", 0, 0))  # the seed's answer failed; the seed still ran
    run.store.add(kept("c.1", 1, 1))  # answer_seeds off: no record of the seed itself
    run.close()

    run = open_run(out, generations=4)
    a, b, c = run.lineages.progress("a"), run.lineages.progress("b"), run.lineages.progress("c")
    assert (a.seed_done, a.rounds_done, a.tip) == (
        True,
        3,
        Tip("a.1.3", "the newest kept rewrite", "input of a.1.3", 2),
    )
    assert (b.seed_done, b.rounds_done, b.tip) == (True, 0, None)
    assert (c.seed_done, c.rounds_done, c.tip) == (
        False,
        1,
        Tip("c.1", "instruction of c.1", "input of c.1", 1),
    )
    assert run.lineages.progress("never-seen") == LineageProgress()  # a fresh lineage
    # Steps done: a's seed and 3 rounds, b's seed, c's one round.
    assert run.lineages.steps_done() == 4 + 1 + 1
    assert list(run.store.kept_instructions()) == [
        ("a", "a", "instruction of a"),
        ("a.1", "a", "instruction of a.1"),
        ("c.1", "c", "instruction of c.1"),
        ("a.1.3", "a", "the newest kept rewrite"),
    ]
    run.close()


def test_after_a_failed_round_the_lineage_evolves_its_deepest_kept_rewrite(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    run = open_run(out, generations=5)
    run.store.add(kept("a.1.2", 2, 2, text="deeper"))
    run.store.add(kept("a.1", 1, 1))
    run.store.add_eliminated(eliminated("a.1.2.4", 3, 4))
    run.close()
    run = open_run(out, generations=5)
    progress = run.lineages.progress("a")
    assert (progress.rounds_done, progress.tip) == (4, Tip("a.1.2", "deeper", "input of a.1.2", 2))
    run.close()


def test_a_finished_lineage_keeps_its_place_but_not_its_text(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out, generations=2)
    run.store.add(kept("a", 0, 0))
    run.store.add(kept("a.1", 1, 1))
    run.store.add(kept("a.1.2", 2, 2))
    run.store.add(kept("b.1", 1, 1))
    run.close()
    run = open_run(out, generations=2)
    assert run.lineages.progress("a").tip == Tip("a.1.2", "", "", 2)
    assert run.lineages.progress("b").tip == Tip("b.1", "instruction of b.1", "input of b.1", 1)
    assert run.lineages.steps_done() == 3 + 1
    run.close()
    # Asked for more rounds, the lineage needs its text again, and gets it.
    run = open_run(out, generations=3)
    assert run.lineages.progress("a").tip == Tip(
        "a.1.2", "instruction of a.1.2", "input of a.1.2", 2
    )
    assert run.lineages.steps_done() == 3 + 1
    run.close()


def test_steps_beyond_the_generations_asked_for_are_not_counted(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out, generations=3)
    for round_ in (1, 2, 3):
        run.store.add_eliminated(eliminated(f"a.{round_}", 1, round_))
    run.close()
    assert peek(out, generations=2).steps_done() == 2


@pytest.mark.parametrize(
    ("lines", "number", "why"),
    [
        (["{torn", "R2"], 1, "corrupt record"),
        (["R1", "{torn", "R3"], 2, "corrupt record"),
        (["R1", "R2", "{torn", "R3"], 3, "corrupt record"),
        (["R1", "{}", "R3"], 2, "not an evol record"),
        (["R1", '{"id": "s2", "root_id": "s2", "round": "0", "generation": 0}'], 2, "not an"),
    ],
)
def test_a_corrupt_record_inside_a_file_is_named_by_its_line(
    tmp_path: Path, lines: list[str], number: int, why: str
) -> None:
    out = tmp_path / "run"
    open_run(out).close()
    records = {
        f"R{i}": json.dumps(kept(f"s{i}", 0, 0).model_dump(mode="json")) for i in range(1, 4)
    }
    path = out / "gen_0.jsonl"
    path.write_text("".join(records.get(line, line) + "\n" for line in lines))
    with pytest.raises(RunDirError) as raised:
        open_run(out)
    assert str(raised.value).startswith(f"{path}:{number}: {why}")
    assert str(raised.value).endswith("; use --overwrite to start afresh")


def test_a_look_before_the_run_skips_a_torn_line_and_leaves_the_file_alone(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    run = open_run(out)
    run.store.add(kept("a", 0, 0))
    run.close()
    path = out / "gen_0.jsonl"
    torn = path.read_bytes() + b'{"id": "b", "root_id": "b", "ro'
    path.write_bytes(torn)
    peeked = peek(out, generations=3)
    assert (peeked.progress("a").seed_done, peeked.progress("b").seed_done) == (True, False)
    assert path.read_bytes() == torn  # only a real run, under the lock, cuts it
    assert peek(tmp_path / "nothing-here", generations=3).steps_done() == 0


# -- refusing another run's directory --------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "generations", "named"),
    [
        (
            Fingerprint(models={"evolve": "other"}, seed=0),
            3,
            {"--model": (MODELS, {"evolve": "other"})},
        ),
        (Fingerprint(models=MODELS, seed=1), 3, {"--seed": (0, 1)}),
        # A field the run did not record (an evol before it) is named too.
        (
            Fingerprint(models=MODELS, seed=0, answer_check=True),
            3,
            {"--answer-check": (None, True)},
        ),
        (FINGERPRINT, 2, {"--generations": (3, 2)}),  # fewer rounds would hide records
        (FINGERPRINT, 3, {}),
        (FINGERPRINT, 4, {}),  # more rounds extend the run
    ],
)
def test_a_resume_with_other_options_is_refused_naming_each(
    tmp_path: Path, now: Fingerprint, generations: int, named: dict[str, Any]
) -> None:
    previous = manifest(FINGERPRINT, 3, "complete")
    if not named:
        check_resume(tmp_path, previous, now, config(tmp_path, generations))
        return
    with pytest.raises(ConfigMismatch) as raised:
        check_resume(tmp_path, previous, now, config(tmp_path, generations))
    assert raised.value.differences == named
    assert str(raised.value).startswith(f"{tmp_path} holds a run made with other options: ")


@pytest.mark.parametrize(
    ("previous", "generations", "named"),
    [
        # A manifest from before fingerprints (or hand-edited) names every option, once.
        ({"status": "running"}, 0, {"--model": (None, MODELS), "--seed": (None, 0)}),
        ({"fingerprint": FINGERPRINT}, 0, {}),
        ({"fingerprint": FINGERPRINT, "config": {}}, 0, {}),
        ({"fingerprint": FINGERPRINT, "config": {"generations": 1}}, 0, {"--generations": (1, 0)}),
    ],
)
def test_a_manifest_missing_parts_is_compared_as_far_as_it_goes(
    tmp_path: Path, previous: dict[str, Any], generations: int, named: dict[str, Any]
) -> None:
    previous = Manifest.model_validate(previous)
    if not named:
        check_resume(tmp_path, previous, FINGERPRINT, config(tmp_path, generations))
        return
    with pytest.raises(ConfigMismatch) as raised:
        check_resume(tmp_path, previous, FINGERPRINT, config(tmp_path, generations))
    assert raised.value.differences == named


def test_a_refused_resume_leaves_the_directory_unlocked_and_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out)
    run.store.add(kept("a", 0, 0))
    run.close()
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(ConfigMismatch):
        open_run(out, fingerprint=Fingerprint(models={"evolve": "other"}, seed=0))
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    open_run(out).close()  # the lock was given back


def test_a_finished_run_is_recognised_only_while_its_files_are_as_it_left_them(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    run = open_run(out, generations=1)
    run.store.add(kept("a", 0, 0))
    run.store.add(kept("a.1", 1, 1))
    run.store.write_dataset()
    write_manifest(
        out,
        manifest(FINGERPRINT, 1, "complete").model_copy(
            update={"outputs": run.store.output_sizes()}
        ),
    )
    run.close()

    run = open_run(out, generations=1)
    assert run.finished and run.lineages.progress("a") == LineageProgress()  # not read
    run.close()
    run = open_run(out, generations=2)  # more rounds asked for
    assert not run.finished and run.lineages.progress("a").rounds_done == 1
    run.close()

    with (out / "gen_1.jsonl").open("ab") as gen_1:  # touched since: read it again
        gen_1.write(line("b.1", generation=1))
    run = open_run(out, generations=1)
    assert not run.finished and run.lineages.progress("b").rounds_done == 1
    run.close()


def test_a_complete_manifest_without_its_config_is_read_again(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out, generations=1)
    run.store.add(kept("a", 0, 0))
    outputs = run.store.output_sizes()
    write_manifest(out, Manifest(status="complete", fingerprint=FINGERPRINT, outputs=outputs))
    run.close()
    run = open_run(out, generations=1)
    assert not run.finished and run.lineages.progress("a").seed_done
    run.close()


def test_a_running_run_is_never_taken_for_a_finished_one(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out, generations=1)
    run.store.add(kept("a", 0, 0))
    running = manifest(FINGERPRINT, 1, "running")
    write_manifest(out, running.model_copy(update={"outputs": run.store.output_sizes()}))
    run.close()
    run = open_run(out, generations=1)
    assert not run.finished and run.lineages.progress("a").seed_done
    run.close()


def test_overwrite_starts_afresh_and_leftover_temporary_files_go(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out)
    run.store.add(kept("a", 0, 0))
    run.journal.remember("a.1", "evolve", REPLY)
    run.close()
    (out / "gen_0.jsonl.tmp").write_text("half a sort")
    (out / "notes.tmp").write_text("the user's")
    # With --overwrite, evol run deletes the run before it reads anything: no options to match.
    store = RunStore.open(out, generations=3, overwrite=True)
    assert load_manifest(out, required=False) is None
    lineages, recorded = LineageIndex(3), set[str]()
    store.scan(also=[lineages.add, lambda data, _reason: recorded.add(data["id"])])
    assert not lineages.progress("a").seed_done and recorded == set()
    journal = CallJournal.open(out / JOURNAL, recorded)
    assert journal.recall("a.1", "evolve") is None
    journal.close()
    store.close()
    assert sorted(path.name for path in out.iterdir()) == [".evol.lock", "notes.tmp"]


# -- torn tails of any length, and the dataset ------------------------------------------------


def line(record_id: str, size: int = 0, generation: int = 0) -> bytes:
    data = kept(record_id, generation, generation, text="x" * size).model_dump(mode="json")
    return json.dumps(data).encode() + b"\n"


@pytest.mark.parametrize("size", [10, 70_000, 1_200_000, 2_300_000])  # inside, past 64 KiB, 1 MiB
def test_a_torn_last_line_of_any_length_is_cut(tmp_path: Path, size: int) -> None:
    path = tmp_path / "gen_0.jsonl"
    whole = line("a") + line("b", size)
    for cut, expected in [
        (len(whole), whole),  # intact
        (len(whole) - 1, line("a")),  # only its newline lost: cut, never glued to the next
        (len(line("a")) + size // 2, line("a")),
        (len(line("a")) + 1, line("a")),
        (len(line("a")), line("a")),
    ]:
        path.write_bytes(whole[:cut])
        repair_torn_tail(path)
        assert path.read_bytes() == expected, cut


@pytest.mark.parametrize("size", [10, 70_000, 1_200_000])
def test_a_file_that_is_one_torn_line_is_emptied(tmp_path: Path, size: int) -> None:
    path = tmp_path / "gen_0.jsonl"
    path.write_bytes(line("a", size)[:-1])
    repair_torn_tail(path)
    assert path.read_bytes() == b""
    path.write_bytes(line("a", size))
    repair_torn_tail(path)
    assert path.read_bytes() == line("a", size)


def test_a_whole_last_line_that_is_not_json_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "gen_0.jsonl"
    path.write_bytes(line("a") + b'{"id": "b", \n')
    repair_torn_tail(path)
    assert path.read_bytes() == line("a")


def test_the_dataset_is_every_kept_generation_in_order(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run = open_run(out, generations=3)
    run.store.add(kept("a.1.2.3", 3, 3))
    run.store.add(kept("a", 0, 0))
    run.store.add(kept("b", 0, 0))
    run.store.add(kept("a.1", 1, 1))  # gen_2 is missing: every round-2 rewrite failed
    run.store.add_eliminated(eliminated("b.1", 1, 1))
    assert run.store.write_dataset() == 4
    run.close()
    ids = [json.loads(row)["id"] for row in (out / "dataset.jsonl").read_text().splitlines()]
    assert ids == ["a", "b", "a.1", "a.1.2.3"]
    assert not list(out.glob("*.tmp"))


# -- the call journal of a failed run (found by mutation testing) ------------------------------


# -- the call journal at the end of a run ---------------------------------------------------------

JOURNAL_SEEDS = [
    {"id": "s0", "instruction": "Explain photosynthesis to a child"},
    {"id": "s1", "instruction": "Describe a lighthouse at night [doomed]"},
    {"id": "s2", "instruction": "Compare TCP and UDP"},
]


def doomed_answers(body: dict[str, Any]) -> Fault | None:
    """The answer to s1's rewrite fails every time; everything else is answered."""
    text = body["messages"][-1]["content"]
    if kind_of(body) == "answer" and "[doomed]" in text and "Also consider case" in text:
        return Fault("status", 500)
    return None


def test_a_failed_runs_journal_is_kept_and_its_resume_pays_only_what_failed(evol, tmp_path) -> None:
    """The step whose answer failed had its rewrite paid for: the journal keeps that reply, so
    the resume asks only for the answer (and what follows it), and ends where a run without
    the failure ends; the journal goes once the run is complete."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", JOURNAL_SEEDS)
    options = ("--generations", "1", "--model", MODEL, "--max-retries", "0", "--seed", "5")
    with FakeServer() as server:
        straight = evol(*run_args(server, seeds, tmp_path / "straight", *options))
        assert straight.exit_code == 0, straight.stderr
    out = tmp_path / "run"
    with FakeServer(faults=doomed_answers) as server:
        failed = evol(*run_args(server, seeds, out, *options, "--json"))
        evolved = len(server.requests_for("evolve"))
    assert failed.exit_code == 1, failed.stderr
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    journalled = {(entry["item"], entry["role"]) for entry in read_jsonl(out / "calls.jsonl")}
    assert ("s1.1", "evolve") in journalled
    # Failed again: nothing paid twice, and the journal keeps only the step not recorded.
    with FakeServer(faults=doomed_answers) as server:
        assert evol(*run_args(server, seeds, out, *options)).exit_code == 1
        assert [kind_of(body) for body in server.requests] == ["answer"]
    kept = sorted((e["item"], e["role"]) for e in read_jsonl(out / "calls.jsonl"))
    assert kept == [("s1.1", "evolve"), ("s1.1", "judge")]
    with FakeServer() as server:
        resumed = evol(*run_args(server, seeds, out, *options))
        asked = [kind_of(body) for body in server.requests]
    assert resumed.exit_code == 0, resumed.stderr
    assert evolved == len(JOURNAL_SEEDS) and "evolve" not in asked
    assert asked.count("answer") == 1
    assert not (out / "calls.jsonl").exists()
    for name in ("gen_0.jsonl", "gen_1.jsonl", "eliminated.jsonl", "dataset.jsonl"):
        assert read_jsonl(out / name) == read_jsonl(tmp_path / "straight" / name), name


def test_a_kept_record_without_an_input_is_a_tip_with_an_empty_one() -> None:
    lineages = LineageIndex(generations=3)
    lineages.add(bare_record("a.1", round=1, generation=1, instruction="Sort it"), None)
    assert lineages.progress("a").tip == Tip("a.1", "Sort it", "", 1)


def test_the_call_journal_replays_what_it_kept_across_a_reopen(tmp_path: Path) -> None:
    from evol.rundir.journal import CallJournal

    path = tmp_path / "calls.jsonl"
    journal = CallJournal.open(path, recorded=set())
    journal.remember("s1.1", "evolve", {"text": "a rewrite"})
    journal.remember("s2.1", "answer", {"text": "an answer"})
    journal.close()
    compacted = CallJournal.open(path, recorded={"s2.1"})  # s2.1 is a record now
    compacted.close()
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"item": "s1.1", "role": "evolve", "reply": {"text": "a rewrite"}}
    ]
    again = CallJournal.open(path, recorded=set())
    assert again.recall("s1.1", "evolve") == {"text": "a rewrite"}
    assert again.recall("s1.1", "evolve") is None  # once
    again.close()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (("--model", "other-model"), "--model"),
        (("--temperature", "0.9"), "--temperature/--max-tokens"),
        (("--judge-max-tokens", "9"), "--temperature/--max-tokens"),
        (("--no-sorry-check",), "elimination rules"),
        (("--dedup",), "elimination rules"),
        (("--system-prompt", "Be brief."), "--system-prompt"),
        (("--prompts", "PROMPTS"), "--prompts"),
    ],
)
def test_a_resume_with_other_settings_is_refused_and_names_them(
    evol, tmp_path: Path, change: tuple[str, ...], named: str
) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "deepen.txt").write_text("Go deeper: $instruction $input")
    change = tuple(str(prompts) if part == "PROMPTS" else part for part in change)
    seeds, out = (
        write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a bird"}]),
        tmp_path / "run",
    )
    with FakeServer(models=("fake-model", "other-model")) as server:
        first = evol(*run_args(server, seeds, out, "--generations", "1", "--model", "fake-model"))
        assert first.exit_code == 0, first.output
        model = () if change[0] == "--model" else ("--model", "fake-model")
        again = evol(*run_args(server, seeds, out, "--generations", "1", *model, *change))
    assert again.exit_code == 2
    assert named in again.stderr and "holds a run made with other options" in again.stderr
