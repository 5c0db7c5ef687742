"""Servers that misbehave the way real proxies, gateways and overloaded servers do.

Each case runs `evol run` as a child process (so its memory and its exit can be measured)
against tests/support/hostile_server.py, for both OpenAI backends where both speak HTTP, and checks
that the run ends in a definite state: the right answers, a failed step, or one clear line.
"""

from __future__ import annotations

import asyncio
import gc
import json
import ssl
import subprocess
import sys
import tempfile
import threading
import zlib
from functools import cache
from pathlib import Path

import pytest

from evol.llm.transport import JsonTransport
from evol.rundir.records import compose
from tests.support.fake_server import FakeServer, Responder
from tests.support.hostile_server import (
    HostileServer,
    Request,
    answer_normally,
    certificate,
    completion_body,
    response,
    tls_context,
)
from tests.support.runs import assert_valid_run, read_jsonl, refused_url, write_seeds
from tests.support.subprocesses import ENV, run_evol

pytestmark = pytest.mark.measured  # asserts on time or memory: left out of `make mutate`

BACKENDS = ["openai", "openai-sdk"]
SEEDS = [
    {"id": f"s{i}", "instruction": f"Explain topic number {i} to a student"} for i in range(12)
]
KEY = "sk-test-HOSTILE-0123456789abcdef"


