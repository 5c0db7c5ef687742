"""A `user:password@` in --base-url: HTTP Basic auth on every backend, never shown.

Before, the `openai` backend and --batch crashed on it with aiohttp's "Cannot combine AUTH
argument with credentials encoded in URL" (a traceback, exit 1, no --json object, run.json
left `interrupted`). Now the login goes as HTTP Basic auth on `openai`, `openai-sdk` and
--batch alike; next to an API key (which takes the same Authorization header) it is refused
before anything is sent, in one line, exit 2.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.support.batch_server import BatchServer, basic
from tests.support.hostile_server import HostileServer, Request, answer_normally, response
from tests.support.runs import write_seeds
from tests.support.subprocesses import run_evol

USER, PASSWORD = "ann", "pa:ss@w/rd"
QUOTED = "pa%3Ass%40w%2Frd"  # the password as a URL carries it
KEY = "sk-test-URLLOGIN-0123456789abcdef"


def with_login(url: str) -> str:
    return url.replace("http://", f"http://{USER}:{QUOTED}@")


def assert_login_nowhere(out: Path, *printed: str) -> None:
    files = [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file()]
    for text in (*printed, *files):
        assert QUOTED not in text and PASSWORD not in text and KEY not in text


@pytest.mark.parametrize("backend", ["openai", "openai-sdk"])
@pytest.mark.slow
def test_a_login_in_the_base_url_goes_as_basic_auth(tmp_path: Path, backend: str) -> None:
    out = tmp_path / "run"
    with HostileServer(answer_normally) as server:
        child = run_evol(
            with_login(server.base_url), out, "--generations", "1", "--backend", backend, "--json"
        )
        sent = [request.headers.get("authorization") for request in server.requests]
        paths = [request.path for request in server.requests]
    assert child.returncode == 0, child.stderr
    assert sent and set(sent) == {basic(USER, PASSWORD)}
    assert all(path.startswith("/v1/") for path in paths)
    assert json.loads(child.stdout)["status"] == "complete"
    assert_login_nowhere(out, child.stdout, child.stderr)


@pytest.mark.parametrize("backend", ["openai", "openai-sdk"])
@pytest.mark.slow
def test_a_login_next_to_a_key_is_refused_in_one_line(tmp_path: Path, backend: str) -> None:
    out = tmp_path / "run"
    with HostileServer(answer_normally) as server:
        child = run_evol(
            with_login(server.base_url), out, "--backend", backend, "--json",
            env={"OPENAI_API_KEY": KEY},
        )  # fmt: skip
        sent = list(server.requests)
    assert child.returncode == 2, child.stderr
    (line,) = child.stderr.strip().splitlines()
    assert "carries user:password@" in line and "OPENAI_API_KEY" in line, line
    assert json.loads(child.stdout)["status"] == "failed" and sent == []
    assert_login_nowhere(tmp_path, child.stdout, child.stderr)


def test_a_login_in_the_base_url_goes_as_basic_auth_with_batch(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Explain topic 1."}])
    out = tmp_path / "run"
    with BatchServer(login=(USER, PASSWORD)) as server:
        result = evol(
            "run", seeds, "--out", out, "--base-url", with_login(server.base_url), "--batch",
            "--batch-poll-interval", "0.02", "--model", "fake-model", "--generations", "1",
            "--quiet", "--json",
        )  # fmt: skip
        sent = {headers.get("Authorization") for headers in server.headers}
    assert result.exit_code == 0, result.output
    assert sent == {basic(USER, PASSWORD)}
    assert_login_nowhere(out, result.output)


def test_a_login_next_to_a_key_is_refused_in_one_line_with_batch(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Explain topic 1."}])
    with BatchServer() as server:
        result = evol(
            "run", seeds, "--out", tmp_path / "run", "--base-url", with_login(server.base_url),
            "--batch", "--model", "fake-model", "--json", env={"OPENAI_API_KEY": KEY},
        )  # fmt: skip
        sent = list(server.requests)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "carries user:password@" in line
    assert json.loads(result.stdout)["status"] == "failed" and sent == []
    assert_login_nowhere(tmp_path, result.output)


# A password long enough that "no eight characters of it" means something; and one of an
# upstream server that ours quotes, which is no secret of ours but a password all the same.
LONG_PASSWORD = "hunter2-SECRET:pass/99"
UPSTREAM_PASSWORD = "theirPASS-Zq9w77x"
ECHOES = {
    "500 login": ("500 Internal Server Error", "login alice/{password} rejected upstream"),
    "400 login": ("400 Bad Request", "login alice/{password} may not use this model"),
    "500 url": ("500 Internal Server Error", "failed: http://alice:{password}@upstream/v1"),
    "500 upstream url": (
        "500 Internal Server Error",
        f"failed: http://bob:{UPSTREAM_PASSWORD}@upstream/v1",
    ),
}


def pieces_of(secret: str, texts: list[str]) -> list[str]:
    pieces = {secret[i : i + 8] for i in range(len(secret) - 7)}
    return sorted(piece for piece in pieces if any(piece in text for text in texts))


def assert_passwords_nowhere(out: Path, *printed: str) -> None:
    texts = [*printed, *(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())]
    for secret in (LONG_PASSWORD, quote(LONG_PASSWORD, safe=""), UPSTREAM_PASSWORD):
        assert pieces_of(secret, texts) == []


def echoed_password(request: Request) -> str:
    """The password the request carried, as the server received it (Basic auth)."""
    login = base64.b64decode(request.headers["authorization"].partition(" ")[2]).decode()
    return login.partition(":")[2]


@pytest.mark.parametrize("backend", ["openai", "openai-sdk"])
@pytest.mark.parametrize("echo", sorted(ECHOES))
@pytest.mark.slow
def test_a_password_a_server_echoes_is_kept_nowhere(tmp_path: Path, backend: str, echo: str):
    status, template = ECHOES[echo]

    async def echo_login(request: Request, writer: asyncio.StreamWriter) -> bool:
        if request.path.endswith("/models"):
            return await answer_normally(request, writer)
        message = template.format(password=echoed_password(request))
        writer.write(response(status, json.dumps({"error": {"message": message}}).encode()))
        return True

    out = tmp_path / "run"
    with HostileServer(echo_login) as server:
        url = server.base_url.replace("http://", f"http://{USER}:{quote(LONG_PASSWORD, safe='')}@")
        child = run_evol(
            url, out, "--generations", "0", "--max-retries", "0", "--backend", backend, "--json"
        )
        assert echoed_password(server.chat_requests()[0]) == LONG_PASSWORD
    assert child.returncode == (0 if status.startswith("400") else 1), child.stderr
    summary = json.loads(child.stdout)
    shown = summary["failed"][0]["error"] if status.startswith("500") else ""
    if echo.endswith("url"):
        assert "//alice:***@upstream" in shown or "//bob:***@upstream" in shown, shown
    assert_passwords_nowhere(out, child.stdout, child.stderr)


def test_a_password_echoed_in_batch_rows_is_kept_nowhere(tmp_path: Path, evol) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Explain topic 1."}])
    out = tmp_path / "run"
    with BatchServer(
        login=(USER, LONG_PASSWORD),
        row_fate=lambda line, times: "error:400",
        error_text=lambda line: f"login {USER}/{LONG_PASSWORD} may not use this model",
    ) as server:
        url = server.base_url.replace("http://", f"http://{USER}:{quote(LONG_PASSWORD, safe='')}@")
        result = evol(
            "run", seeds, "--out", out, "--base-url", url, "--batch",
            "--batch-poll-interval", "0.02", "--model", "fake-model", "--generations", "0",
            "--quiet", "--json",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len((out / "eliminated.jsonl").read_text().splitlines()) == 1
    assert_passwords_nowhere(out, result.output)
