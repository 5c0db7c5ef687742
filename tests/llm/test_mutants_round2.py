"""Promises that the second mutation round found unpinned (#22): a contaminated record is found
whatever fields it lacks and its report stays readable, a planted link's refusal says what to
do, every failure to connect is named by its cause, and a NO_PROXY entry covers the same
addresses however it is written.

Everything runs in this process (the `evol` fixture, library calls, the transport against a
server on 127.0.0.1), where mutation testing can see it.
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
from pathlib import Path

import aiohttp
import pytest

from evol.errors import EndpointUnreachable
from evol.llm.transport import failure_of, proxy_for
from evol.quality import contamination
from evol.quality.contamination import EvalIndex
from tests.support.contamination import NO_LLM, WORDS, write_bench
from tests.support.fake_server import FakeServer, Responder
from tests.support.runs import Evol, record, run_args, write_run
from tests.support.transport import PlainGreeter, no_proxy_in_the_environment, outcome, theirs

__all__ = ["no_proxy_in_the_environment"]  # autouse: the environment's proxies stay out

KEY = aiohttp.client_reqrep.ConnectionKey("h", 443, True, True, None, None, None)


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


# -- a planted link ------------------------------------------------------------------------------


def test_a_link_in_place_of_the_output_is_refused_saying_what_to_do(evol, tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [record("s1", "Name a river.")])
    target = tmp_path / "precious.txt"
    target.write_text("precious\n", encoding="utf-8")
    link = tmp_path / "out.jsonl"
    link.symlink_to(target)
    result = evol("export", run, "--out", link)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"evol: error: {link}: is a symbolic link; evol writes no file through a link: "
        "remove it or choose another name\n"
    )
    assert target.read_text(encoding="utf-8") == "precious\n"


# -- what a failure to connect is called ---------------------------------------------------------


def connect_failure(error: Exception) -> str:
    """The line a run stops with when the first connection fails with `error`."""
    result = failure_of(error, "W", 1, answered=False)
    assert type(result) is EndpointUnreachable
    return str(result)


def test_a_tls_failure_is_named_by_its_reason_not_by_openssls_whole_line() -> None:
    with PlainGreeter(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as greeter:
        url = f"https://127.0.0.1:{greeter.port}/v1"
        result = outcome(url)
    assert type(result) is EndpointUnreachable
    assert re.fullmatch(
        rf"cannot reach {re.escape(url)}: TLS failed \([A-Z_]+\); check --base-url", str(result)
    ), result


def test_a_tls_error_without_a_reason_is_named_by_its_words() -> None:
    """An SSLError raised outside OpenSSL carries no `reason`."""
    error = aiohttp.ClientConnectorSSLError(KEY, ssl.SSLError(1, "handshake cut short"))
    assert (
        connect_failure(error)
        == "cannot reach W: TLS failed (handshake cut short); check --base-url"
    )


def test_a_certificate_error_without_openssls_message_is_named_by_its_words() -> None:
    """A certificate error raised in Python (a host name check) has no `verify_message`."""
    cause = ssl.SSLCertVerificationError(1, "hostname 'h' doesn't match 'example.com'")
    error = aiohttp.ClientConnectorCertificateError(KEY, cause)
    assert connect_failure(error) == (
        "cannot reach W: TLS certificate verification failed "
        "(hostname 'h' doesn't match 'example.com'); check --base-url"
    )


def test_a_reset_without_an_error_number_is_named_by_its_kind() -> None:
    """As a reset in the TLS handshake arrives: no number, no words."""
    error = aiohttp.ClientConnectorError(KEY, ConnectionResetError())
    assert connect_failure(error) == "cannot reach W: connection reset by peer; check --base-url"


def test_a_failure_with_no_number_and_no_known_kind_keeps_its_own_words() -> None:
    """Every address of a host failing its own way: asyncio joins them in one bare OSError."""
    words = "Multiple exceptions: [Errno 111] Connect call failed, [Errno 101] Network unreachable"
    error = aiohttp.ClientConnectorError(KEY, OSError(words))
    assert connect_failure(error) == f"cannot reach W: {words}; check --base-url"


# -- which addresses a NO_PROXY entry covers -------------------------------------------------


def bypassed(no_proxy: str, url: str) -> bool:
    return proxy_for(url, {"all": "http://p:1", "no": no_proxy}) is None


@pytest.mark.parametrize("url", ["http://10.9.9.9/v1", "http://10.0.0.1:8000/v1"])
def test_a_range_written_from_one_of_its_addresses_covers_the_range(url: str) -> None:
    """10.1.2.3/8 is 10.0.0.0/8, as httpx2 reads it, not a name to compare."""
    assert bypassed("10.1.2.3/8", url)
    assert theirs({"all": "http://p:1", "no": "10.1.2.3/8"}, url) is None
    assert not bypassed("10.1.2.3/8", "http://11.0.0.1/v1")


@pytest.mark.parametrize(
    ("bracketed", "bare", "url"),
    [
        ("[::1]", "::1", "http://[0:0::1]/v1"),
        ("[::1]", "::1", "http://[::2]/v1"),
        ("[127.0.0.1]:8000", "127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("[127.0.0.1]:8000", "127.0.0.1:8000", "http://127.0.0.1:9000/v1"),
    ],
)
def test_brackets_around_an_address_do_not_change_what_an_entry_covers(
    bracketed: str, bare: str, url: str
) -> None:
    """As for the address alone; httpx2 compares these entries as strings (it proxies all four)."""
    assert bypassed(bracketed, url) == bypassed(bare, url)


def test_the_bracketed_entries_cover_their_address() -> None:
    assert bypassed("[::1]", "http://[0:0::1]/v1")
    assert bypassed("[127.0.0.1]:8000", "http://127.0.0.1:8000/v1")


@pytest.mark.parametrize("entry", ["[::1]:8000", "http://[::1]:8000"])
def test_an_ipv6_entry_with_a_port_goes_direct_as_httpx2_does(entry: str) -> None:
    url = "http://[::1]:8000/v1"
    assert theirs({"all": "http://p:1", "no": entry}, url) is None
    assert bypassed(entry, url)


def test_an_ipv6_entry_with_another_port_is_proxied_as_httpx2_does() -> None:
    url = "http://[::1]:8000/v1"
    assert theirs({"all": "http://p:1", "no": "[::1]:9000"}, url) is not None
    assert not bypassed("[::1]:9000", url)


# -- every export shape shows the trainer the whole task (attack22's survivor) -----------------

TASK = {
    "id": "s1.2",
    "instruction": "Summarise the text below in one sentence, all in lowercase.",
    "input": "The cat sat on the mat while the dog slept by the door.",
    "output": "a cat sat and a dog slept.",
    "constraints": [{"id": "change_case:english_lowercase", "kwargs": {}}],
}


@pytest.mark.parametrize("shape", ["sharegpt", "openai-chat", "ifeval", "rlvr"])
def test_every_chat_shaped_export_prompts_with_the_instruction_and_its_input(shape: str) -> None:
    from evol.dataset.export_files import shape_record
    from evol.rundir.records import compose

    row = shape_record(dict(TASK), shape, None)
    whole_task = compose(TASK["instruction"], TASK["input"])
    prompts = {
        "sharegpt": lambda: row["conversations"][0]["value"],
        "openai-chat": lambda: row["messages"][0]["content"],
        "ifeval": lambda: row["prompt"],
        "rlvr": lambda: row["messages"][0]["content"],
    }
    assert prompts[shape]() == whole_task
    assert TASK["input"] in whole_task and TASK["instruction"] in whole_task


@pytest.mark.parametrize(
    ("constraints", "why"),
    [
        ([{"kwargs": {}}], "Field required"),
        ([{"id": "x", "kwargs": []}], "Input should be a valid dictionary"),
    ],
)
def test_a_damaged_constraints_list_is_refused_naming_the_file_the_line_and_why(
    tmp_path: Path, constraints: object, why: str
) -> None:
    from evol.dataset.export import export_run
    from evol.errors import RunDirError

    rows = [record("s1", "Name a colour."), record("s1.1", "Name a warm colour.")]
    rows[1]["constraints"] = constraints
    run = write_run(tmp_path / "run", rows)
    with pytest.raises(RunDirError) as refused:
        export_run(run, tmp_path / "out.jsonl", shape="ifeval")
    assert str(refused.value) == (
        f"{run / 'gen_1.jsonl'}:1: not an evol record (constraints: {why})"
    )


def test_a_fastapi_422_names_where_and_what_of_each_error() -> None:
    from evol.llm.openai_api import _detail

    body = {
        "detail": [
            {"loc": ["body", "response_format"], "msg": "Extra inputs are not permitted"},
            {"loc": ["body", "n"], "msg": "Input should be less than 2"},
            {"msg": "no place"},
        ]
    }
    assert _detail(body) == (
        "body.response_format: Extra inputs are not permitted; "
        "body.n: Input should be less than 2; : no place"
    )
    assert _detail({"detail": "Model not loaded"}) == "Model not loaded"
    assert _detail({"detail": []}) is None and _detail({"error": "x"}) is None


# -- merge: the merged run.json describes the run as the unsharded one does ---------------------


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unsharded run (full/) and its two shards (shard-0/, shard-1/) of one seed file, with a
    skipped seed line and an eliminated evolution."""
    base = tmp_path_factory.mktemp("sharded")
    texts = [f"Explain idea {i} of gardening" for i in range(6)] + ["[sorry] Summarize Hamlet"]
    lines = [json.dumps({"id": f"s{i}", "instruction": text}) for i, text in enumerate(texts)]
    lines.insert(2, json.dumps({"id": "nothing to evolve"}))  # skipped: no instruction
    seeds = base / "seeds.jsonl"
    seeds.write_text("\n".join(lines) + "\n")
    runs = {"full": ()} | {f"shard-{i}": ("--shard", f"{i}/2") for i in range(2)}
    evol = Evol()
    with FakeServer() as server:
        for name, shard in runs.items():
            options = ("--generations", "1", "--dedup", "--skip-invalid", *shard)
            result = evol(*run_args(server, seeds, base / name, *options))
            assert result.exit_code == 0, result.output
    return base


