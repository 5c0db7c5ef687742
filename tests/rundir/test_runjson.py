"""run.json's format (evol.rundir.runjson, evol.rundir.fingerprint): a typed model with a format_version.

Any manifest written is read back equal; the fingerprint is keyed by field names, never by flag
spellings; a format-1 run directory (tests/fixtures/run_v1/, written before format_version) is
read, resumed, refused, merged, and reported on as before, and the next write stores format 2;
a format this evol does not know is refused in one line that says what to do.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, JsonValue

from evol.errors import RunDirError
from evol.rundir.fingerprint import FLAGS, V1_KEYS, Fingerprint
from evol.rundir.manifest import load_manifest, record_failed_restart, write_manifest
from evol.rundir.runjson import (
    FORMAT_VERSION,
    JudgingPart,
    Manifest,
    RecordedConfig,
    parse,
    upgrade_v1,
)
from tests.support.fake_server import FakeServer

_SPEC = importlib.util.spec_from_file_location(
    "make_run_v1", Path(__file__).parents[1] / "fixtures" / "make_run_v1.py"
)
assert _SPEC is not None and _SPEC.loader is not None
fixtures = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fixtures)

RUN_DIRS = ("complete", "interrupted", "batch_pending", "shard_0", "shard_1", "merged", "scored")
DAMAGED = "the run directory is damaged: restore it, or start again with --overwrite"


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of run_v1/, as the working directory: the fixtures record relative paths."""
    copy = tmp_path / "run_v1"
    shutil.copytree(fixtures.ROOT, copy)
    monkeypatch.chdir(copy)
    return copy


def raw(run: Path) -> dict[str, Any]:
    return json.loads((run / "run.json").read_text(encoding="utf-8"))


# -- any manifest written is read back equal ---------------------------------------------------

