"""`evol verify FILE` on IFEval rows, RLVR rows and a run directory, and the exports it reads:
`evol export --format ifeval` and `--format rlvr`, loaded the way trainers load them."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.runs import read_jsonl, run_args, write_seeds

pytest.importorskip("if_verifiable", reason="the verify extra")

from evol.method.constraints import Constraint, check, from_ground_truth, ground_truth  # noqa: E402
from tests.support.verifiable import ifeval_input, verify_in_child, verify_report, write_rows

# The punkt_tab model goes to a cache of this module's, not the developer's ~/.cache.
pytestmark = pytest.mark.usefixtures("private_cache")


def c(instruction_id: str, **kwargs: Any) -> dict[str, Any]:
    return {"id": instruction_id, "kwargs": kwargs}


CAPITALS = "THIS ANSWER IS WRITTEN IN ENGLISH AND EVERY LETTER OF IT IS A CAPITAL ONE."
SMALL = "this answer is written in english, and every letter of it is a small one."
# (answer, constraints, strict verdicts, loose verdicts): each constraint passes or fails as
# its checker reads the answer, worked out by hand.
CASES: list[tuple[str, list[dict[str, Any]], list[bool], list[bool]]] = [
    (CAPITALS, [c("change_case:english_capital"), c("punctuation:no_comma")], [True, True], [True, True]),
    (SMALL, [c("change_case:english_lowercase"), c("punctuation:no_comma")], [True, False], [True, False]),
    ("<<A Title>>\nshort text here", [c("detectable_format:title"), c("length_constraints:number_words", num_words=100, relation="less than")], [True, True], [True, True]),
    ('"a quoted answer"', [c("startend:quotation"), c("startend:end_checker", end_phrase="Any other questions?")], [True, False], [True, False]),
    ("Sure! Here it is:\n" + SMALL.replace(",", ""), [c("change_case:english_lowercase")], [False], [True]),
]  # fmt: skip


def expected_rates(cases=CASES) -> dict[str, dict[str, int]]:
    """Per constraint id: checked, strict and loose passes, counted from the table."""
    rates: dict[str, dict[str, int]] = {}
    for _answer, constraints, strict, loose in cases:
        for constraint, s, lo in zip(constraints, strict, loose, strict=True):
            rate = rates.setdefault(constraint["id"], {"checked": 0, "strict": 0, "loose": 0})
            rate["checked"] += 1
            rate["strict"] += s
            rate["loose"] += lo
    return rates


def rates_of(report: dict) -> dict[str, dict[str, int]]:
    return {
        name: {key: rate[key] for key in ("checked", "strict", "loose")}
        for name, rate in report["per_id"].items()
    }


def ifeval_row(number: int, answer: str, constraints: list[dict]) -> dict[str, Any]:
    # Loaded through datasets, IFEval's kwargs carry every other id's keys as null.
    return {
        "key": number,
        "prompt": f"Prompt {number}",
        "instruction_id_list": [x["id"] for x in constraints],
        "kwargs": [x["kwargs"] | {"num_highlights": None} for x in constraints],
        "response": answer,
    }


def rlvr_row(number: int, answer: str, constraints: list[dict]) -> dict[str, Any]:
    # As open-instruct's IF datasets write ground_truth: the Python repr of a list.
    label = [{"instruction_id": [x["id"] for x in constraints], "kwargs": [x["kwargs"] or None for x in constraints]}]  # fmt: skip
    return {
        "messages": [
            {"role": "user", "content": f"Prompt {number}"},
            {"role": "assistant", "content": answer},
        ],
        "ground_truth": str(label),
        "dataset": "ifeval",
    }


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def verify_json(evol, *args: object) -> dict:
    result = evol("verify", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_the_table_agrees_with_the_librarys_own_scorer():
    """The hand-made expectations, recomputed by if-verifiable's evaluate_instructions."""
    import langdetect
    from if_verifiable.common import evaluate_instructions

    from evol.method.ifeval_library import instruction_classes

    for answer, constraints, strict, loose in CASES:
        langdetect.DetectorFactory.seed = 0
        results, _ = evaluate_instructions(
            answer,
            [x["id"] for x in constraints],
            [x["kwargs"] for x in constraints],
            "",
            instruction_classes(),
        )
        assert [r.strict_pass for r in results] == strict
        assert [r.loose_pass for r in results] == loose


