"""Unseen cases for #26's first half: the constraint registry, `evol verify`, and the ifeval and
rlvr exports, attacked as a hostile dataset and a hostile user would.

Each finding is a test marked xfail(strict=True) with the reason "attack26: ..."; the tests
without the mark are cases that held. The CPU-bound findings (a checker that takes seconds on
one answer) are figures, not tests: bench/verifiable.py measures them (`make bench`, under
"checker_cpu"), since how long a checker takes depends on the machine.
"""

from __future__ import annotations

import ast
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evol.dataset.export import export_run
from evol.errors import ConstraintError
from evol.method.constraints import Constraint, check, ground_truth
from evol.method.contradictions import contradicts
from evol.method.drawing import pick

RUN_FIXTURE = Path(__file__).parents[1] / "fixtures" / "run_v1" / "complete"


# -- helpers -------------------------------------------------------------------------------------


def ifeval_row(ids: list[str], kwargs: list[Any], response: str) -> dict[str, Any]:
    return {
        "key": 1,
        "prompt": "p",
        "instruction_id_list": ids,
        "kwargs": kwargs,
        "response": response,
    }


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def verify_json(evol, path: Path) -> tuple[int, dict[str, Any]]:
    result = evol("verify", path, "--json")
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def constrained_run(tmp_path: Path) -> Path:
    """The committed finished run, every record given constraints drawn by `pick`."""
    run = tmp_path / "run"
    shutil.copytree(RUN_FIXTURE, run)
    rng = random.Random(1)
    for path in sorted(run.glob("gen_*.jsonl")):
        rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
        for row in rows:
            carried: list[Constraint] = []
            for _ in range(3):
                drawn = pick(rng, carried)
                if drawn:
                    carried.append(drawn)
            row["constraints"] = [c.model_dump() for c in carried]
        write_rows(path, rows)
    return run


# -- checkers that crash on an answer or on kwargs ------------------------------------------------


def test_a_deeply_nested_answer_is_a_failed_json_check_not_a_crash(tmp_path, evol):
    rows = [ifeval_row(["detectable_format:json_format"], [{}], "[" * 100_000)]
    code, report = verify_json(evol, write_rows(tmp_path / "deep.jsonl", rows))
    assert code == 0
    assert report["per_id"]["detectable_format:json_format"]["strict"] == 0


WRONG_TYPED_KWARGS = [
    pytest.param("startend:end_checker", {"end_phrase": 5}, id="end_phrase-int"),
    pytest.param("language:response_language", {"language": "zh-TW"}, id="language-zh-TW"),
    pytest.param("language:response_language", {"language": 5}, id="language-int"),
    pytest.param(
        "detectable_format:multiple_sections",
        {"section_spliter": 3, "num_sections": 1},
        id="section_spliter-int",
    ),
]


@pytest.mark.parametrize(("instruction_id", "kwargs"), WRONG_TYPED_KWARGS)
def test_wrong_typed_kwargs_are_one_line_naming_the_row(tmp_path, evol, instruction_id, kwargs):
    path = write_rows(tmp_path / "wild.jsonl", [ifeval_row([instruction_id], [kwargs], "hi")])
    result = evol("verify", path)
    assert result.exit_code == 2
    assert f"{path}:1:" in result.stderr


# -- kwargs the library would fill at random, or that mean nothing -------------------------------


RANDOM_FILLED = [
    pytest.param("keywords:existence", {"keywords": []}, id="keywords-empty-list"),
    pytest.param("keywords:forbidden_words", {"forbidden_words": []}, id="forbidden-empty-list"),
    pytest.param(
        "keywords:frequency",
        {"keyword": "", "frequency": 1, "relation": "at least"},
        id="keyword-empty",
    ),
    pytest.param(
        "length_constraints:number_words",
        {"num_words": -1.5, "relation": "at least"},
        id="num_words-negative-float",
    ),
    pytest.param(
        "keywords:letter_frequency",
        {"letter": "a", "let_frequency": -2.0, "let_relation": "at least"},
        id="let_frequency-negative-float",
    ),
]