def copied_shards(sharded: Path, tmp_path: Path) -> list[Path]:
    shards = [tmp_path / "shard-0", tmp_path / "shard-1"]
    for shard in shards:
        shutil.copytree(sharded / shard.name, shard)
    return shards


def test_a_merged_run_json_says_what_the_unsharded_run_json_says(
    evol, sharded: Path, tmp_path: Path
) -> None:
    out = tmp_path / "merged"
    result = evol("merge", sharded / "shard-1", sharded / "shard-0", "--out", out)
    assert result.exit_code == 0, result.output

    merged = json.loads((out / "run.json").read_text())
    full = json.loads((sharded / "full" / "run.json").read_text())
    assert merged["seeds"] == full["seeds"]
    assert merged["seeds"]["skipped"] and merged["seeds"]["format"]
    assert merged["seeds"]["path"] == str(sharded / "seeds.jsonl")
    assert merged["dedup"] == full["dedup"] and full["dedup"]["method"]

    def unsharded(fingerprint: dict) -> dict:
        return {key: value for key, value in fingerprint.items() if "shard" not in key}

    assert unsharded(merged["fingerprint"]) == unsharded(full["fingerprint"])
    assert merged["fingerprint"] != full["fingerprint"]  # it says the run was merged
    sizes = merged["outputs"]
    assert sizes and sizes == {name: (out / name).stat().st_size for name in sizes}
    assert set(sizes) == set(full["outputs"])