@pytest.mark.parametrize(("row_format", "make_row"), [("ifeval", ifeval_row), ("rlvr", rlvr_row)])
def test_verify_reports_pass_rates_per_constraint_id(evol, tmp_path: Path, row_format, make_row):
    rows = [make_row(i, answer, constraints) for i, (answer, constraints, *_) in enumerate(CASES)]
    path = write_lines(tmp_path / "rows.jsonl", rows)
    report = verify_json(evol, path)
    assert rates_of(report) == expected_rates()
    assert report["formats"] == {row_format: len(CASES)}
    every_strict = sum(all(case[2]) for case in CASES)
    every_loose = sum(all(case[3]) for case in CASES)
    assert (report["rows"]["checked"], report["rows"]["strict"], report["rows"]["loose"]) == (
        len(CASES),
        every_strict,
        every_loose,
    )
    constraints = sum(len(case[1]) for case in CASES)
    assert report["constraints"]["checked"] == constraints
    assert report["constraints"]["strict_rate"] == sum(sum(case[2]) for case in CASES) / constraints


def test_verify_skips_the_rows_of_other_verifiers_in_a_mixed_rlvr_set(evol, tmp_path: Path):
    rows = [rlvr_row(i, answer, cs) for i, (answer, cs, *_) in enumerate(CASES)]
    rows.insert(
        2,
        {
            "messages": [{"role": "user", "content": "2+2?"}],
            "ground_truth": "4",
            "dataset": "gsm8k",
        },
    )
    rows.insert(4, {"messages": [], "ground_truth": ["x"], "dataset": ["code"]})
    rows[0]["dataset"] = ["ifeval"]
    report = verify_json(evol, write_lines(tmp_path / "mixed.jsonl", rows))
    assert report["rows_without_constraints"] == 2
    assert rates_of(report) == expected_rates()


def test_verify_prints_a_table(evol, tmp_path: Path):
    rows = [ifeval_row(i, answer, cs) for i, (answer, cs, *_) in enumerate(CASES)]
    rows.append({"prompt": "no constraints here", "response": "fine"})
    path = write_lines(tmp_path / "rows.jsonl", rows)
    result = evol("verify", path)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{path}: 5 rows checked (5 ifeval)"
    assert lines[1] == "skipped 1 rows without constraints"
    by_name = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    assert by_name["change_case:english_lowercase"] == ["50.0%", "100.0%", "2"]
    assert by_name["punctuation:no_comma"] == ["50.0%", "50.0%", "2"]
    assert lines[-2].split()[-3:] == ["40.0%", "60.0%", "5"]  # every constraint of a row met


