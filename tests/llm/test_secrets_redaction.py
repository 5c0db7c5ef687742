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
from hypothesis import given
from hypothesis import strategies as st

from evol.llm.openai_api import body_message
from evol.secrets import MESSAGE_LIMIT, Secrets, redact, redact_then_cut
from tests.support.batch_server import BatchServer
from tests.support.hostile_server import HostileServer, Request, answer_normally, response
from tests.support.runs import refused_url, run_at, write_seeds
from tests.support.subprocesses import run_evol

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
@pytest.mark.slow
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
    assert pieces_of_key(body_message(body(planted(offset)), "", Secrets(KEY))) == []


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
@pytest.mark.slow
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


# -- a key in pieces, a login in a URL -----------------------------------------------------------


def without_gaps(text: str) -> str:
    return re.sub(r"[\s\x00-\x1f\x7f-\x9f]", "", text)


@pytest.mark.parametrize(
    "echoed",
    [
        f"bad key {KEY[:10]}\x00{KEY[10:]}",  # a NUL inside, as a C server writes it
        f"your key {KEY[:12]}\n{KEY[12:]} is bad",  # wrapped at a line's end
        f"your key {KEY[:12]}\r\n  {KEY[12:]} is bad",
        " ".join(KEY[i : i + 4] for i in range(0, len(KEY), 4)),  # groups of four
        f"key ends {KEY[:20]}",  # cut short by the server itself
        f"key starts {KEY[-9:]} and goes on",
    ],
    ids=["nul", "newline", "crlf-indent", "groups-of-four", "head", "tail"],
)
def test_a_key_in_pieces_leaves_no_eight_characters_of_it(echoed: str) -> None:
    for shown in (redact_then_cut(echoed, [KEY]), Secrets(KEY).redact(echoed)):
        assert pieces_of_key(without_gaps(shown)) == [], shown


@given(
    before=st.text(alphabet="ab \n", max_size=50),
    cuts=st.lists(st.integers(min_value=1, max_value=60), max_size=6),
    gaps=st.lists(st.sampled_from([" ", "\n", "\x00", "\r\n", "\t\t"]), min_size=6, max_size=6),
)
def test_a_key_split_anywhere_by_gaps_is_redacted(before: str, cuts: list[int], gaps) -> None:
    split, last = [], 0
    for cut, gap in zip(sorted(set(cuts)), gaps, strict=False):
        split += [KEY[last:cut], gap]
        last = cut
    echoed = before + "".join(split) + KEY[last:] + before
    assert pieces_of_key(without_gaps(redact_then_cut(echoed, [KEY], 10_000))) == []


def test_words_that_merely_look_like_a_key_stay_readable() -> None:
    text = "model sk-proj not found; see https://platform.example/keys (error 401)"
    assert Secrets(KEY).redact(text) == text  # "sk-proj" is 7 characters of it, no more


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("to http://alice:hunter2@upstream/v1 failed", "to http://alice:***@upstream/v1 failed"),
        ("clone https://ghp_token123@github.com/o/r", "clone https://***@github.com/o/r"),
        ("at //:pw@host/x", "at //:***@host/x"),
        ("https://u:p:w@h and http://v:q@i", "https://u:***@h and http://v:***@i"),
        ("see https://example.com/v1?x=1#a", "see https://example.com/v1?x=1#a"),
        ("path http://host/a@b stays", "path http://host/a@b stays"),
        ("mail alice@example.com or a:b@c", "mail alice@example.com or a:b@c"),
        ("a comment // not a url: x@y", "a comment // not a url: x@y"),
    ],
)
def test_a_login_in_any_url_a_server_quotes_is_redacted(text: str, shown: str) -> None:
    assert redact_then_cut(text, []) == shown


@pytest.mark.parametrize(
    "shape",
    ["//" + "a" * 200_000, "//a:" * 100_000, "//" * 200_000, "http://a:" + "b:" * 200_000],
)
def test_the_login_pattern_reads_adversarial_text_in_one_pass(shape: str) -> None:
    """A backtracking pattern would not finish on these; the possessive one keeps them."""
    assert Secrets().redact(shape) == shape


