"""Redact, then cut: a key a server echoes is never kept in part, wherever the cut falls.

A server's message is cut to a readable length before it is stored or shown. Cut first, a key
that straddles the cut is no longer the key, and all but its last characters were kept (the
outside tester found them in eliminated.jsonl and run.json). Here the key is planted at every
offset around the cut, in the error bodies of both HTTP backends and of the batch path, and
no eight characters of it may appear in any file of the run nor on stdout or stderr.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from batch_server import BatchServer
from conftest import write_seeds
from hostile_server import HostileServer, Request, answer_normally, response
from hypothesis import given
from hypothesis import strategies as st
from test_hostile import run_evol

from evol.llm.openai_api import body_message
from evol.secrets import MESSAGE_LIMIT, redact_then_cut

KEY = "sk-proj-REDACT0123456789abcdefghijklmnopqrstuv"
# The first offset puts the key's end just before the cut, the last its start just after.
OFFSETS = list(range(MESSAGE_LIMIT - len(KEY) - 2, MESSAGE_LIMIT + 3))
SEEDS = [{"id": f"s{i}", "instruction": f"Explain topic number {i} to a student"} for i in OFFSETS]


def pieces_of_key(text: str, key: str = KEY) -> list[str]:
    """Every 8-character piece of `key` found in `text`."""
    return [key[i : i + 8] for i in range(len(key) - 7) if key[i : i + 8] in text]


def planted(offset: int, key: str = KEY) -> str:
    return "x" * offset + key + " and then some more words of the server's complaint"


# -- the function ----------------------------------------------------------------------------


@pytest.mark.parametrize("offset", OFFSETS)
def test_a_key_at_any_offset_around_the_cut_is_redacted_whole(offset: int) -> None:
    message = redact_then_cut(planted(offset), [KEY])
    assert pieces_of_key(message) == [] and len(message) <= MESSAGE_LIMIT


@given(
    prefix=st.text(alphabet="ab \n\x1b[", max_size=400),
    key=st.text(alphabet="cdefghijklmnopqrstuvwxyz0123456789-", min_size=8, max_size=60),
    limit=st.integers(min_value=8, max_value=500),
)
def test_no_eight_characters_of_a_key_survive_any_cut(prefix: str, key: str, limit: int) -> None:
    message = redact_then_cut(prefix + key + prefix, [key], limit)
    assert pieces_of_key(message, key) == [] and len(message) <= limit


@pytest.mark.parametrize("offset", OFFSETS)
def test_an_authorization_header_echoed_at_the_cut_is_redacted(offset: int) -> None:
    """A key we were not told of (a proxy's, a header echoed back) is found by its header."""
    echoed = "x" * offset + f"'Authorization': 'Bearer {KEY}', 'Host': 'a'"
    assert pieces_of_key(redact_then_cut(echoed, [])) == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("model \x1b[31mred\x1b[0m gone", "model red gone"),
        ("title \x1b]0;owned\x07 set", "title  set"),
        ("line one\nline two\r\n", "line one line two"),
        ("bell\x07 and \x9b2J clear", "bell  and  clear"),
        ("split sk-proj-REDACT\x1b[0m0123456789abcdefghijklmnopqrstuv key", "split *** key"),
    ],
)
def test_escape_sequences_and_control_characters_are_taken_out(text: str, shown: str) -> None:
    assert redact_then_cut(text, [KEY]) == shown


@pytest.mark.parametrize(
    "body",
    [
        lambda text: {"error": {"message": text}},
        lambda text: {"error": text},
        lambda text: {"message": text},
        lambda text: text,
    ],
    ids=["error.message", "error string", "message", "plain text"],
)
@pytest.mark.parametrize("offset", [MESSAGE_LIMIT - len(KEY) // 2, MESSAGE_LIMIT - 1])
def test_body_message_redacts_every_shape_of_error_body(body, offset: int) -> None:
    assert pieces_of_key(body_message(body(planted(offset)), "", KEY)) == []


# -- through a whole run -----------------------------------------------------------------------


def offset_of(content: str) -> int:
    """Which offset a request's seed plants the key at: its topic number."""
    return int(re.search(r"topic number (\d+)", content)[1])


def assert_key_nowhere(out: Path, *printed: str) -> None:
    texts = [*printed, *(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())]
    leaks = [pieces for text in texts if (pieces := pieces_of_key(text))]
    assert leaks == []


@pytest.mark.parametrize("backend", ["openai", "openai-sdk"])
@pytest.mark.parametrize("status", ["400 Bad Request", "500 Internal Server Error"])
def test_a_key_echoed_at_any_offset_is_kept_nowhere_in_part(
    tmp_path: Path, backend: str, status: str
) -> None:
    async def echo_key(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.path.endswith("/models"):
            return await answer_normally(request, writer)
        offset = offset_of(request.json["messages"][-1]["content"])
        if offset % 2:  # odd offsets as OpenAI's JSON error, even ones as plain text
            body = json.dumps({"error": {"message": planted(offset)}}).encode()
            writer.write(response(status, body))
        else:
            writer.write(response(status, planted(offset).encode(), "Content-Type: text/plain"))
        return True

    out = tmp_path / "run"
    with HostileServer(echo_key) as server:
        child = run_evol(
            server.base_url, out, "--generations", "0", "--max-retries", "0",
            "--backend", backend, "--json", env={"OPENAI_API_KEY": KEY}, seeds=SEEDS,
        )  # fmt: skip
    assert child.returncode in (0, 1), child.stderr
    summary = json.loads(child.stdout)
    if status.startswith("500"):
        assert len(summary["failed"]) == len(OFFSETS)
    else:
        eliminated = (out / "eliminated.jsonl").read_text().splitlines()
        assert len(eliminated) == len(OFFSETS) and "rejected" in eliminated[0]
    assert_key_nowhere(out, child.stdout, child.stderr)


def test_a_key_echoed_in_batch_rows_is_kept_nowhere_in_part(tmp_path: Path, evol) -> None:
    def fate(line: dict, _times: int) -> str:
        offset = offset_of(line["body"]["messages"][-1]["content"])
        return "output:400" if offset % 2 else "error:500"

    def echo_key(line: dict) -> str:
        return planted(offset_of(line["body"]["messages"][-1]["content"]))

    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    out = tmp_path / "run"
    with BatchServer(api_key=KEY, row_fate=fate, error_text=echo_key) as server:
        result = evol(
            "run", seeds, "--out", out, "--base-url", server.base_url, "--batch",
            "--batch-poll-interval", "0.02", "--model", "fake-model", "--generations", "0",
            "--max-retries", "0", "--quiet", "--json", env={"OPENAI_API_KEY": KEY},
        )  # fmt: skip
    assert result.exit_code in (0, 1), result.output
    summary = json.loads(result.stdout)
    assert len(summary["failed"]) == len([o for o in OFFSETS if o % 2 == 0])
    assert len((out / "eliminated.jsonl").read_text().splitlines()) == len(
        [o for o in OFFSETS if o % 2]
    )
    assert_key_nowhere(out, result.output)
