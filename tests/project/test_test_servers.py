"""The tests' own servers (tests.support.background_server and the three built on it): each
listens while it runs, ends what it holds when it stops, and then takes no connection."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from tests.support.background_server import error_response
from tests.support.batch_server import BatchServer
from tests.support.fake_server import FakeServer
from tests.support.hostile_server import HostileServer, answer_normally

SERVERS = {
    "fake": lambda: FakeServer(),
    "batch": lambda: BatchServer(),
    "hostile": lambda: HostileServer(answer_normally),
}


def model_ids(base_url: str) -> list[str]:
    with urllib.request.urlopen(f"{base_url}/models", timeout=10) as reply:
        return [model["id"] for model in json.load(reply)["data"]]


@pytest.mark.parametrize("kind", SERVERS)
def test_a_server_answers_while_it_runs_and_takes_no_connection_once_stopped(kind: str) -> None:
    with SERVERS[kind]() as server:
        assert server.port != 0 and "fake-model" in model_ids(server.base_url)
    assert server._thread is not None and not server._thread.is_alive()
    assert server._loop is not None and server._loop.is_closed()
    with pytest.raises(urllib.error.URLError):
        model_ids(server.base_url)


def test_a_stop_ends_a_request_the_server_holds() -> None:
    outcome: list[object] = []

    def ask(url: str) -> None:
        request = urllib.request.Request(
            f"{url}/chat/completions",
            data=json.dumps({"model": "fake-model", "messages": []}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            outcome.append(urllib.request.urlopen(request, timeout=60).status)
        except Exception as error:  # the outcome is what the test looks at
            outcome.append(error)

    with FakeServer(hold=lambda _body: True) as server:
        client = threading.Thread(target=ask, args=(server.base_url,))
        client.start()
        server.wait_until(lambda: server.held == 1, limit=60)
    client.join(60)
    assert not client.is_alive() and len(outcome) == 1 and isinstance(outcome[0], Exception)


def test_an_error_is_worded_as_the_openai_api_words_it() -> None:
    response = error_response(429, "Slow down.", "rate_limit_exceeded", {"Retry-After": "2"})
    assert response.status == 429 and response.headers["Retry-After"] == "2"
    assert json.loads(response.text) == {
        "error": {
            "message": "Slow down.",
            "type": "invalid_request_error",
            "code": "rate_limit_exceeded",
        }
    }