@pytest.mark.parametrize(("instruction_id", "kwargs"), RANDOM_FILLED)
def test_kwargs_that_ifeval_fills_at_random_are_refused(instruction_id, kwargs):
    with pytest.raises(ConstraintError):
        check("some answer text", [Constraint(id=instruction_id, kwargs=kwargs)])


def test_a_verdict_does_not_depend_on_the_global_rng():
    from if_verifiable.ifeval import instructions_util

    words = instructions_util.WORD_LIST
    answer = " ".join(words[: len(words) // 2])
    constraint = Constraint(id="keywords:forbidden_words", kwargs={"forbidden_words": []})
    state = random.getstate()
    verdicts = set()
    try:
        for seed in range(40):
            random.seed(seed)
            try:
                verdicts.add(check(answer, [constraint])[0].strict)
            except ConstraintError:
                return  # refused: nothing random left to observe
    finally:
        random.setstate(state)
    assert len(verdicts) == 1


VACUOUS = [
    pytest.param("detectable_content:postscript", {"postscript_marker": ""}, id="postscript-empty"),
    pytest.param("startend:end_checker", {"end_phrase": ""}, id="end_phrase-empty"),
    pytest.param("startend:end_checker", {"end_phrase": "   "}, id="end_phrase-blank"),
]


@pytest.mark.parametrize(("instruction_id", "kwargs"), VACUOUS)
def test_empty_marker_kwargs_are_refused(instruction_id, kwargs):
    with pytest.raises(ConstraintError):
        check("anything at all", [Constraint(id=instruction_id, kwargs=kwargs)])


# -- contradictions the registry allows ----------------------------------------------------------


def letter(ch: str, times: int = 1) -> Constraint:
    return Constraint(
        id="keywords:letter_frequency",
        kwargs={"letter": ch, "let_frequency": times, "let_relation": "less than"},
    )


UNSATISFIABLE_PAIRS = [
    pytest.param(
        letter("e"),
        Constraint(id="keywords:existence", kwargs={"keywords": ["ocean", "river"]}),
        id="letter-e-absent-vs-keywords-with-e",
    ),
    pytest.param(
        letter("q"),
        Constraint(id="startend:end_checker", kwargs={"end_phrase": "Any other questions?"}),
        id="letter-q-absent-vs-end-phrase",
    ),
    pytest.param(
        letter("p"),
        Constraint(id="detectable_content:postscript", kwargs={"postscript_marker": "P.S."}),
        id="letter-p-absent-vs-postscript",
    ),
    pytest.param(
        letter("s", 3),
        Constraint(
            id="detectable_format:multiple_sections",
            kwargs={"section_spliter": "Section", "num_sections": 5},
        ),
        id="letter-s-under-3-vs-5-sections",
    ),
    pytest.param(
        Constraint(id="keywords:forbidden_words", kwargs={"forbidden_words": ["help", "ocean"]}),
        Constraint(
            id="startend:end_checker",
            kwargs={"end_phrase": "Is there anything else I can help with?"},
        ),
        id="forbidden-help-vs-end-phrase",
    ),
    pytest.param(
        Constraint(id="keywords:forbidden_words", kwargs={"forbidden_words": ["ocean", "section"]}),
        Constraint(
            id="detectable_format:multiple_sections",
            kwargs={"section_spliter": "Section", "num_sections": 2},
        ),
        id="forbidden-section-vs-sections",
    ),
    pytest.param(
        Constraint(
            id="keywords:frequency",
            kwargs={"keyword": "other", "frequency": 1, "relation": "less than"},
        ),
        Constraint(id="startend:end_checker", kwargs={"end_phrase": "Any other questions?"}),
        id="keyword-other-absent-vs-end-phrase",
    ),
    pytest.param(
        Constraint(
            id="keywords:frequency",
            kwargs={"keyword": "press", "frequency": 1, "relation": "less than"},
        ),
        Constraint(id="keywords:existence", kwargs={"keywords": ["expression", "ocean"]}),
        id="keyword-press-absent-vs-expression",  # IFEval counts substrings
    ),
]


@pytest.mark.parametrize(("a", "b"), UNSATISFIABLE_PAIRS)
def test_pairs_no_answer_can_meet_are_contradictions(a, b):
    assert contradicts(a, b) and contradicts(b, a)


def _required_text(c: Constraint) -> str:
    """Text any answer meeting `c` must contain (IFEval's checkers ignore case here)."""
    k = c.kwargs
    parts = [*k.get("keywords", []), k.get("first_word", ""), k.get("end_phrase", "")]
    parts += [k.get("section_spliter", ""), k.get("postscript_marker", "")]
    if c.id == "keywords:frequency" and k.get("relation") == "at least":
        parts.append(k["keyword"])
    return " ".join(parts).lower()


def test_pick_never_adds_a_constraint_that_needs_a_letter_the_lineage_forbids():
    carried = [letter("e")]
    needs_e = [
        picked
        for seed in range(300)
        if (picked := pick(random.Random(seed), carried)) and "e" in _required_text(picked)
    ]
    assert needs_e == []


def test_pick_never_draws_a_constraint_no_answer_meets():
    never = {"num_sentences": 1, "relation": "less than"}
    drawn = [
        s
        for s in range(1000, 1100)
        if (c := pick(random.Random(s), [])).id == "length_constraints:number_sentences"
        and c.kwargs == never
    ]
    assert drawn == []


def test_no_non_blank_text_has_zero_sentences():
    """Why 'less than 1' sentences is unmeetable (a sample of odd answers)."""
    c = Constraint(
        id="length_constraints:number_sentences",
        kwargs={"num_sentences": 1, "relation": "less than"},
    )
    for answer in ["x", ".", "...", "\u200b", "a\n\nb", "-", "*", "1", "日本語"]:
        assert not check(answer, [c])[0].loose


# -- files from the wild -------------------------------------------------------------------------


def test_a_bom_at_the_start_of_a_jsonl_file_is_read(tmp_path, evol):
    path = tmp_path / "bom.jsonl"
    row = ifeval_row(["punctuation:no_comma"], [{}], "no commas here")
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\n")
    code, report = verify_json(evol, path)
    assert code == 0 and report["rows"]["strict"] == 1


def test_an_rlvr_answer_is_checked_after_its_thinking_section(tmp_path, evol):
    row = {
        "messages": [
            {"role": "user", "content": "Answer without commas."},
            {"role": "assistant", "content": "<think>Well, first, no commas.</think>Done here"},
        ],
        "ground_truth": ground_truth([Constraint(id="punctuation:no_comma")]),
        "dataset": "ifeval",
    }
    code, report = verify_json(evol, write_rows(tmp_path / "think.jsonl", [row]))
    assert code == 0 and report["rows"]["strict"] == 1


def test_google_ifeval_rows_with_every_kwarg_null_are_read(tmp_path, evol):
    """HF google/IFEval writes every kwarg of every id, null where unused."""
    names = ["num_highlights", "relation", "num_words", "num_placeholders", "prompt_to_repeat"]
    names += ["num_bullets", "section_spliter", "num_sections", "capital_relation", "keywords"]
    names += ["capital_frequency", "num_paragraphs", "language", "let_relation", "letter"]
    names += ["let_frequency", "end_phrase", "forbidden_words", "keyword", "frequency"]
    names += ["num_sentences", "postscript_marker", "first_word", "nth_paragraph"]
    nulls = dict.fromkeys(names)
    rows = [
        ifeval_row(
            ["punctuation:no_comma", "length_constraints:number_words"],
            [nulls, nulls | {"relation": "less than", "num_words": 5}],
            "short and plain",
        ),
        ifeval_row(["punctuation:no_comma"], [None], "a, b"),  # a null kwargs entry
    ]
    code, report = verify_json(evol, write_rows(tmp_path / "google.jsonl", rows))
    assert code == 0
    assert report["rows"] == report["rows"] | {"checked": 2, "strict": 1}


def test_json_array_crlf_and_nested_extras_are_read(tmp_path, evol):
    rows = [
        ifeval_row(["punctuation:no_comma"], [{}], "fine\r\nstill fine")
        | {"extra": {"deep": [[[1.5e300]]], "nul": "\x00", "big": 10**30}},
        ifeval_row(["punctuation:no_comma"], [{}], "a, b"),
    ]
    array = tmp_path / "rows.json"
    array.write_text("\r\n" + json.dumps(rows, indent=2).replace("\n", "\r\n"), "utf-8")
    code, report = verify_json(evol, array)
    assert code == 0 and report["rows"] == report["rows"] | {"checked": 2, "strict": 1}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "no row to check"),
        (b"[1, 2]", "row 1: not a JSON object"),
        (b'{"a": 1}\n{"a": \n', ":2: not valid JSON"),
    ],
)
def test_unreadable_files_are_one_line_with_a_json_status(tmp_path, evol, content, needle):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    code, report = verify_json(evol, path)
    assert code == 2 and report["status"] == "failed" and needle in report["error"]


