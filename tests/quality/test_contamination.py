"""Contamination: a record sharing N words in a row with an evaluation item is flagged."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evol.method.textstats import tokens
from evol.quality import contamination
from evol.quality.contamination import MATCHES_KEPT, EvalIndex, check_contamination
from tests.support.contamination import NO_LLM, WORDS, write_bench
from tests.support.runs import record, write_run
from tests.support.varied_runs import NGRAM, contaminated_ids, kept_of, ngrams, scored

__all__ = ["scored"]  # a fixture: a scored, checked run


def shares(count: int) -> str:
    """An instruction holding the item's first `count` words in a row, case and punctuation
    changed, between words of its own."""
    return "Please, " + " ".join(w.upper() for w in WORDS[:count]) + "! Thanks a lot"


@pytest.mark.parametrize("ngram", [5, 13])
def test_n_shared_words_flag_a_record_and_n_minus_1_do_not(
    evol, tmp_path: Path, ngram: int
) -> None:
    run = write_run(
        tmp_path / "run",
        [
            record("s1", shares(ngram - 1)),
            record("s2", shares(ngram)),
            record("s3", "unrelated", output=" ".join(WORDS[5 : 5 + ngram])),
            record("s1.1", shares(ngram - 1) + " more"),
        ],
    )
    bench = write_bench(tmp_path / "bench.jsonl", ["Short one.", " ".join(WORDS)])
    result = evol("score", run, *NO_LLM, "--against", bench, "--ngram", ngram)
    assert result.exit_code == 0, result.output
    expected = " ".join(WORDS[:ngram])
    assert f's2 (instruction) ~ {bench}:2: "{expected}"' in result.stdout
    assert f"s3 (output) ~ {bench}:2:" in result.stdout
    assert "s1 " not in result.stdout and "s1.1" not in result.stdout
    assert f"{bench}: 2 items, 1 shorter than {ngram} words" in result.stdout

    stats = json.loads(evol("stats", run, "--json").stdout)
    check = stats["contamination"]
    assert (check["ngram"], check["checked"], check["flagged"]) == (ngram, 4, 2)
    assert check["share"] == 0.5 and check["stale"] is False
    assert [r["id"] for r in check["records"]] == ["s2", "s3"]
    assert check["records"][0]["matches"] == [
        {"path": str(bench), "line": 2, "field": "instruction", "words": expected}
    ]
    assert [g["contaminated"] for g in stats["generations"]] == [2, 0]
    assert "contaminated: 2 of 4 records (50.0%)" in evol("stats", run).stdout


def test_csv_sets_and_several_files(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", shares(13)), record("s2", "w20 w21")])
    csv = tmp_path / "bench.csv"
    csv.write_text('id,question\n7,"' + " ".join(WORDS) + '"\n', encoding="utf-8")
    other = write_bench(tmp_path / "other.jsonl", ["Nothing in common here at all."])
    result = evol("score", run, *NO_LLM, "--against", other, "--against", csv)
    assert result.exit_code == 0, result.output
    assert f"s1 (instruction) ~ {csv}:2:" in result.stdout
    report = json.loads((run / "contamination.json").read_text())
    assert [s["path"] for s in report["against"]] == [str(other), str(csv)]

    # A new check replaces the last one.
    assert evol("score", run, *NO_LLM, "--against", other).exit_code == 0
    assert json.loads((run / "contamination.json").read_text())["flagged"] == []


def test_a_bad_evaluation_file_is_one_line_and_writes_nothing(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", shares(13))])
    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"prompt": "fine"}\n{"prompt": \n', encoding="utf-8")
    for extra in ((), ("--dry-run",)):
        result = evol(
            "score", run, "--no-difficulty", "--no-complexity", "--against", bench, *extra
        )
        assert result.exit_code == 2
        assert result.stderr.strip().startswith(f"evol: error: {bench}:2: invalid JSON")
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (run / "contamination.json").exists() and not (run / "metrics.json").exists()


def test_index_reports_each_item_once_and_verifies_the_words() -> None:
    index = EvalIndex(ngram=3)
    index._add_item(0, 1, ["a", "b", "c", "a", "b", "c"])  # the same 3-gram twice
    index._add_item(0, 2, ["x", "a", "b", "c"])
    index._add_item(0, 3, ["a", "b", "d"])
    found = list(index.matches(["z", "a", "b", "c", "a", "b", "c"]))
    assert [(line, gram) for _set, line, gram in found] == [
        (1, ["a", "b", "c"]),
        (2, ["a", "b", "c"]),
    ]
    assert list(index.matches(["a", "b"])) == []  # shorter than the n-gram


# -- records that lack a field, the report's layout, long items (found by mutation testing) ----


# -- contamination -------------------------------------------------------------------------------


def test_a_record_without_an_input_is_still_checked_in_its_output(evol, tmp_path: Path) -> None:
    """A record that lacks `input` (a merged or hand-made dataset) was skipped past it, so a
    benchmark answer copied into its output went unflagged."""
    copied = record("s1", "Unrelated question?", output=" ".join(WORDS))
    del copied["input"]
    run = write_run(tmp_path / "run", [copied, record("s2", "Another one?")])
    bench = write_bench(tmp_path / "bench.jsonl", [" ".join(WORDS)])
    result = evol("score", run, *NO_LLM, "--against", bench)
    assert result.exit_code == 0, result.output
    assert f"s1 (output) ~ {bench}:1:" in result.stdout
    assert "s2 " not in result.stdout


def test_contamination_json_is_laid_out_for_reading(evol, tmp_path: Path) -> None:
    """One field a line, two spaces a level, as the other files a person opens in a run."""
    run = write_run(tmp_path / "run", [record("s1", " ".join(WORDS))])
    bench = write_bench(tmp_path / "bench.jsonl", [" ".join(WORDS)])
    assert evol("score", run, *NO_LLM, "--against", bench).exit_code == 0
    text = (run / "contamination.json").read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_an_item_longer_than_the_packed_positions_is_matched_up_to_them_and_no_further(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positions past the packing's width would spill into the item's number: a match there
    named an item that does not exist. The width is shrunk to 16 positions so that the item
    need not be 16 million words long."""
    monkeypatch.setattr(contamination, "_POSITION_BITS", 4)
    bench = write_bench(tmp_path / "bench.jsonl", ["a " * 16 + "secret word"])
    index = EvalIndex(2)
    index.add_file(bench)
    assert list(index.matches(["a", "secret"])) == [(0, 1, ["a", "secret"])]  # position 15
    assert list(index.matches(["secret", "word"])) == []  # position 16: not held