def test_merge_without_the_seed_file_says_to_pass_it(evol, sharded: Path, tmp_path: Path) -> None:
    shards = copied_shards(sharded, tmp_path)
    gone = tmp_path / "gone.jsonl"  # where the shards say their seed file was
    for shard in shards:
        manifest = json.loads((shard / "run.json").read_text())
        manifest["config"]["seeds"] = str(gone)
        (shard / "run.json").write_text(json.dumps(manifest))
    result = evol("merge", *shards, "--out", tmp_path / "merged")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"evol: error: {gone}: the shards' seed file cannot be read; pass it with --seeds "
        "(merge reads it to put the records in seed-file order)"
    )


def test_merge_refuses_an_eliminated_record_without_its_reason(
    evol, sharded: Path, tmp_path: Path
) -> None:
    shards = copied_shards(sharded, tmp_path)
    damaged = next(s / "eliminated.jsonl" for s in shards if (s / "eliminated.jsonl").exists())
    records = [json.loads(line) for line in damaged.read_text().splitlines()]
    del records[-1]["reason"]
    damaged.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = evol("merge", *shards, "--out", tmp_path / "merged")
    assert result.exit_code == 2
    assert result.stderr == (
        f"evol: error: {damaged}:{len(records)}: not an evol record (missing reason)\n"
    )
    assert not (tmp_path / "merged" / "dataset.jsonl").exists()


# -- the answer check: a reply cut at the token limit decides nothing ----------------------------


class CutAnswerChecks(Responder):
    """Every answer check's reply names a problem in prose, then is cut at the token limit."""

    def check_answer(self, task: str, structured: bool) -> str | tuple[str, str]:
        return "My choice: asks_for_information, since the answer", "length"


def test_an_answer_check_cut_at_the_token_limit_eliminates_nothing(evol, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        "".join(json.dumps({"instruction": f"Explain idea {i}"}) + "\n" for i in range(2))
    )
    with FakeServer(responder=CutAnswerChecks()) as server:
        result = evol(
            *run_args(server, seeds, tmp_path / "run", "--generations", "1", "--answer-check")
        )
        checks = len(server.requests_for("answer_check"))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run" / "eliminated.jsonl").exists()
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert checks >= 4 and manifest["judging"]["replies_read_as"]["answer_check"] == {
        "unread": checks
    }


def test_one_shard_of_one_is_the_whole_file_and_none_of_none_is_refused() -> None:
    from evol.errors import UsageError
    from evol.seeds import Shard, shard_of

    whole = Shard.parse("0/1")
    assert (whole.index, whole.count) == (0, 1)
    assert {shard_of(f"p{n}", 1) for n in range(50)} == {0}
    with pytest.raises(UsageError, match="0/0"):
        Shard.parse("0/0")