def test_a_fifo_with_a_writer_is_read(tmp_path, evol):
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    line = json.dumps(ifeval_row(["punctuation:no_comma"], [{}], "ok")) + "\n"

    def feed() -> None:
        with open(fifo, "w", encoding="utf-8") as fp:
            fp.write(line * 3)

    writer = threading.Thread(target=feed)
    writer.start()
    code, report = verify_json(evol, fifo)
    writer.join()
    assert code == 0 and report["rows"]["checked"] == 3


@pytest.mark.slow
def test_a_fifty_megabyte_line_is_read(tmp_path, evol):
    row = ifeval_row(["punctuation:no_comma"], [{}], "ok") | {"blob": "x" * 50_000_000}
    code, report = verify_json(evol, write_rows(tmp_path / "big.jsonl", [row]))
    assert code == 0 and report["rows"]["strict"] == 1


# -- exports: datasets, evol verify, open-instruct's reader -------------------------------------


def open_instruct_constraints(label: str) -> list[tuple[str, dict[str, Any]]]:
    """open-instruct's IFEvalVerifier reading a `ground_truth` label."""
    constraint_dict = ast.literal_eval(label)
    constraint_dict = constraint_dict[0]
    if isinstance(constraint_dict, str):
        constraint_dict = json.loads(constraint_dict)
    pairs = zip(constraint_dict["instruction_id"], constraint_dict["kwargs"], strict=True)
    return [(key, {k: v for k, v in (args or {}).items() if v is not None}) for key, args in pairs]