# Text as JSON holds it: pydantic writes a lone surrogate as U+FFFD, so none is drawn.
_TEXT = st.characters(exclude_categories=["Cs"])
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_TEXT, max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(_TEXT, max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def strategy(annotation: Any) -> st.SearchStrategy[Any]:
    """Values of a field's type, drawn from the type itself: a field added to the model is
    drawn too, with no change here."""
    if annotation is Any or annotation is JsonValue:
        return _JSON
    if annotation is type(None):
        return st.none()
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return st.one_of(*(strategy(arg) for arg in args))
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(strategy(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(_TEXT, max_size=6), strategy(args[1]), max_size=3)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model(annotation)
    simple = {
        str: st.text(_TEXT, max_size=10),
        int: st.integers(),
        float: st.floats(allow_nan=False, allow_infinity=False),
        bool: st.booleans(),
    }
    return simple[annotation]


def model(cls: type[BaseModel]) -> st.SearchStrategy[BaseModel]:
    fields = {name: strategy(info.annotation) for name, info in cls.model_fields.items()}
    required = {
        name: fields.pop(name) for name, info in cls.model_fields.items() if info.is_required()
    }
    values = st.fixed_dictionaries(required, optional=fields)  # a part left out: its default
    if cls is RecordedConfig:  # the rest of RunConfig, kept as recorded
        extras = st.dictionaries(st.from_regex(r"x_[a-z]{1,5}", fullmatch=True), _JSON, max_size=3)
        values = st.tuples(values, extras).map(lambda both: both[1] | both[0])
    return values.map(cls.model_validate)


# Each example writes over the one before: the folder needs no reset.
ONE_FOLDER = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]


@settings(max_examples=150, deadline=None, suppress_health_check=ONE_FOLDER)
@given(manifest=model(Manifest))
@pytest.mark.slow
def test_any_manifest_written_is_read_back_equal(tmp_path: Path, manifest: Manifest) -> None:
    write_manifest(tmp_path, manifest)
    assert load_manifest(tmp_path) == manifest
    assert raw(tmp_path)["format_version"] == FORMAT_VERSION


def test_a_real_run_json_round_trips_and_says_its_format_first(runs: Path) -> None:
    manifest = load_manifest(runs / "complete")
    write_manifest(runs / "complete", manifest)
    assert load_manifest(runs / "complete") == manifest
    assert next(iter(raw(runs / "complete"))) == "format_version"


# -- the fingerprint speaks in names, not flags ------------------------------------------------


def test_the_fingerprint_s_keys_are_names_not_flag_spellings(runs: Path) -> None:
    assert all("--" not in name and " " not in name for name in Fingerprint.model_fields)
    manifest = load_manifest(runs / "complete")
    write_manifest(runs / "complete", manifest)
    written = raw(runs / "complete")["fingerprint"]
    assert set(written) == set(Fingerprint.model_fields)
    assert not [key for key in written if "--" in key or key != key.lower()]


def test_every_field_has_its_flag_and_its_format_1_key() -> None:
    fields = set(Fingerprint.model_fields)
    assert set(FLAGS) == fields
    assert sorted(V1_KEYS.values()) == sorted(fields)  # each field read from one v1 key


# -- format 1 is read, upgraded in memory ------------------------------------------------------


def test_the_complete_v1_fingerprint_is_read_in_names() -> None:
    fingerprint = load_manifest(fixtures.ROOT / "complete").fingerprint
    assert fingerprint is not None
    assert fingerprint.model_dump() == {
        "seeds_digest": "2c40217e5ce30e4cb0dcf473bd43953adb1295c592bbac72cfb1d9627b4a079c",
        "seed_format": "jsonl",
        "seed_fields": [None, None, None],
        "seed": 3,
        "operations": dict.fromkeys(
            sorted(
                [
                    "add_constraints",
                    "deepen",
                    "concretize",
                    "increase_reasoning",
                    "complicate_input",
                    "breadth",
                ]
            ),
            1.0,
        ),
        "prompts_digest": "48d74de7d03ecce0",
        "backend": "openai",
        "models": dict.fromkeys(("evolve", "answer", "judge"), "fake-model"),
        "generation_params": {
            "evolve": {},
            "answer": {},
            "judge": {"temperature": 0.0, "max_tokens": 100},
        },
        "system_prompt": None,
        "elimination_rules": {
            "judge": True,
            "instruction_check": True,
            "sorry": True,
            "stopwords": True,
            "leak": True,
            "growth": True,
            "signals": True,
            "dedup": False,
            "dedup_method": "auto",
            "dedup_threshold": 0.7,
        },
        "answer_check": False,
        "answer_seeds": True,
        "shard": None,
        "constraint_ids": None,  # not recorded by format 1 for a run without verifiable ones
        "answer_attempts": None,
        "answer_n": None,
    }


@pytest.mark.parametrize("name", RUN_DIRS)
def test_every_v1_run_directory_reads_with_all_it_recorded(name: str) -> None:
    recorded = raw(fixtures.ROOT / name)
    assert "format_version" not in recorded  # format 1, as written before format_version
    manifest = load_manifest(fixtures.ROOT / name)
    # The fingerprint holds the same values under its new names, in the same order.
    assert manifest.fingerprint is not None
    assert list(manifest.fingerprint.model_dump(exclude_unset=True).values()) == list(
        recorded["fingerprint"].values()
    )
    # Everything else reads back as recorded.
    written = manifest.model_dump(
        mode="json", exclude_unset=True, exclude={"format_version", "fingerprint"}
    )
    assert written == {key: value for key, value in recorded.items() if key != "fingerprint"}


def test_a_v1_run_that_stopped_before_its_backend_has_no_fingerprint() -> None:
    """`{}` in format 1 said "nothing to match": the next run starts afresh, refusing nothing."""
    assert parse({"status": "failed", "fingerprint": {}}, "run.json").fingerprint is None
    assert parse({"status": "failed"}, "run.json").fingerprint is None
    kept = parse({"fingerprint": {"--seed": 1, "--gone": 2}}, "run.json").fingerprint
    assert kept == Fingerprint(seed=1)  # a key format 1 no longer wrote was never compared


def test_a_v1_verifiable_run_keeps_its_options_under_their_names() -> None:
    recorded = {"--constraint-ids": ["punctuation:no_comma"], "--answer-attempts": 2, "--seed": 5}
    read = parse({"fingerprint": recorded}, "run.json").fingerprint
    assert read == Fingerprint(constraint_ids=["punctuation:no_comma"], answer_attempts=2, seed=5)


def test_a_v1_judging_is_read_as_format_1_read_it() -> None:
    judging = {
        "answer_check": "yes",
        "replies_read_as": {"judge": {"schema": 2, "prose": "3", "odd": -1, "no": 0}, "x": []},
    }
    manifest = parse({"judging": judging}, "run.json")
    assert manifest.judging == JudgingPart(
        answer_check=False, replies_read_as={"judge": {"schema": 2}}
    )
    assert parse({"judging": []}, "run.json").judging is None
    assert parse({"judging": {"replies_read_as": 1}}, "run.json").judging == JudgingPart()


def test_a_v1_judging_keeps_a_checked_answer_and_a_single_reply() -> None:
    """A run that checked its answers says so after the upgrade, and a form that read one
    reply keeps its count of 1: the counts the next run adds to."""
    judging = {"answer_check": True, "replies_read_as": {"answer_check": {"prose": 1}}}
    assert parse({"judging": judging}, "run.json").judging == JudgingPart(
        answer_check=True, replies_read_as={"answer_check": {"prose": 1}}
    )


def _v1_seed_is_a_string(recorded: dict) -> str:
    recorded["fingerprint"]["--seed"] = "3"
    return "`fingerprint.--seed` is not an integer"


def _v1_fingerprint_is_a_list(recorded: dict) -> str:
    recorded["fingerprint"] = []
    return "`fingerprint` is not an object"


def _v1_config_is_a_list(recorded: dict) -> str:
    recorded["config"] = []
    return "`config` is not an object"


@pytest.mark.parametrize(
    "damage", [_v1_seed_is_a_string, _v1_fingerprint_is_a_list, _v1_config_is_a_list]
)
def test_a_damaged_v1_run_json_is_named_as_format_1_spells_it(runs: Path, damage) -> None:
    """A part of a format-1 fingerprint by its format-1 key; the fingerprint or another part
    that is whole, by its own name."""
    recorded = raw(runs / "complete")
    what = damage(recorded)
    (runs / "complete" / "run.json").write_text(json.dumps(recorded))
    with pytest.raises(RunDirError) as raised:
        load_manifest(runs / "complete")
    assert str(raised.value) == f"{runs / 'complete' / 'run.json'}: {what}: {DAMAGED}"


@pytest.mark.parametrize(
    ("out", "extra"),
    [
        ("complete", ()),
        ("interrupted", ()),
        ("batch_pending", fixtures.BATCH_OPTIONS),
        ("shard_0", ("--shard", "0/2")),
        ("shard_1", ("--shard", "1/2")),
        ("merged", ()),
        ("scored", ()),
    ],
)
def test_a_v1_run_resumed_with_another_seed_is_refused_naming_it(
    evol, runs: Path, out: str, extra: tuple[str, ...]
) -> None:
    before = (runs / out / "run.json").read_bytes()
    with FakeServer() as server:
        args = ["run", "seeds.jsonl", "--out", out, "--base-url", server.base_url]
        result = evol(*args, *fixtures.OPTIONS, *extra, "--seed", "4")
        assert server.requests == []
    assert result.exit_code == 2
    named = "--seed (run has 3, now 4)" + (
        ", --shard (run has 'merged', now None)" if out == "merged" else ""
    )
    assert result.stderr == (
        f"evol: error: {out} holds a run made with other options: {named}; use the same options "
        "to resume, another --out, or --overwrite to start afresh\n"
    )
    assert (runs / out / "run.json").read_bytes() == before


def test_a_resumed_v1_run_is_written_as_format_2_and_finishes_as_before(evol, runs: Path) -> None:
    recorded = load_manifest(runs / "interrupted").fingerprint
    with FakeServer() as server:
        args = ["run", "seeds.jsonl", "--out", "interrupted", "--base-url", server.base_url]
        assert evol(*args, *fixtures.OPTIONS).exit_code == 0
        sent = len(server.requests)
        assert evol(*args, *fixtures.OPTIONS).exit_code == 0  # complete: nothing to do
        assert len(server.requests) == sent
    written = raw(runs / "interrupted")
    assert written["format_version"] == 2 and written["status"] == "complete"
    assert load_manifest(runs / "interrupted").fingerprint == recorded


def test_a_failed_restart_of_a_v1_run_is_recorded_in_format_2(runs: Path) -> None:
    before = load_manifest(runs / "interrupted")
    summary = record_failed_restart(runs / "interrupted", "the server is gone")
    after = load_manifest(runs / "interrupted")
    assert raw(runs / "interrupted")["format_version"] == 2
    assert summary is not None and summary["status"] == "failed"
    assert summary["error"] == "the server is gone"
    assert after.status == "failed" and after.summary is not None
    assert after.summary.model_dump(mode="json") == summary
    unchanged = {"status", "updated_at", "summary"}
    assert after.model_dump(exclude=unchanged) == before.model_dump(exclude=unchanged)


def test_v1_shards_of_other_options_are_refused_naming_the_flag(evol, runs: Path) -> None:
    recorded = raw(runs / "shard_1")
    recorded["fingerprint"]["--seed"] = 4
    (runs / "shard_1" / "run.json").write_text(json.dumps(recorded))
    result = evol("merge", "shard_0", "shard_1", "--out", "again")
    assert result.exit_code == 2
    assert "shard_1 and shard_0 are not shards of one run: they differ in --seed\n" in (
        result.stderr
    )


@pytest.mark.parametrize("name", RUN_DIRS)
def test_report_reads_every_v1_run_directory(evol, runs: Path, name: str) -> None:
    pytest.importorskip("matplotlib")
    result = evol("report", name, "--out", f"{name}.html")
    assert result.exit_code == 0, result.stderr
    assert "<html" in (runs / f"{name}.html").read_text(encoding="utf-8")


# -- a format this evol does not know ----------------------------------------------------------


@pytest.mark.parametrize("version", [3, 99])
def test_a_newer_format_is_refused_saying_upgrade_evol(evol, runs: Path, version: int) -> None:
    recorded = raw(runs / "complete") | {"format_version": version}
    (runs / "complete" / "run.json").write_text(json.dumps(recorded))
    for command in (("stats", "complete"), ("export", "complete", "--out", "x.jsonl")):
        result = evol(*command)
        assert result.exit_code == 2
        assert result.stderr == (
            f"evol: error: {Path('complete') / 'run.json'}: written by a newer evol (run.json "
            f"format {version}; this evol reads formats 1 to 2): upgrade evol to use this run "
            "directory\n"
        )


@pytest.mark.parametrize("version", [0, -1, "2", 2.0, True, None, [2], {"v": 2}])
def test_a_format_version_that_is_no_format_is_refused_as_damage(version: object) -> None:
    with pytest.raises(RunDirError) as raised:
        parse({"format_version": version, "status": "complete"}, "x/run.json")
    assert str(raised.value) == (
        f"x/run.json: `format_version` is {version!r}, not a format of run.json (a whole "
        f"number from 1): {DAMAGED}"
    )


def test_a_format_2_file_is_not_upgraded_again() -> None:
    """Format 2's fingerprint is read by its own names: a flag spelling there is no key."""
    with pytest.raises(RunDirError, match="`fingerprint.--seed`"):
        parse({"format_version": 2, "fingerprint": {"--seed": 1}}, "run.json")
    read = parse({"format_version": 2, "fingerprint": {"seed": 1}}, "run.json")
    assert read.fingerprint == Fingerprint(seed=1)


def test_format_1_upgrade_is_the_fingerprint_renamed_and_the_version_set() -> None:
    v1 = raw(fixtures.ROOT / "complete")
    v2 = upgrade_v1(v1)
    assert v2["format_version"] == 2
    assert {k: v for k, v in v2.items() if k not in ("format_version", "fingerprint")} == {
        k: v for k, v in v1.items() if k != "fingerprint"
    }
    assert v2["fingerprint"] == {V1_KEYS[key]: value for key, value in v1["fingerprint"].items()}
    assert v1 == raw(fixtures.ROOT / "complete")  # the file's own dict is left as it was


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_run_json_holding_nan_or_infinity_is_damaged(tmp_path: Path, constant: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(
        f'{{"format_version": 2, "timings": {{"elapsed_s": {constant}}}}}'
    )
    with pytest.raises(RunDirError, match="is not a JSON value"):
        load_manifest(run)
