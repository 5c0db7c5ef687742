"""--out is the user's directory: evol never costs them a file, and locks what it writes."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

from tests.support.runs import read_jsonl, run_args, write_seeds

SEEDS = [{"instruction": f"Explain idea {i}"} for i in range(3)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.is_symlink()}


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "--overwrite"])
def test_a_non_empty_directory_that_is_not_a_run_is_refused(
    evol, server, tmp_path: Path, overwrite: bool
) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.tmp").write_text("chapter 3, unsaved")
    (out / "gen_0.jsonl").write_text('{"my": "own data"}\n')
    before = snapshot(out)
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    result = evol(*run_args(server, seeds, out, *(["--overwrite"] if overwrite else [])))
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "not empty" in result.stderr and "holds no evol run" in result.stderr
    assert snapshot(out) == before and server.requests == []


def test_a_link_among_evols_files_is_refused_and_its_target_untouched(
    evol, server, tmp_path: Path
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    elsewhere = tmp_path / "precious.jsonl"
    elsewhere.write_text("not yours\n")
    (out / "gen_1.jsonl").unlink()
    (out / "gen_1.jsonl").symlink_to(elsewhere)
    result = evol(*run_args(server, seeds, out, "--generations", "2"))
    assert result.exit_code == 2 and "symbolic link" in result.stderr
    assert elsewhere.read_text() == "not yours\n"


def test_a_link_in_a_directory_without_a_run_is_refused(evol, server, tmp_path: Path) -> None:
    out, elsewhere = tmp_path / "run", tmp_path / "outside.jsonl"
    out.mkdir()
    elsewhere.write_text('{"keep": "me"}\n')
    (out / "gen_0.jsonl").symlink_to(elsewhere)
    result = evol(*run_args(server, write_seeds(tmp_path / "s.jsonl", SEEDS), out))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert elsewhere.read_text() == '{"keep": "me"}\n'


def test_files_of_the_users_next_to_a_run_are_left_alone(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    (out / "notes.txt").write_text("mine")
    (out / "thesis.tmp").write_text("mine too")
    (out / "run.json.tmp").write_text("half a manifest")  # what a crash leaves: evol's own
    assert evol(*run_args(server, seeds, out, "--generations", "2")).exit_code == 0
    assert evol(*run_args(server, seeds, out, "--generations", "1", "--overwrite")).exit_code == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "thesis.tmp").read_text() == "mine too"
    assert not (out / "run.json.tmp").exists()


def test_overwrite_deletes_the_scores_of_the_records_it_deletes(evol, server, tmp_path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    for name in ("scores.jsonl", "metrics.json", "contamination.json"):
        (out / name).write_text("of the records before\n")
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    assert (out / "scores.jsonl").exists()  # a resume keeps them
    assert evol(*run_args(server, seeds, out, "--generations", "1", "--overwrite")).exit_code == 0
    assert not any((out / name).exists() for name in ("scores.jsonl", "metrics.json"))
    assert not (out / "contamination.json").exists()


@pytest.mark.parametrize(
    "line", ['{"foo": 1}', '{"id": 5, "root_id": "s1", "round": 0, "generation": 0}', "[1, 2]"]
)
def test_a_line_that_is_json_but_not_a_record_is_one_clear_error(
    evol, server, tmp_path: Path, line: str
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    gen_1 = out / "gen_1.jsonl"
    gen_1.write_text(gen_1.read_text() + line + "\n")
    result = evol(*run_args(server, seeds, out, "--generations", "2"))
    assert result.exit_code == 2
    assert f"{gen_1}:4: not an evol record" in result.stderr and "Traceback" not in result.output


@pytest.mark.slow
def test_the_directory_is_locked_while_a_run_writes_it(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "0")).exit_code == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
    command = [
        sys.executable,
        "-m",
        "evol",
        *map(str, run_args(server, seeds, out, "--generations", "1")),
    ]
    with FileLock(out / ".evol.lock"):  # another process holds it
        held = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert held.returncode == 2 and "another evol run is writing" in held.stderr
    free = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert free.returncode == 0, free.stderr
    assert len(read_jsonl(out / "gen_1.jsonl")) == 3


@pytest.mark.slow
def test_evol_imports_without_posix_only_modules() -> None:
    code = (
        "import sys\n"
        "for name in ('fcntl', 'termios', 'pty', 'resource', 'grp', 'pwd'):\n"
        "    sys.modules[name] = None  # as on Windows: importing it raises ImportError\n"
        "import evol, evol.cli, evol.rundir.store, evol.pipeline, evol.engine\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


def test_the_library_call_leaves_the_process_as_it_found_it(server, tmp_path: Path) -> None:
    import evol

    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    gc.freeze()  # the host's own frozen objects: a library must not thaw them
    try:
        thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
        policy = asyncio.get_event_loop_policy()
        config = evol.RunConfig(
            seeds=seeds, out=tmp_path / "run", generations=1, base_urls=[server.base_url]
        )
        summary = evol.run(config)
        assert gc.get_threshold() == thresholds
        # Frozen objects may still be freed one by one; an unfreeze() would thaw them all.
        assert gc.get_freeze_count() > frozen // 2 > 0
        assert asyncio.get_event_loop_policy() is policy
    finally:
        gc.unfreeze()
    assert summary.status == "complete" and summary.kept == 6
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"


# -- a damaged run.json: one line naming the file, what is wrong and what to do --------------


def _config_is_a_list(manifest: dict) -> str:
    manifest["config"] = []
    return "`config` is not an object"


def _generations_is_a_string(manifest: dict) -> str:
    manifest["config"]["generations"] = "2"
    return "`config.generations` is not an integer"


def _summary_generations_is_a_string(manifest: dict) -> str:
    manifest["summary"]["generations"] = "2"
    return "`summary.generations` is not an integer"


def _status_is_missing_its_type(manifest: dict) -> str:
    manifest["status"] = None
    return "`status` is not a string"


def _summary_kept_is_missing(manifest: dict) -> str:
    del manifest["summary"]["kept"]
    return "`summary.kept` is missing"


def _fingerprint_seed_is_a_string(manifest: dict) -> str:
    manifest["fingerprint"]["seed"] = "3"
    return "`fingerprint.seed` is not an integer"  # format 2's own key, not format 1's --seed


def _fingerprint_is_a_list(manifest: dict) -> str:
    manifest["fingerprint"] = []
    return "`fingerprint` is not an object"


DAMAGES = {
    "config is a list": _config_is_a_list,
    "summary's kept is missing": _summary_kept_is_missing,
    "fingerprint's seed is a string": _fingerprint_seed_is_a_string,
    "fingerprint is a list": _fingerprint_is_a_list,
    "generations is a string": _generations_is_a_string,
    "summary's generations is a string": _summary_generations_is_a_string,
    "status is null": _status_is_missing_its_type,
}
COMMANDS = ["run", "stats", "show", "report", "export", "merge"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from evol.cli import app
    from tests.support.fake_server import FakeServer

    folder = tmp_path_factory.mktemp("finished")
    seeds = write_seeds(folder / "seeds.jsonl", SEEDS)
    with FakeServer() as server:
        result = CliRunner().invoke(
            app, [str(a) for a in run_args(server, seeds, folder / "run", "--generations", "1")]
        )
    assert result.exit_code == 0, result.output
    return folder


def _damaged_copy(finished_run: Path, tmp_path: Path, damage: str) -> tuple[Path, str]:
    """A copy of a finished run whose run.json has `damage`; returns it and what is wrong."""
    shutil.copytree(finished_run, tmp_path, dirs_exist_ok=True)
    run = tmp_path / "run"
    if damage == "nested 10,000 deep":
        (run / "run.json").write_text("[" * 10_000 + "]" * 10_000)
        return run, "nested too deep to be a manifest"
    if damage == "a list":
        (run / "run.json").write_text("[]")
        return run, "not an evol manifest (not an object)"
    manifest = json.loads((run / "run.json").read_text())
    what = DAMAGES[damage](manifest)
    (run / "run.json").write_text(json.dumps(manifest))
    return run, what


def _command(name: str, run: Path, server, tmp_path: Path) -> list[object]:
    return {
        "run": run_args(server, tmp_path / "seeds.jsonl", run, "--generations", "2"),
        "stats": ["stats", run],
        "show": ["show", run, "s1"],
        "report": ["report", run, "--out", tmp_path / "report.html"],
        "export": ["export", run, "--out", tmp_path / "export.jsonl"],
        "merge": ["merge", run, run, "--out", tmp_path / "merged"],
    }[name]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("damage", [*DAMAGES, "nested 10,000 deep", "a list"])
def test_a_damaged_run_json_is_one_line_naming_it_what_is_wrong_and_what_to_do(
    evol, server, finished_run: Path, tmp_path: Path, damage: str, command: str
) -> None:
    run, what = _damaged_copy(finished_run, tmp_path, damage)
    before = snapshot(run)
    result = evol(*_command(command, run, server, tmp_path))  # a traceback would raise here
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {run / 'run.json'}: {what}: the run directory is damaged: restore it, "
        "or start again with --overwrite\n"
    )
    assert snapshot(run) == before and server.requests == []


def test_a_damaged_run_json_gives_way_to_overwrite(
    evol, server, finished_run: Path, tmp_path: Path
) -> None:
    run, _what = _damaged_copy(finished_run, tmp_path, "nested 10,000 deep")
    seeds = tmp_path / "seeds.jsonl"
    result = evol(*run_args(server, seeds, run, "--generations", "1", "--overwrite"))
    assert result.exit_code == 0, result.stderr
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    assert snapshot(run)["dataset.jsonl"] == snapshot(finished_run / "run")["dataset.jsonl"]


# -- what evol run says at its end -----------------------------------------------------------


def _summary(**fields: object):
    from evol.rundir.manifest import RunSummary

    base: dict[str, object] = {
        "out": "run",
        "status": "complete",
        "backend": "openai",
        "models": {},
        "seeds": 3,
        "skipped_seeds": 0,
        "generations": 2,
        "kept": 7,
        "kept_per_generation": {"0": 3, "1": 3, "2": 1},
        "eliminated": 0,
        "eliminated_per_reason": {},
        "failed": [],
        "requests": {},
        "retries": 0,
        "usage": {},
        "dataset": None,
        "dataset_records": None,
        "elapsed_s": 1.5,
    }
    return RunSummary.model_validate(base | fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {},
            "evol: complete: 7 records kept (gen 0: 3, gen 1: 3, gen 2: 1)\n"
            "evol: eliminated 0 (none)",
        ),
        (
            {
                "status": "failed",
                "eliminated": 5,
                "eliminated_per_reason": {"judged_equal": 4, "sorry": 1},
                "skipped_seeds": 2,
                "failed": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
                "dataset": "run/dataset.jsonl",
                "dataset_records": 7,
            },
            "evol: failed: 7 records kept (gen 0: 3, gen 1: 3, gen 2: 1)\n"
            "evol: eliminated 5 (judged_equal: 4, sorry: 1)\n"
            "evol: skipped 2 invalid seed rows (listed in run.json)\n"
            "evol: 3 steps failed after retries (listed in run.json); run again to retry them\n"
            "evol: dataset: run/dataset.jsonl (7 records)",
        ),
        (
            {"status": "pending", "waiting": 4, "kept": 3, "kept_per_generation": {"0": 3}},
            "evol: pending: 3 records kept (gen 0: 3)\n"
            "evol: eliminated 0 (none)\n"
            "evol: 4 steps wait in batches (listed in run.json); run the same command again to "
            "collect them",
        ),
    ],
    ids=["complete", "failed with all", "pending"],
)
def test_what_a_run_says_at_its_end(fields: dict, expected: str) -> None:
    from evol.rundir.manifest import format_summary

    assert format_summary(_summary(**fields)) == expected


@pytest.mark.parametrize(
    "command",
    [
        ["stats"],
        ["show", "{run}", "s1"],
        ["report", "{run}", "--out", "{tmp}/r.html"],
        ["export", "{run}", "--out", "{tmp}/x.jsonl"],
        ["score", "{run}"],
        ["select", "{run}", "--budget", "2", "--out", "{tmp}/x.jsonl"],
        ["merge", "{run}", "--out", "{tmp}/merged"],
    ],
    ids=lambda command: command[0],
)
def test_a_run_directory_that_does_not_exist_is_named_as_such(
    evol, tmp_path: Path, command: list[str]
) -> None:
    run = tmp_path / "runs" / "nope"
    args = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in command]
    if "{run}" not in command:
        args.append(str(run))
    result = evol(*args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"evol: error: {run}: the directory does not exist (name the --out of an evol run)"
    ]
    assert not (tmp_path / "runs").exists()

    run.parent.mkdir()
    run.write_text("not a run\n")
    result = evol(*args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"evol: error: {run}: not a directory (name the --out of an evol run)"
    ]