plain_words = st.text(
    st.characters(categories=["L", "Nd"], exclude_characters="\x00"), min_size=1, max_size=12
)
phrases = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40).filter(
    lambda s: s.strip()
)


@settings(max_examples=200, deadline=None)
@given(words=st.lists(plain_words, min_size=1, max_size=3), phrase=phrases)
@pytest.mark.slow
def test_ground_truth_reads_back_the_same_through_literal_eval(words, phrase):
    constraints = [
        Constraint(id="keywords:existence", kwargs={"keywords": sorted(words)}),
        Constraint(id="startend:end_checker", kwargs={"end_phrase": phrase}),
        Constraint(id="punctuation:no_comma"),
    ]
    label = ground_truth(constraints)
    assert open_instruct_constraints(label) == [(c.id, c.kwargs) for c in constraints]
    assert json.loads(label)[0]["kwargs"][1]["end_phrase"] == phrase


def test_exports_load_with_datasets_and_verify_round_trips(tmp_path, evol):
    datasets = pytest.importorskip("datasets")
    run = constrained_run(tmp_path)
    for shape, name in [("rlvr", "r.jsonl"), ("ifeval", "i.jsonl"), ("rlvr", "r.json")]:
        out = tmp_path / name
        export_run(run, out, shape=shape)
        loaded = datasets.load_dataset(
            "json", data_files=str(out), split="train", cache_dir=str(tmp_path / "hf")
        )
        assert loaded.num_rows == 20
        code, report = verify_json(evol, out)
        assert code == 0 and report["rows"]["checked"] == 20
        if shape == "rlvr":
            for row in loaded:
                for key, kwargs in open_instruct_constraints(row["ground_truth"]):
                    check(row["messages"][-1]["content"], [Constraint(id=key, kwargs=kwargs)])


def test_an_rlvr_parquet_export_round_trips_through_evol_verify(tmp_path, evol):
    pytest.importorskip("pyarrow")
    out = tmp_path / "r.parquet"
    export_run(constrained_run(tmp_path), out, shape="rlvr")
    code, report = verify_json(evol, out)
    assert code == 0 and report["rows"]["checked"] == 20