def test_verify_reads_a_json_array_and_a_named_response_field(evol, tmp_path: Path):
    rows = [ifeval_row(i, answer, cs) for i, (answer, cs, *_) in enumerate(CASES)]
    for row in rows:
        row["completion"] = row.pop("response")
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    assert rates_of(verify_json(evol, path, "--response-field", "completion")) == expected_rates()


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "response": "x"}', "{oops"], ":2: not valid JSON"),
        (["[1, 2]"], ": row 1: not a JSON object"),
        (['"text"'], ":1: not a JSON object"),
        (['{"instruction_id_list": ["keywords:nope"], "kwargs": [{}], "response": "x"}'], ":1: unknown constraint id 'keywords:nope'"),
        (['{"instruction_id_list": ["punctuation:no_comma"], "kwargs": [], "response": "x"}'], ":1: unreadable constraints: instruction_id_list and kwargs must be lists of the same length"),
        (['{"instruction_id_list": ["punctuation:no_comma"], "kwargs": null, "response": "x"}'], ":1: unreadable constraints: instruction_id_list and kwargs must be lists of the same length\n"),
        (['{"instruction_id_list": ["keywords:letter_frequency"], "kwargs": [{"letter": "#", "let_frequency": 4, "let_relation": "at least"}], "response": "x"}'], ":1: keywords:letter_frequency: letter must be one ASCII letter, got '#'"),
        (['{"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 9}], "response": "x"}'], ":1: length_constraints:number_words: kwargs missing relation"),
        (['{"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}'], ":1: no 'response' field: name the answer's with --response-field"),
        (['{"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "response": 3}'], ":1: the answer is not a string: int"),
        (['{"messages": [{"role": "user", "content": "q"}], "ground_truth": "[{\'instruction_id\': [\'punctuation:no_comma\'], \'kwargs\': [None]}]"}'], ":1: the last message is not the assistant's"),
        (['{"messages": [], "ground_truth": "[{\'no\': 1}]"}'], ':1: unreadable constraints: expected [{"instruction_id": [...], "kwargs": [...]}]\n'),
        (['{"constraints": [{"id": "punctuation:no_comma", "kwargs": [1]}], "output": "x"}'], ":1: not a constraint: kwargs"),
        (['{"prompt": "nothing to check", "response": "x"}'], ": no row to check: expected instruction_id_list"),
        (['{"messages": [], "ground_truth": "{\\"func_name\\": \\"validate_lowercase\\"}", "dataset": "ifeval"}'], ":1: unreadable constraints: a {func_name: ...} label (allenai/RLVR-IFeval, open-instruct's ifeval_old) names open-instruct's own functions, not IFEval ids\n"),
        (['{"instruction_id_list": ["startend:end_checker"], "kwargs": [{"end_phrase": ["Bye"]}], "response": "x"}'], ":1: startend:end_checker: end_phrase must be text, got ['Bye']"),
        (['{"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": []}], "response": "x"}'], ":1: keywords:existence: keywords must be a list of words, got []"),
        (["PAR1 but nothing a Parquet file holds"], ": not a readable Parquet file"),
    ],
)  # fmt: skip
def test_a_bad_row_is_one_line_naming_file_and_line(evol, tmp_path: Path, lines, message):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for as_json in ([], ["--json"]):
        result = evol("verify", path, *as_json)
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"evol: error: {path}")
        assert message in result.stderr


def test_only_rlvr_answers_are_checked_after_their_thinking_section(evol, tmp_path: Path):
    """open-instruct's verifier drops what precedes `</think>`; IFEval rows are read as they
    are (google-research's evaluation strips nothing)."""
    answer = "<|assistant|><think>Well, first, no commas.</think><answer>Done here</answer>"
    no_comma = [c("punctuation:no_comma")]
    rlvr = verify_json(evol, write_lines(tmp_path / "r.jsonl", [rlvr_row(0, answer, no_comma)]))
    ifeval = ifeval_row(0, answer, no_comma)
    ifeval_report = verify_json(evol, write_lines(tmp_path / "i.jsonl", [ifeval]))
    assert (rlvr["rows"]["strict"], ifeval_report["rows"]["strict"]) == (1, 0)
    named = rlvr_row(0, "x", no_comma) | {"answer": "<think>a, b</think>\n  fine  "}
    named_report = verify_json(
        evol, write_lines(tmp_path / "n.jsonl", [named]), "--response-field", "answer"
    )
    assert named_report["rows"]["strict"] == 1


def test_a_json_array_after_a_bom_is_read(evol, tmp_path: Path):
    rows = [ifeval_row(i, answer, cs) for i, (answer, cs, *_) in enumerate(CASES)]
    path = tmp_path / "rows.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(rows).encode())
    assert rates_of(verify_json(evol, path)) == expected_rates()