def manifest(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


# -- interim responses ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
    ],
    ids=["103", "100", "100+103"],
)
@pytest.mark.slow
def test_interim_responses_are_skipped_and_every_answer_is_its_own(
    tmp_path: Path, backend: str, interim: bytes
) -> None:
    async def with_interim(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(interim)
        return await answer_normally(request, writer)

    with HostileServer(with_interim) as server:
        out = tmp_path / "run"
        child = run_evol(
            server.base_url, out, "--generations", "1", "--backend", backend, seeds=SEEDS
        )
    assert child.returncode == 0, child.stderr
    assert_valid_run(out)
    responder = Responder()
    records = read_jsonl(out / "dataset.jsonl")
    assert len(records) == 24
    for record in records:  # each answer was made from its own instruction, none shifted
        assert record["output"] == responder.answer(compose(record["instruction"], record["input"]))


# -- bodies that never end, explode or never finish the headers ------------------------------


@cache
def gzip_bomb() -> bytes:
    """256 MiB of zeros, gzipped to about 255 KB: under the 1 MB cap as sent, and inflated
    far over both the cap and the memory margin below (a quarter of 1 GiB's CPU to make)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(256)) + packer.flush()


async def bomb(request: Request, writer: asyncio.StreamWriter) -> bool:
    if request.path.endswith("/models"):
        return await answer_normally(request, writer)
    writer.write(response("200 OK", gzip_bomb(), "Content-Encoding: gzip"))
    return False


async def endless_chunks(request: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    writer.write(b"1\r\n{\r\n")
    chunk = b'"pad": "' + b"x" * 65000 + b'",'
    for _ in range(100_000):  # at most ~6.5 GB, and it stops as soon as the client is gone
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
    return False


async def huge_length(request: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{"
    )
    for _ in range(100_000):
        writer.write(b" " * 65536)
        await writer.drain()
    return False


async def endless_headers(request: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 200 OK\r\n")
    for number in range(1_000_000):
        writer.write(b"X-Filler-%d: %s\r\n" % (number, b"y" * 100))
        await writer.drain()
    return False


@cache
def normal_peak_rss_mb(backend: str) -> float:
    """A well-behaved one-seed run's peak RSS, measured as the hostile runs are: the figure
    includes whatever the test process lends a child before exec, so compare, never bound."""
    with tempfile.TemporaryDirectory() as folder, HostileServer(answer_normally) as server:
        run = run_evol(
            server.base_url, Path(folder) / "run", "--generations", "0", "--backend", backend
        )
    assert run.returncode == 0, run.stderr
    return run.peak_rss_mb


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        (bomb, ("over 1,048,576 bytes", "compressed reply it was not asked for")),
        (endless_chunks, ("over 1,048,576 bytes",)),
        (huge_length, ("announced a reply of 1,000,000,000,000 bytes",)),
        (endless_headers, ("broken reply", "cannot reach", "Header", "header")),
    ],
    ids=["gzip-bomb", "endless-chunked", "huge-content-length", "endless-headers"],
)
@pytest.mark.slow
def test_replies_that_would_eat_all_memory_fail_the_step_within_the_cap(
    tmp_path: Path, backend: str, behaviour, why: tuple[str, ...]
) -> None:
    with HostileServer(behaviour) as server:
        out = tmp_path / "run"
        child = run_evol(
            server.base_url, out, "--generations", "0", "--max-response-mb", "1",
            "--max-retries", "1", "--retry-max-wait", "0.01", "--backend", backend, "--json",
        )  # fmt: skip
    assert child.returncode == 1, child.stderr
    assert "Traceback" not in child.stderr
    summary = json.loads(child.stdout)
    assert summary["status"] == "failed"
    (failed,) = summary["failed"]
    assert any(reason in failed["error"] for reason in why), failed["error"]
    # The bomb alone would add 256 MB; an endless body, all it was sent.
    assert child.peak_rss_mb < normal_peak_rss_mb(backend) + 150, child.peak_rss_mb


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_a_body_that_drips_is_cut_by_the_whole_request_timeout(
    tmp_path: Path, backend: str
) -> None:
    async def drip(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        )
        for _ in range(500):  # a byte every half second: 250 s for the whole body
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.5)
        return False

    with HostileServer(drip) as server:
        out = tmp_path / "run"
        child = run_evol(
            server.base_url, out, "--generations", "0", "--timeout", "2", "--max-retries", "0",
            "--backend", backend, "--json",
        )  # fmt: skip
    assert child.returncode == 1, child.stderr
    (failed,) = json.loads(child.stdout)["failed"]
    assert "timed out after 2s" in failed["error"]


# -- redirects -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "status",
    ["301 Moved Permanently", "302 Found", "307 Temporary Redirect", "308 Permanent Redirect"],
)
@pytest.mark.slow
def test_a_redirect_is_one_clear_error_naming_the_location(
    tmp_path: Path, backend: str, status: str
) -> None:
    async def moved(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(
            response(status, b"", "Location: https://elsewhere.example/v1/chat/completions")
        )
        return True

    with HostileServer(moved) as server:
        out = tmp_path / "run"
        child = run_evol(server.base_url, out, "--generations", "0", "--backend", backend, "--json")
        calls = len(server.chat_requests())
    assert child.returncode == 2
    lines = child.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and "redirects to https://elsewhere.example/v1/chat/completions" in lines[0]
    )
    assert calls == 1  # not retried
    assert manifest(out)["status"] == "failed" and "redirects" in manifest(out)["summary"]["error"]
    assert json.loads(child.stdout)["status"] == "failed"


# -- replies that do not fit the schema ----------------------------------------------------


MISFITS = {
    "float tokens": {"usage": {"prompt_tokens": 12.5, "completion_tokens": 3}},
    "number finish_reason": {"choices": [{"message": {"content": "hi"}, "finish_reason": 0}]},
    "no choices": {"choices": []},
    "number content": {"choices": [{"message": {"content": 5}, "finish_reason": "stop"}]},
    "usage a string": {"usage": "lots"},
    "choices an object": {"choices": {"message": {"content": "hi"}}},
    "no message": {"choices": [{"finish_reason": "stop"}]},
    "negative tokens": {"usage": {"prompt_tokens": -1, "completion_tokens": 3}},
    "choices a string": {"choices": "hello"},
    "message a string": {"choices": [{"message": "hello", "finish_reason": "stop"}]},
    "content a list": {"choices": [{"message": {"content": ["hi"]}, "finish_reason": "stop"}]},
    "numbers for text": {"choices": [{"message": {"content": 1.5}, "finish_reason": 2}]},
}
# Whole bodies that are JSON, but no object at all.
NOT_OBJECTS = {"a list": b'[{"choices": []}]', "a string": b'"hello"', "a number": b"42"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("misfit", sorted(MISFITS) + sorted(NOT_OBJECTS))
@pytest.mark.slow
def test_a_reply_that_does_not_fit_the_schema_fails_the_step_not_the_run(
    tmp_path: Path, backend: str, misfit: str
) -> None:
    async def off_schema(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.path.endswith("/models"):
            return await answer_normally(request, writer)
        body = NOT_OBJECTS.get(misfit) or completion_body(request, **MISFITS[misfit])
        writer.write(response("200 OK", body))
        return True

    with HostileServer(off_schema) as server:
        out = tmp_path / "run"
        child = run_evol(
            server.base_url, out, "--generations", "0", "--max-retries", "1",
            "--retry-max-wait", "0.01", "--backend", backend, "--json",
        )  # fmt: skip
        calls = len(server.chat_requests())
    assert child.returncode == 1, child.stderr
    assert "Traceback" not in child.stderr
    summary = json.loads(child.stdout)
    assert summary["status"] == "failed" and calls == 2  # retried once, then a failed step
    assert "not a chat completion" in summary["failed"][0]["error"]


def run_without_model(
    server: HostileServer, tmp_path: Path, backend: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """`evol run` with no --model, so that the model list is read; its output as text."""
    seeds = write_seeds(tmp_path / "s.jsonl", SEEDS[:1])
    command = [sys.executable, "-m", "evol", "run", str(seeds), "--out", str(tmp_path / "run")]
    command += ["--base-url", server.base_url, "--backend", backend, "--retry-max-wait", "0.01"]
    return subprocess.run([*command, *extra], env=ENV, capture_output=True, text=True, timeout=600)


MODEL_LISTS = {
    "ids numbers": b'{"data": [{"id": 5}]}',
    "data a string": b'{"data": "fake-model"}',
    "a list": b'[{"id": "fake-model"}]',
    "entries strings": b'{"data": ["fake-model"]}',
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("misfit", sorted(MODEL_LISTS))
@pytest.mark.slow
def test_a_model_list_that_does_not_fit_is_one_line_not_a_traceback(
    tmp_path: Path, backend: str, misfit: str
) -> None:
    async def off_schema(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.path.endswith("/models"):
            writer.write(response("200 OK", MODEL_LISTS[misfit]))
            return True
        return await answer_normally(request, writer)

    with HostileServer(off_schema) as server:
        child = run_without_model(server, tmp_path, backend, "--max-retries", "1", "--json")
    (line,) = child.stderr.strip().splitlines()
    assert child.returncode == 1 and "sent a malformed model list" in line, child.stderr
    assert json.loads(child.stdout)["status"] == "failed"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_a_model_id_with_escape_sequences_is_never_used_or_printed(
    tmp_path: Path, backend: str
) -> None:
    async def escaping(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.path.endswith("/models"):
            listing = {"data": [{"id": "fake\x1b]0;owned\x07-model\x1b[2J"}]}
            writer.write(response("200 OK", json.dumps(listing).encode()))
            return True
        return await answer_normally(request, writer)

    with HostileServer(escaping) as server:
        child = run_without_model(server, tmp_path, backend)
        asked = server.chat_requests()
    assert child.returncode == 2 and asked == []
    (line,) = child.stderr.strip().splitlines()
    assert "serves one model, 'fake-model', whose id holds control characters" in line
    assert "\x1b" not in child.stderr and "\x07" not in child.stderr


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_a_server_message_reaches_the_terminal_and_run_json_without_escapes(
    tmp_path: Path, backend: str
) -> None:
    async def not_found(request: Request, writer: asyncio.StreamWriter) -> bool:
        message = "no such model\x1b]0;owned\x07\x1b[2J\r\nInjected: line"
        writer.write(
            response("404 Not Found", json.dumps({"error": {"message": message}}).encode())
        )
        return True

    out = tmp_path / "run"
    with HostileServer(not_found) as server:
        child = run_evol(server.base_url, out, "--generations", "0", "--backend", backend)
    assert child.returncode == 2
    (line,) = child.stderr.strip().splitlines()
    assert "(no such model Injected: line)" in line, line
    assert not any(char in child.stderr + (out / "run.json").read_text() for char in "\x1b\x07\r")


# -- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad_key", [KEY + "\r", KEY + "\n", "sk-a\rInjected: yes"])
@pytest.mark.slow
def test_a_key_with_control_characters_is_refused_without_printing_it(
    tmp_path: Path, backend: str, bad_key: str
) -> None:
    with HostileServer(answer_normally) as server:
        out = tmp_path / "run"
        child = run_evol(
            server.base_url, out, "--backend", backend, env={"OPENAI_API_KEY": bad_key}
        )
        assert server.requests == []
    assert child.returncode == 2
    assert (
        child.stderr.count("\n") == 1 and "OPENAI_API_KEY holds a control character" in child.stderr
    )
    assert bad_key.strip() not in child.stderr and "sk-a" not in child.stderr


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_the_key_is_redacted_from_errors_that_echo_the_request(
    tmp_path: Path, backend: str
) -> None:
    async def echo_headers(request: Request, writer: asyncio.StreamWriter) -> bool:
        echoed = json.dumps(
            {"error": {"message": f"upstream failed; request headers: {request.headers}"}}
        )
        writer.write(response("500 Internal Server Error", echoed.encode()))
        return True

    with HostileServer(echo_headers) as server:
        out = tmp_path / "run"
        child = run_evol(
            server.base_url, out, "--generations", "0", "--max-retries", "0", "--backend", backend,
            "--json", env={"OPENAI_API_KEY": KEY},
        )  # fmt: skip
        assert server.requests and KEY in str(server.requests[0].headers)
    assert child.returncode == 1
    assert "request headers" in json.loads(child.stdout)["failed"][0]["error"]
    for text in (
        child.stdout,
        child.stderr,
        *(p.read_text() for p in out.iterdir() if p.is_file()),
    ):
        assert KEY not in text and KEY[-12:] not in text


@pytest.mark.slow
def test_a_key_in_the_base_url_is_never_shown(tmp_path: Path) -> None:
    with FakeServer() as server:
        url = f"{server.base_url}?api-key={KEY}&api-version=2024-10-21"
        out = tmp_path / "run"
        seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS[:2])
        command = [sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out), "--base-url", url, "--generations", "1", "--json"]  # fmt: skip
        result = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    outputs = [result.stdout, result.stderr, *(p.read_text() for p in out.iterdir() if p.is_file())]
    assert all(KEY not in text for text in outputs)
    assert "api-version=2024-10-21" in (out / "run.json").read_text()  # the rest stays readable


def pieces_of(secret: str, *texts: str) -> list[str]:
    """Every 8-character piece of `secret` in `texts`."""
    pieces = {secret[i : i + 8] for i in range(len(secret) - 7)}
    return sorted(piece for piece in pieces if any(piece in text for text in texts))


def run_texts(out: Path, *printed: str) -> list[str]:
    """What a run printed and every file it wrote."""
    return [*printed, *(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("served", "refusal"),
    [
        (["m-{key}"], "serves one model, 'm-***', whose id holds the API key or a password"),
        (["fake-model", "{key}"], "name a model with --model: it serves fake-model, ***"),
    ],
    ids=["one model", "two models"],
)
@pytest.mark.slow
def test_a_model_id_that_holds_the_key_is_never_used_or_shown(
    tmp_path: Path, backend: str, served: list[str], refusal: str
) -> None:
    async def key_as_model(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.path.endswith("/models"):
            listing = {"data": [{"id": name.format(key=KEY)} for name in served]}
            writer.write(response("200 OK", json.dumps(listing).encode()))
            return True
        return await answer_normally(request, writer)

    with HostileServer(key_as_model) as server:
        child = run_without_model(server, tmp_path, backend, "--api-key", KEY, "--json")
        asked = server.chat_requests()
    assert child.returncode == 2 and asked == []
    (line,) = child.stderr.strip().splitlines()
    assert refusal in line, line
    assert pieces_of(KEY, *run_texts(tmp_path / "run", child.stdout, child.stderr)) == []


def key_in_location(request: Request) -> str:
    """A Location built from the request's own credentials: in the path, a query, a header."""
    key = request.headers.get("authorization", "").partition(" ")[2]
    return f"Location: http://127.0.0.1:1/v1/{key}?q={key}&h=Bearer%20{key}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.slow
def test_a_redirect_that_carries_the_key_names_it_redacted(tmp_path: Path, backend: str) -> None:
    async def moved(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response("307 Temporary Redirect", b"", key_in_location(request)))
        return True

    out = tmp_path / "run"
    with HostileServer(moved) as server:
        child = run_evol(
            server.base_url, out, "--generations", "0", "--backend", backend, "--json",
            env={"OPENAI_API_KEY": KEY},
        )  # fmt: skip
    assert child.returncode == 2
    (line,) = child.stderr.strip().splitlines()
    assert "redirects to http://127.0.0.1:1/v1/***?q=***" in line, line
    assert pieces_of(KEY, *run_texts(out, child.stdout, child.stderr)) == []


@pytest.mark.slow
def test_a_redirect_that_carries_the_key_names_it_redacted_in_score(tmp_path: Path) -> None:
    async def moved(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response("302 Found", b"", key_in_location(request)))
        return True

    out = tmp_path / "run"
    with FakeServer() as server:
        assert run_evol(server.base_url, out, "--generations", "1").returncode == 0
    with HostileServer(moved) as server:
        command = [sys.executable, "-m", "evol", "score", str(out), "--base-url", server.base_url]
        command += ["--model", "fake-model", "--answers", "--max-retries", "0"]
        env = {**ENV, "OPENAI_API_KEY": KEY}
        child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 2, child.stderr
    assert "redirects to http://127.0.0.1:1/v1/***?q=***" in child.stderr
    assert pieces_of(KEY, *run_texts(out, child.stdout, child.stderr)) == []


@pytest.mark.parametrize(
    ("how", "source"),
    [
        ("config", "api-key in --config {config}"),
        ("OPENAI_API_KEY", "OPENAI_API_KEY"),
        ("EVOL_API_KEY", "EVOL_API_KEY"),
        ("--api-key", "--api-key"),
    ],
)
@pytest.mark.slow
def test_a_refused_key_is_blamed_on_where_it_came_from(
    tmp_path: Path, how: str, source: str
) -> None:
    async def refuse(request: Request, writer: asyncio.StreamWriter) -> bool:
        writer.write(response("401 Unauthorized", b'{"error": {"message": "Incorrect API key"}}'))
        return True

    config = tmp_path / "evol.toml"
    config.write_text(f'api-key = "{KEY}"\n')
    source = source.format(config=config)
    given = {"config": ["--config", config], "--api-key": ["--api-key", KEY]}.get(how, [])
    env = {how: KEY} if how.endswith("_KEY") else {}
    out = tmp_path / "run"
    with HostileServer(refuse) as server:
        child = run_evol(server.base_url, out, "--generations", "0", "--json", *given, env=env)
    assert child.returncode == 2, child.stderr
    (line,) = child.stderr.strip().splitlines()
    assert line.endswith(f"check {source}"), line
    assert manifest(out)["config"]["api_key_source"] == source
    assert json.loads(child.stdout)["status"] == "failed"


# -- unreachable endpoints -----------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["refused", "dns", "self-signed", "wrong host"])
@pytest.mark.slow
def test_an_unreachable_endpoint_stops_the_run_at_once_and_says_why(
    tmp_path: Path, backend: str, case: str
) -> None:
    out, env = tmp_path / "run", {}
    if case in ("self-signed", "wrong host"):
        host = "localhost" if case == "self-signed" else "example.com"
        server = HostileServer(answer_normally, tls=tls_context(host))
        if case == "wrong host":  # trusted, but for another name
            env["SSL_CERT_FILE"] = str(certificate(host)[0])
    else:
        server = None
    with server or HostileServer(answer_normally):
        url = {"refused": refused_url(), "dns": "http://evol-no-such-host.invalid/v1"}.get(
            case, server.base_url if server else ""
        )
        child = run_evol(url, out, "--backend", backend, "--json", env=env)
    cause = {
        "refused": "refused",
        "dns": "resolve",
        "self-signed": "self-signed certificate",
        "wrong host": "not valid for '127.0.0.1'",
    }[case]
    assert child.returncode == 2, child.stderr
    lines = child.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    if backend == "openai":  # the SDK words its causes its own way
        assert f"cannot reach {url}" in lines[0] and cause.lower() in lines[0].lower(), lines[0]
    assert json.loads(child.stdout)["status"] == "failed"


@pytest.mark.slow
def test_a_connection_error_no_task_took_up_adds_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The cause of the flaky run above: two requests fail their TLS handshake in the same
    turn of the loop, the first stops the run, the second's error is left in a future nobody
    awaits, and asyncio printed it as 'never retrieved' after the one-line reason. Made
    deterministic: a future holding such an error is dropped while a transport is open."""

    async def drop(error: BaseException) -> None:
        transport = JsonTransport("http://127.0.0.1:9/v1", {}, timeout=1)
        transport._open()  # what the first request does
        future = asyncio.get_running_loop().create_future()
        future.set_exception(error)
        del future
        gc.collect()
        await transport.close()

    asyncio.run(drop(ssl.SSLCertVerificationError(1, "certificate verify failed")))
    asyncio.run(drop(ConnectionResetError(104, "reset")))
    assert "never retrieved" not in caplog.text
    asyncio.run(drop(ValueError("a bug, not a connection")))  # still reported
    assert "Future exception was never retrieved" in caplog.text


@pytest.mark.slow
def test_a_server_that_stops_answering_mid_run_stops_it_and_a_resume_finishes(
    tmp_path: Path,
) -> None:
    seeds = SEEDS
    with FakeServer() as straight_server:
        straight = run_evol(
            straight_server.base_url, tmp_path / "straight", "--generations", "2", seeds=seeds
        )
    assert straight.returncode == 0
    out = tmp_path / "run"
    server = FakeServer().start()
    server.hold = lambda _body: len(server.requests) > 10
    port = server.port
    # After ten answers the server holds what comes, goes down and stays down: the run
    # retries, then stops with one line instead of failing every step one by one.
    stopper = threading.Thread(
        target=lambda: (server.wait_until(lambda: server.held >= 1), server.stop()), daemon=True
    )
    stopper.start()
    child = run_evol(
        server.base_url, out, "--generations", "2", "--max-retries", "2",
        "--retry-max-wait", "0.05", "--json", seeds=seeds,
    )  # fmt: skip
    stopper.join()
    assert child.returncode == 2, child.stderr
    assert "cannot reach" in child.stderr and "3 tries" in child.stderr
    assert manifest(out)["status"] == "failed"
    with FakeServer(port=port) as again:
        resumed = run_evol(again.base_url, out, "--generations", "2", seeds=seeds)
    assert resumed.returncode == 0, resumed.stderr

    def rows(run: Path) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True) for r in read_jsonl(run / "dataset.jsonl"))

    assert rows(out) == rows(tmp_path / "straight")


# -- proxies -------------------------------------------------------------------------------


@pytest.mark.slow
def test_proxies_come_from_the_environment_as_the_openai_sdk_takes_them(tmp_path: Path) -> None:
    via_proxy: list[str] = []

    async def proxy(request: Request, writer: asyncio.StreamWriter) -> bool:
        via_proxy.append(request.path)  # a proxy gets the absolute URL
        return await answer_normally(request, writer)

    nothing_there = refused_url()
    with HostileServer(proxy) as forward, FakeServer() as direct:
        cases = [
            ({"HTTP_PROXY": forward.base_url[:-3]}, nothing_there, "proxy"),
            ({"ALL_PROXY": forward.base_url[:-3]}, nothing_there, "proxy"),
            ({"HTTPS_PROXY": forward.base_url[:-3]}, direct.base_url, "direct"),
            (
                {"HTTP_PROXY": forward.base_url[:-3], "NO_PROXY": "10.0.0.0/8,127.0.0.0/8"},
                direct.base_url,
                "direct",
            ),
            (
                {"ALL_PROXY": forward.base_url[:-3], "NO_PROXY": "127.0.0.1"},
                direct.base_url,
                "direct",
            ),
            (
                {"ALL_PROXY": forward.base_url[:-3], "NO_PROXY": "10.0.0.0/8"},
                nothing_there,
                "proxy",
            ),
        ]
        for number, (env, url, expected) in enumerate(cases):
            before_proxy, before_direct = len(via_proxy), len(direct.requests)
            child = run_evol(url, tmp_path / f"run{number}", "--generations", "0", env=env)
            assert child.returncode == 0, (env, child.stderr)
            went = "proxy" if len(via_proxy) > before_proxy else "direct"
            assert went == expected, env
            assert len(direct.requests) > before_direct if expected == "direct" else True
    assert all(path.startswith("http://127.0.0.1:") for path in via_proxy)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
@pytest.mark.slow
def test_a_proxy_that_refuses_is_named_not_the_base_url(
    tmp_path: Path, backend: str, variable: str
) -> None:
    proxy = refused_url().removesuffix("/v1")
    with FakeServer() as direct:
        child = run_evol(
            direct.base_url, tmp_path / "run", "--backend", backend, "--json",
            env={variable: proxy},
        )  # fmt: skip
        reached = len(direct.requests)
    assert child.returncode == 2, child.stderr
    (line,) = child.stderr.strip().splitlines()
    assert f"through the proxy {proxy}" in line and f"check {variable}" in line, line
    assert "check --base-url" not in line and reached == 0
    assert json.loads(child.stdout)["status"] == "failed"


PROXY_ENVIRONMENTS = [
    {"http": "http://proxy:3128"},
    {"https": "http://proxy:3128"},
    {"all": "proxy:3128"},
    {"https": "http://a:1", "all": "http://b:2"},
    {"all": "http://p:1", "no": "*"},
    {"all": "http://p:1", "no": "localhost"},
    {"all": "http://p:1", "no": "example.com"},
    {"all": "http://p:1", "no": ".example.com"},
    {"all": "http://p:1", "no": "*.example.com"},
    {"all": "http://p:1", "no": "10.0.0.0/8,192.168.1.5"},
    {"all": "http://p:1", "no": "::1,fd00::/8"},
    {"all": "http://p:1", "no": "example.com:8080"},
    {"all": "http://p:1", "no": "http://example.com"},
    {"all": "http://p:1", "no": " example.com , 127.0.0.0/8 "},
]
URLS = [
    "http://example.com/v1",
    "https://example.com/v1",
    "http://api.example.com/v1",
    "http://notexample.com/v1",
    "http://example.com:8080/v1",
    "http://localhost:8000/v1",
    "http://10.1.2.3/v1",
    "http://11.0.0.1/v1",
    "http://192.168.1.5/v1",
    "http://127.0.0.1:9/v1",
    "http://[::1]:8000/v1",
    "http://[fd12::1]/v1",
    "http://[2001:db8::1]/v1",
]


@pytest.mark.parametrize(
    "proxies", PROXY_ENVIRONMENTS, ids=[json.dumps(p) for p in PROXY_ENVIRONMENTS]
)
def test_the_proxy_choice_matches_httpx2s(proxies: dict[str, str]) -> None:
    """Parity with the SDK's HTTP library, through its (private) choice of transport."""
    httpx2_utils = pytest.importorskip("httpx2._utils")
    import httpx2

    from evol.llm.transport import proxy_for

    def theirs(url: str) -> str | None:
        mounts = {
            httpx2_utils.URLPattern(key): value
            for key, value in _environment_proxies(httpx2_utils, proxies).items()
        }
        for pattern in sorted(mounts):
            if pattern.matches(httpx2.URL(url)):
                return mounts[pattern]
        return None

    for url in URLS:
        ours = proxy_for(url, proxies)
        assert (ours.url.rstrip("/") if ours else None) == (
            theirs(url).rstrip("/") if theirs(url) else None
        ), (url, proxies)


def _environment_proxies(httpx2_utils, proxies: dict[str, str]) -> dict[str, str | None]:
    original = httpx2_utils.getproxies
    httpx2_utils.getproxies = lambda: dict(proxies)
    try:
        return httpx2_utils.get_environment_proxies()
    finally:
        httpx2_utils.getproxies = original


def test_the_gzip_bomb_really_is_one() -> None:
    """The memory test above means something only if the bomb inflates to 256 MiB."""
    unpacker, inflated = zlib.decompressobj(31), 0
    data = gzip_bomb()
    while data:
        inflated += len(unpacker.decompress(data, 1 << 24))
        data = unpacker.unconsumed_tail
    assert len(gzip_bomb()) < 1024 * 1024 and inflated == 256 << 20
