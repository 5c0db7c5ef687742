"""What a server, a seed file or a run directory wrote reaches the terminal inert.

A model id from /models, a server's error message, a seed file's field names, a run's records:
each may hold CSI (colours), OSC (window title; OSC 52 writes the clipboard), C1 controls or
bidi overrides. Whatever evol prints shows them as escapes (`\\x1b`), never as the bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from evol.terminal import json_printable, printable
from tests.support.fake_server import FakeServer
from tests.support.runs import record, write_run, write_seeds

HOSTILE_ID = "\x1b]0;pwned\x07\x1b[31mred-model"
CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4=\x07"  # OSC 52: "put `rm -rf ~` on the clipboard"
# Any byte a terminal acts on: C0 but tab and newline, DEL, C1, the bidi controls.
ACTIVE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def assert_inert(text: str) -> None:
    assert not ACTIVE.search(text), repr(text)


@pytest.mark.parametrize(
    ("text", "lines", "shown"),
    [
        ("\x1b[31mred\x1b[0m", True, "\\x1b[31mred\\x1b[0m"),  # CSI
        ("\x1b]0;title\x07", True, "\\x1b]0;title\\x07"),  # OSC ended by BEL
        ("\x1b]52;c;eA==\x1b\\", True, "\\x1b]52;c;eA==\\x1b\\"),  # OSC 52 ended by ST
        ("\x9b31m\x9d0;t\x9c", True, "\\x9b31m\\x9d0;t\\x9c"),  # C1 CSI, OSC, ST
        ("a\x00b\x7fc\rd\x08", True, "a\\x00b\\x7fc\\rd\\x08"),
        ("abc\u202edef\u2066x\u2069", True, "abc\\u202edef\\u2066x\\u2069"),  # bidi
        ("two\nlines\tand a tab", True, "two\nlines\tand a tab"),
        ("two\nlines\tand a tab", False, "two\\nlines\\tand a tab"),  # one line: escaped
        # Looks like a sequence, is text: left alone, as is every printable character.
        (
            "[31m ]0;title \\x1b café 中文 😀 ½ \u00a0",
            True,
            "[31m ]0;title \\x1b café 中文 😀 ½ \u00a0",
        ),
    ],
)
def test_printable(text: str, lines: bool, shown: str) -> None:
    assert printable(text, lines=lines) == shown
    assert_inert(printable(text, lines=lines))


def test_json_printable_keeps_the_value_and_drops_the_bytes() -> None:
    value = {"id": HOSTILE_ID + "\x9b2J\u202e\x7f", "plain": "café\n"}
    text = json_printable(json.dumps(value, ensure_ascii=False))
    assert_inert(text.replace("\n", ""))
    assert json.loads(text) == value


def test_a_hostile_model_id_and_error_message_reach_stderr_inert(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a river"}])
    with FakeServer(models=(HOSTILE_ID,)) as server:
        # A lone model id that holds control characters is neither used nor printed raw.
        ran = evol("run", seeds, "--out", tmp_path / "run", "--base-url", server.base_url)
        # The server's 404 repeats the model asked for, OSC 52 included.
        missing = evol(
            "run", seeds, "--out", tmp_path / "run2", "--base-url", server.base_url,
            "--model", f"no-such{CLIPBOARD}", "--json",
        )  # fmt: skip
    assert ran.exit_code == 2 and "control characters" in ran.stderr and "--model" in ran.stderr
    assert missing.exit_code == 2
    error = missing.stderr.splitlines()[-1]
    assert error.startswith("evol: error: ") and "does not exist" in error
    for text in (ran.stderr, missing.stderr, missing.stdout):
        assert_inert(text)
    assert json.loads(missing.stdout)["status"] == "failed"


def test_score_prints_a_hostile_model_id_inert(evol, tmp_path: Path) -> None:
    from tests.support.scoring import ScoringResponder

    run = write_run(tmp_path / "run", [record("s1", "Name a river")])
    with FakeServer(models=(HOSTILE_ID,), responder=ScoringResponder()) as server:
        result = evol("score", run, "--base-url", server.base_url, "--no-complexity")
    assert result.exit_code == 2 and "control characters" in result.stderr
    assert_inert(result.stderr + result.stdout)


def test_validate_prints_a_seed_files_field_names_inert(evol, tmp_path: Path) -> None:
    rows = [{"instruction": "Name a river", f"tag{CLIPBOARD}\u202e": 1, "\x9b2J": 2}]
    seeds = write_seeds(tmp_path / "seeds.jsonl", rows)
    result = evol("validate", seeds)
    assert result.exit_code == 0, result.output
    assert "tag\\x1b]52;c;" in result.stdout
    assert_inert(result.stdout + result.stderr)
    as_json = evol("validate", seeds, "--json").stdout
    assert_inert(as_json.strip())
    assert set(json.loads(as_json)["metadata_fields"]) == {f"tag{CLIPBOARD}\u202e", "\x9b2J"}


def test_show_and_stats_print_a_runs_text_inert(evol, tmp_path: Path) -> None:
    hostile = f"Clear {CLIPBOARD}\x9b2J the \u202eterminal"
    records = [
        record("s1", hostile),
        record("s1.1", hostile + " twice", operation=f"deepen{CLIPBOARD}"),
    ]
    # A reason is one of evol's own: a hostile one makes the line no record (see the end).
    odd = f"sorry\x9b2J{CLIPBOARD}"
    eliminated = [record("s1.2", "x", output=None, reason="sorry", detail=odd)]
    run = write_run(tmp_path / "run", records, eliminated)
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps(manifest | {"status": f"odd{CLIPBOARD}"}))
    for command in (("show", run, "s1.1"), ("stats", run)):
        for options in ((), ("--json",)):
            result = evol(*command, *options)
            assert result.exit_code == 0, result.output
            assert_inert(result.stdout.strip() + result.stderr)
    shown = json.loads(evol("show", run, "s1.1", "--json").stdout)
    assert shown["roots"][0]["instruction"] == hostile  # the JSON keeps the value whole
    write_run(run, records, [eliminated[0] | {"reason": odd}])
    refused = evol("stats", run)
    assert refused.exit_code == 2 and "eliminated.jsonl:1: not an evol record" in refused.stderr
    assert_inert(refused.stderr)


def test_paths_a_user_typed_are_printed_inert(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river")])
    out = tmp_path / f"x{CLIPBOARD}\u202e" / "ex.jsonl"
    exported = evol("export", run, "--out", out)
    reported = evol("report", run, "--out", tmp_path / f"r{CLIPBOARD}.html")
    for result in (exported, reported):
        assert result.exit_code == 0, result.output
        assert "\\x1b]52;c;" in result.stdout
        assert_inert(result.stdout + result.stderr)