# -- nondeterminism and the offline punkt cache ---------------------------------------------------


LANGUAGE_ROWS = [
    ifeval_row(["language:response_language"], [{"language": lang}], text)
    for lang, text in [
        ("en", "ok"),
        ("de", "Das ist gut so"),
        ("it", "Ciao a tutti, come va oggi"),
        ("pt", "Obrigado pelo seu tempo"),
        ("fr", "Merci beaucoup pour tout"),
        ("pl", "Dziękuję bardzo za wszystko"),
        ("en", "Hi"),
        ("sw", "Habari yako rafiki"),
    ]
]


def verify_in_child(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "evol", "verify", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.mark.slow
def test_the_same_file_twice_gives_the_same_numbers(tmp_path):
    path = write_rows(tmp_path / "langs.jsonl", LANGUAGE_ROWS * 5)
    first, second = verify_in_child(path), verify_in_child(path)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout


@pytest.mark.slow
def test_processes_building_the_punkt_cache_at_once_all_succeed(tmp_path):
    row = ifeval_row(
        ["length_constraints:number_sentences"],
        [{"num_sentences": 3, "relation": "less than"}],
        "One here. Two here.",
    )
    path = write_rows(tmp_path / "s.jsonl", [row])
    env = os.environ | {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "evol", "verify", str(path), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(3)
    ]
    for child in children:
        out, _err = child.communicate(timeout=300)
        assert child.returncode == 0 and json.loads(out)["rows"]["strict"] == 1


def test_the_punkt_cache_is_as_readable_as_its_files(tmp_path):
    code = (
        "import os; os.umask(0o022)\n"
        "from evol.method.ifeval_library import punkt_data_root\n"
        "print(punkt_data_root())\n"
    )
    env = os.environ | {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    english = Path(done.stdout.strip()) / "tokenizers" / "punkt_tab" / "english"
    assert stat.S_IMODE(english.stat().st_mode) & 0o055 == 0o055


@pytest.mark.slow
def test_an_unwritable_cache_blocks_only_checks_that_need_punkt(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    env = os.environ | {"XDG_CACHE_HOME": str(blocker / "cache"), "HOME": str(blocker)}
    path = write_rows(
        tmp_path / "nc.jsonl", [ifeval_row(["punctuation:no_comma"], [{}], "no commas")]
    )
    done = verify_in_child(path, env)
    assert done.returncode == 0, done.stderr
    # A check that splits sentences says why it cannot, in one line.
    kwargs = {"num_sentences": 2, "relation": "less than"}
    row = ifeval_row(["length_constraints:number_sentences"], [kwargs], "One. Two.")
    path = write_rows(tmp_path / "sentences.jsonl", [row])
    done = verify_in_child(path, env)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "length_constraints:number_sentences" in line
    assert "cannot write the sentence splitter's data" in line and "XDG_CACHE_HOME" in line


@pytest.mark.slow
def test_a_relative_cache_home_is_not_written_under_the_working_directory(tmp_path):
    row = ifeval_row(["punctuation:no_comma"], [{}], "fine")
    path = write_rows(tmp_path / "nc.jsonl", [row])
    env = os.environ | {"XDG_CACHE_HOME": "relative-cache", "HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-m", "evol", "verify", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "relative-cache").exists()
    assert (tmp_path / "home" / ".cache" / "evol" / "nltk_data").is_dir()


@pytest.mark.slow
def test_a_damaged_punkt_cache_is_rebuilt_or_one_line(tmp_path):
    from punkt import __version__ as punkt_version

    english = tmp_path / "cache" / "evol" / "nltk_data" / f"punkt-{punkt_version}"
    english = english / "tokenizers" / "punkt_tab" / "english"
    english.mkdir(parents=True)
    row = ifeval_row(
        ["length_constraints:number_sentences"],
        [{"num_sentences": 3, "relation": "less than"}],
        "One here. Two here.",
    )
    path = write_rows(tmp_path / "s.jsonl", [row])
    done = verify_in_child(path, os.environ | {"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert done.returncode in (0, 2) and "Traceback" not in done.stderr, done.stderr[-300:]