def verify_without(package: str, path: Path) -> subprocess.CompletedProcess[str]:
    """`evol verify path` in a process where `package` cannot be imported."""
    script = (
        f"import sys; sys.modules[{package!r}] = None; "  # as if it were not installed
        "from evol.cli import main; sys.argv = ['evol', 'verify', sys.argv[1]]; main()"
    )
    command = [sys.executable, "-c", script, str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_without_pyarrow_a_parquet_file_is_one_line_naming_the_extra(tmp_path: Path):
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1" + b"\0" * 16 + b"PAR1")
    done = verify_without("pyarrow", path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pip install 'evol[parquet]'" in done.stderr


def test_a_missing_file_is_one_line(evol, tmp_path: Path):
    result = evol("verify", tmp_path / "absent.jsonl")
    assert result.exit_code == 2 and "absent.jsonl: cannot read it" in result.stderr


@pytest.mark.slow
def test_without_the_verify_extra_verify_says_what_to_install(tmp_path: Path):
    path = write_lines(tmp_path / "rows.jsonl", [ifeval_row(0, "x", CASES[0][1])])
    done = verify_without("if_verifiable", path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "pip install 'evol[verify]'" in done.stderr


# -- a run directory whose records carry constraints, and its exports ---------------------------

SEEDS = [{"instruction": f"Explain idea number {i}"} for i in range(8)]


@pytest.fixture
def constrained_run(evol, server, tmp_path: Path) -> Path:
    """A finished run whose records carry the cases' constraints and answers, every third
    record none (as a lineage that never drew one), in gen_0 and gen_1 alike."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    number = 0
    for path in sorted(out.glob("gen_*.jsonl")):
        records = read_jsonl(path)
        for record in records:
            if number % 3 != 2:
                answer, constraints, *_ = CASES[number % len(CASES)]
                record["constraints"], record["output"] = constraints, answer
            number += 1
        write_lines(path, records)
    return out


def constrained_records(run: Path) -> list[dict[str, Any]]:
    return [r for path in sorted(run.glob("gen_*.jsonl")) for r in read_jsonl(path) if "constraints" in r]  # fmt: skip


def load(path: Path, tmp_path: Path, builder: str = "json"):
    datasets = pytest.importorskip("datasets")
    return datasets.load_dataset(
        builder, data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache")
    )


def verdicts(answer: str, constraints: list[Constraint]) -> list[tuple[bool, bool]]:
    return [(v.strict, v.loose) for v in check(answer, constraints)]


def test_verify_a_run_directory(evol, constrained_run: Path):
    records = constrained_records(constrained_run)
    total = sum(1 for path in constrained_run.glob("gen_*.jsonl") for _ in read_jsonl(path))
    report = verify_json(evol, constrained_run)
    assert report["formats"] == {"evol": len(records)}
    assert report["rows_without_constraints"] == total - len(records) > 0
    chosen = [next(case for case in CASES if case[0] == r["output"]) for r in records]
    assert rates_of(report) == expected_rates(chosen)


def test_ifeval_export_round_trips_through_the_checker(evol, constrained_run: Path, tmp_path):
    out = tmp_path / "ifeval.jsonl"
    result = evol("export", constrained_run, "--format", "ifeval", "--out", out)
    assert result.exit_code == 0, result.stderr
    records = constrained_records(constrained_run)
    total = sum(1 for path in constrained_run.glob("gen_*.jsonl") for _ in read_jsonl(path))
    assert (
        f"left out {total - len(records)} records without verifiable constraints" in result.stderr
    )
    rows = load(out, tmp_path)
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert set(row) == {"key", "prompt", "instruction_id_list", "kwargs", "response"}
        assert (row["key"], row["prompt"]) == (record["id"], record["instruction"])
        # datasets fills every kwargs struct with the other ids' keys, as null.
        loaded = [Constraint(id=i, kwargs=k) for i, k in zip(row["instruction_id_list"], row["kwargs"], strict=True)]  # fmt: skip
        original = [Constraint.model_validate(x) for x in record["constraints"]]
        assert loaded == original
        assert verdicts(row["response"], loaded) == verdicts(record["output"], original)
    assert rates_of(verify_json(evol, out)) == rates_of(verify_json(evol, constrained_run))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_rlvr_export_round_trips_through_the_checker(
    evol, constrained_run: Path, tmp_path, suffix: str
):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"rlvr{suffix}"
    result = evol(
        "export", constrained_run, "--format", "rlvr", "--out", out, "--system-prompt", "Be exact."
    )
    assert result.exit_code == 0, result.stderr
    records = constrained_records(constrained_run)
    rows = load(out, tmp_path, "parquet" if suffix == ".parquet" else "json")
    assert len(rows) == len(records)
    for row, record in zip(rows, records, strict=True):
        assert row["dataset"] == "ifeval"
        assert row["messages"] == [
            {"role": "system", "content": "Be exact."},
            {"role": "user", "content": record["instruction"]},
            {"role": "assistant", "content": record["output"]},
        ]
        # open-instruct's ifeval verifier: ast.literal_eval(label)[0] -> ids and kwargs.
        label = ast.literal_eval(row["ground_truth"])[0]
        assert label == json.loads(row["ground_truth"])[0]
        original = [Constraint.model_validate(x) for x in record["constraints"]]
        assert label["instruction_id"] == [x.id for x in original]
        assert [Constraint(id=i, kwargs=k) for i, k in zip(label["instruction_id"], label["kwargs"], strict=True)] == original  # fmt: skip
        assert from_ground_truth(row["ground_truth"]) == original
        answer = row["messages"][-1]["content"]
        assert verdicts(answer, original) == verdicts(record["output"], original)
    assert rates_of(verify_json(evol, out)) == rates_of(verify_json(evol, constrained_run))


def test_ifeval_export_refuses_parquet_and_a_system_prompt(evol, constrained_run, tmp_path):
    result = evol("export", constrained_run, "--format", "ifeval", "--out", tmp_path / "x.parquet")
    assert result.exit_code == 2 and "write JSON Lines" in result.stderr
    result = evol(
        "export", constrained_run, "--format", "ifeval", "--out", tmp_path / "x.jsonl",
        "--system-prompt", "Be exact.",
    )  # fmt: skip
    assert result.exit_code == 2 and "the ifeval format has no system turn" in result.stderr
    assert list(tmp_path.glob("x*")) == []


def test_a_damaged_constraint_in_a_record_names_its_file_and_line(evol, constrained_run, tmp_path):
    gen_1 = constrained_run / "gen_1.jsonl"
    records = read_jsonl(gen_1)
    records[0]["constraints"] = [{"id": "punctuation:no_comma", "kwargs": "none"}]
    write_lines(gen_1, records)
    result = evol("export", constrained_run, "--format", "rlvr", "--out", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"{gen_1}:1: not an evol record (constraints:" in result.stderr


def test_select_does_not_write_the_constrained_formats(evol, constrained_run, tmp_path):
    result = evol(
        "select",
        constrained_run,
        "--budget",
        "2",
        "--format",
        "rlvr",
        "--out",
        tmp_path / "x.jsonl",
    )
    assert result.exit_code == 2 and "evol export writes rlvr" in result.stderr


def test_a_deeply_nested_answer_is_a_failed_json_check_not_a_crash(tmp_path, evol):
    rows = [ifeval_input(["detectable_format:json_format"], [{}], "[" * 100_000)]
    code, report = verify_report(evol, write_rows(tmp_path / "deep.jsonl", rows))
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
    path = write_rows(tmp_path / "wild.jsonl", [ifeval_input([instruction_id], [kwargs], "hi")])
    result = evol("verify", path)
    assert result.exit_code == 2
    assert f"{path}:1:" in result.stderr


def test_a_bom_at_the_start_of_a_jsonl_file_is_read(tmp_path, evol):
    path = tmp_path / "bom.jsonl"
    row = ifeval_input(["punctuation:no_comma"], [{}], "no commas here")
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(row).encode() + b"\n")
    code, report = verify_report(evol, path)
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
    code, report = verify_report(evol, write_rows(tmp_path / "think.jsonl", [row]))
    assert code == 0 and report["rows"]["strict"] == 1


NO_COMMA_LABEL = {"instruction_id": ["punctuation:no_comma"], "kwargs": [None]}


@pytest.mark.parametrize(
    "label",
    [
        [NO_COMMA_LABEL],  # a list already, not text
        json.dumps([NO_COMMA_LABEL]),  # JSON, whose null is no Python literal
        [json.dumps(NO_COMMA_LABEL)],  # the label as text inside the list
        json.dumps([str(NO_COMMA_LABEL)]),  # ... and that list itself as text
    ],
    ids=["list", "json text", "text in a list", "text in a list as text"],
)
def test_a_ground_truth_in_each_shape_open_instruct_reads_is_checked(tmp_path, evol, label):
    """open-instruct's ifeval verifier takes the label's first entry, read again where it is
    text: every such shape is the one constraint, checked (one answer meets it, one does
    not), never an unreadable row."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Answer without commas."},
                {"role": "assistant", "content": answer},
            ],
            "ground_truth": label,
            "dataset": "ifeval",
        }
        for answer in ("Done here", "Done, here")
    ]
    code, report = verify_report(evol, write_rows(tmp_path / "labels.jsonl", rows))
    assert code == 0
    assert report["rows"] == report["rows"] | {"checked": 2, "strict": 1}
    assert report["per_id"]["punctuation:no_comma"]["checked"] == 2