def test_the_password_in_a_url_is_a_secret_as_typed_and_as_quoted() -> None:
    secrets = Secrets.of(None, ["http://ann:pa%3Ass%40w%2Frd@host/v1", "http://host/v1"])
    text = "login ann/pa:ss@w/rd rejected; got pa%3Ass%40w%2Frd"
    assert secrets.redact(text) == "login ann/*** rejected; got ***"


SPLIT_KEY = {
    "nul": f"bad key {KEY[:10]}\x00{KEY[10:]}",
    "newline": f"your key {KEY[:12]}\n{KEY[12:]} is bad",
}


@pytest.mark.parametrize("backend", ["openai", "openai-sdk"])
@pytest.mark.parametrize("split", sorted(SPLIT_KEY))
@pytest.mark.slow
def test_a_key_echoed_in_pieces_is_kept_nowhere(tmp_path: Path, backend: str, split: str) -> None:
    async def echo_split_key(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.path.endswith("/models"):
            return await answer_normally(request, writer)
        body = json.dumps({"error": {"message": SPLIT_KEY[split]}}).encode()
        writer.write(response("400 Bad Request", body))
        return True

    out = tmp_path / "run"
    with HostileServer(echo_split_key) as server:
        child = run_evol(
            server.base_url, out, "--generations", "0", "--backend", backend, "--json",
            env={"OPENAI_API_KEY": KEY}, seeds=SEEDS[:2],
        )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert len((out / "eliminated.jsonl").read_text().splitlines()) == 2
    assert_key_nowhere(out, child.stdout, child.stderr)


def test_a_key_echoed_in_pieces_in_batch_rows_is_kept_nowhere(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2])
    out = tmp_path / "run"
    with BatchServer(
        api_key=KEY,
        row_fate=lambda line, times: "error:400",
        error_text=lambda line: SPLIT_KEY["newline"],
    ) as server:
        result = evol(
            "run", seeds, "--out", out, "--base-url", server.base_url, "--batch",
            "--batch-poll-interval", "0.02", "--model", "fake-model", "--generations", "0",
            "--quiet", "--json", env={"OPENAI_API_KEY": KEY},
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len((out / "eliminated.jsonl").read_text().splitlines()) == 2
    assert (out / "batch" / "results.jsonl").exists()
    assert_key_nowhere(out, result.output)


@pytest.mark.parametrize(
    "text",
    [
        "cannot reach http://h/v1?api-key=***&api-version=1: connection refused",
        "cannot reach http://h/v1?api-key=***: connection refused",
        "header api_key=*** was refused",
    ],
)
def test_a_value_redacted_already_keeps_the_text_after_it(text: str) -> None:
    """A URL shown redacted (`display_url`) goes through redaction again in an error: the rest
    of its query and the message's colon stay (the credential pattern ate them)."""
    assert redact(text, "sk-abcdefghijklmnop") == text


TWO_SEEDS = [{"instruction": f"Task {i}: explain the idea"} for i in range(2)]


def test_a_redacted_query_key_keeps_the_messages_colon(evol, tmp_path: Path) -> None:
    """'cannot reach http://...?api-key=*** connection refused': the header rule took the ':'
    after the *** that display_url had put there for the key."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", TWO_SEEDS), tmp_path / "run"
    url = refused_url()
    result = evol(*run_at(f"{url}?api-key=sk-SECRETKEY1", seeds, out))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"evol: error: cannot reach {url}?api-key=***: connection refused; check --base-url"
    ]
    assert "SECRETKEY1" not in (out / "run.json").read_text()


@pytest.mark.parametrize(
    "echoed",
    [
        "Authorization: Bearer tok-0123456789abcdef",
        "Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA==",
        "authorization: bearer tok-0123456789abcdef",
    ],
)
def test_a_bearer_credential_evol_does_not_know_is_redacted(echoed: str) -> None:
    """A credential header echoed by a server or a proxy, not evol's own key: the separator's
    `b?` (for a bytes repr, b'...') took the B of 'Bearer', the value rule then took 'earer',
    and the token itself stayed: 'Authorization: B*** tok-0123456789abcdef'."""
    from evol.secrets import redact

    shown = redact(echoed)
    assert echoed.split()[-1] not in shown
    assert shown.endswith(": ***")