def test_contamination_flags_the_records_that_share_the_words(scored: dict[str, Any]) -> None:
    run = scored["run"]
    report = json.loads((run / "contamination.json").read_text())
    kept = {r["id"]: r for r in kept_of(run)}
    flagged = contaminated_ids(run, scored["items"], NGRAM)
    # A's lineage (the seed is an item's input) and C's evolutions, not C's seed.
    assert {kept[i]["root_id"] for i in flagged} == {"s1", "s3"} and "s3" not in flagged
    assert [r["id"] for r in report["flagged"]] == [i for i in kept if i in flagged]
    for row in report["flagged"]:
        assert row["generation"] == kept[row["id"]]["generation"]
        (match,) = row["matches"]
        assert match["path"] == str(scored["bench"]) and match["field"] == "instruction"
        assert match["line"] == (3 if row["id"].startswith("s1") else 2)
        shared = tuple(match["words"].split())
        assert len(shared) == NGRAM and shared in ngrams(
            tokens(kept[row["id"]]["instruction"]), NGRAM
        )
    assert report["checked"] == len(kept)
    assert report["against"] == [{"path": str(scored["bench"]), "items": 3, "too_short": 1}]


PHRASES = st.lists(st.sampled_from(["ab", "Cd", "ef"]), max_size=9).map(" ".join)


ITEMS = st.lists(st.tuples(PHRASES.filter(bool), PHRASES), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ngram=st.integers(1, 4),
    files=st.lists(ITEMS, min_size=1, max_size=2),
    texts=st.lists(
        st.tuples(PHRASES.filter(bool), PHRASES, st.none() | PHRASES), min_size=1, max_size=4
    ),
)
def test_a_record_is_flagged_for_exactly_the_items_it_shares_n_words_with(
    ngram: int, files: list[list[tuple[str, str]]], texts: list[tuple[str, str, str | None]]
) -> None:
    # Ids of a lineage with eliminated rounds: s1 (round 0), s1.2 (generation 1), s1.2.4, ...
    ids = ["s1", "s1.2", "s1.2.4", "s1.2.4.5"]
    records = [
        record(ids[k], instruction, input=given_input, output=output)
        for k, (instruction, given_input, output) in enumerate(texts)
    ]
    with tempfile.TemporaryDirectory() as scratch:
        run = write_run(Path(scratch) / "run", records)
        benches = [Path(scratch) / f"bench-{k}.jsonl" for k in range(len(files))]
        for bench, items in zip(benches, files, strict=True):
            rows = [{"instruction": i, "input": extra} for i, extra in items]
            bench.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        report = check_contamination(run, benches, ngram=ngram)
    index = [  # (file, line, n-grams in order) of each item's instruction and input
        (str(bench), line, ngrams(tokens(text), ngram))
        for bench, items in zip(benches, files, strict=True)
        for line, item in enumerate(items, start=1)
        for text in item
    ]
    expected = []
    for data in records:
        found: dict[tuple[str, int], dict[str, Any]] = {}
        for field in ("instruction", "input", "output"):
            for gram in ngrams(tokens(data[field] or ""), ngram):
                for path, line, grams in index:
                    if gram in grams and (path, line) not in found:
                        words = " ".join(gram)
                        found[path, line] = {
                            "path": path,
                            "line": line,
                            "field": field,
                            "words": words,
                        }
        if found:
            matches = list(found.values())
            expected.append({
                "id": data["id"], "generation": data["generation"],
                "matches": matches[:MATCHES_KEPT], "more_matches": max(0, len(matches) - MATCHES_KEPT),
            })  # fmt: skip
    assert [row.model_dump() for row in report.flagged] == expected
    assert report.checked == len(records)
    assert [(s.path, s.items, s.too_short) for s in report.against] == [
        (str(bench), len(items), sum(all(len(tokens(t)) < ngram for t in item) for item in items))
        for bench, items in zip(benches, files, strict=True)
    ]