def test_google_ifeval_rows_with_every_kwarg_null_are_read(tmp_path, evol):
    """HF google/IFEval writes every kwarg of every id, null where unused."""
    names = ["num_highlights", "relation", "num_words", "num_placeholders", "prompt_to_repeat"]
    names += ["num_bullets", "section_spliter", "num_sections", "capital_relation", "keywords"]
    names += ["capital_frequency", "num_paragraphs", "language", "let_relation", "letter"]
    names += ["let_frequency", "end_phrase", "forbidden_words", "keyword", "frequency"]
    names += ["num_sentences", "postscript_marker", "first_word", "nth_paragraph"]
    nulls = dict.fromkeys(names)
    rows = [
        ifeval_input(
            ["punctuation:no_comma", "length_constraints:number_words"],
            [nulls, nulls | {"relation": "less than", "num_words": 5}],
            "short and plain",
        ),
        ifeval_input(["punctuation:no_comma"], [None], "a, b"),  # a null kwargs entry
    ]
    code, report = verify_report(evol, write_rows(tmp_path / "google.jsonl", rows))
    assert code == 0
    assert report["rows"] == report["rows"] | {"checked": 2, "strict": 1}


def test_json_array_crlf_and_nested_extras_are_read(tmp_path, evol):
    rows = [
        ifeval_input(["punctuation:no_comma"], [{}], "fine\r\nstill fine")
        | {"extra": {"deep": [[[1.5e300]]], "nul": "\x00", "big": 10**30}},
        ifeval_input(["punctuation:no_comma"], [{}], "a, b"),
    ]
    array = tmp_path / "rows.json"
    array.write_text("\r\n" + json.dumps(rows, indent=2).replace("\n", "\r\n"), "utf-8")
    code, report = verify_report(evol, array)
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
    code, report = verify_report(evol, path)
    assert code == 2 and report["status"] == "failed" and needle in report["error"]


def test_a_fifo_with_a_writer_is_read(tmp_path, evol):
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    line = json.dumps(ifeval_input(["punctuation:no_comma"], [{}], "ok")) + "\n"

    def feed() -> None:
        with open(fifo, "w", encoding="utf-8") as fp:
            fp.write(line * 3)

    writer = threading.Thread(target=feed)
    writer.start()
    code, report = verify_report(evol, fifo)
    writer.join()
    assert code == 0 and report["rows"]["checked"] == 3


@pytest.mark.slow
def test_a_fifty_megabyte_line_is_read(tmp_path, evol):
    row = ifeval_input(["punctuation:no_comma"], [{}], "ok") | {"blob": "x" * 50_000_000}
    code, report = verify_report(evol, write_rows(tmp_path / "big.jsonl", [row]))
    assert code == 0 and report["rows"]["strict"] == 1


LANGUAGE_ROWS = [
    ifeval_input(["language:response_language"], [{"language": lang}], text)
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


@pytest.mark.slow
def test_the_same_file_twice_gives_the_same_numbers(tmp_path):
    path = write_rows(tmp_path / "langs.jsonl", LANGUAGE_ROWS * 5)
    first, second = verify_in_child(path), verify_in_child(path)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
