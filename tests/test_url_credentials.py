"""A `user:password@` in --base-url: HTTP Basic auth on every backend, never shown.

Before, the `openai` backend and --batch crashed on it with aiohttp's "Cannot combine AUTH
argument with credentials encoded in URL" (a traceback, exit 1, no --json object, run.json
left `interrupted`). Now the login goes as HTTP Basic auth on `openai`, `openai-sdk` and
--batch alike; next to an API key (which takes the same Authorization header) it is refused
before anything is sent, in one line, exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from batch_server import BatchServer, basic
from conftest import write_seeds
from hostile_server import HostileServer, answer_normally
from test_hostile import run_evol

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
