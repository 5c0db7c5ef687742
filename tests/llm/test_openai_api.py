"""Reading what an OpenAI-compatible server sends (evol.llm.openai_api): a reply by its schema,
an error body by its status and its words, a retry hint in its own unit; and the key a request
carries, as the endpoint expects it (Azure-style `api-key` or `Authorization: Bearer`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evol.llm.openai_api import auth_headers, body_message, json_or_text
from evol.secrets import Secrets
from tests.support.fake_server import FakeServer
from tests.support.real_model import SMALL_SEEDS
from tests.support.runs import write_seeds


@pytest.mark.parametrize("raw", [b"null", b"[1, 2]", b"42", b"true", b"  ", b""])
def test_an_error_body_that_holds_no_message_gives_the_fallback(raw: bytes) -> None:
    assert body_message(json_or_text(raw), "status 502", Secrets()) == "status 502"


def test_an_error_body_of_text_is_the_message_redacted() -> None:
    body = json_or_text(b"upstream sk-secret-key-123 timed out")
    assert body_message(body, "status 502", Secrets("sk-secret-key-123")) == (
        "upstream *** timed out"
    )


# -- a FastAPI 422's detail (found by mutation testing) ----------------------------------------


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


# -- the key as the endpoint expects it --------------------------------------------------------


def test_azure_style_endpoints_keep_their_query_and_take_the_key_as_api_key(
    evol, tmp_path: Path
) -> None:
    assert auth_headers("https://res.openai.azure.com/openai/deployments/gpt", "k") == {
        "api-key": "k"
    }
    assert auth_headers("https://api.openai.com/v1", "k") == {"Authorization": "Bearer k"}
    seeds = write_seeds(tmp_path / "seeds.jsonl", SMALL_SEEDS[:2])
    with FakeServer(models=("gpt-4o",)) as server:
        base = server.base_url.removesuffix("/v1")
        url = f"{base}/openai/deployments/gpt-4o?api-version=2024-10-21"
        result = evol(
            "run", seeds, "--out", tmp_path / "run", "--base-url", url, "--model", "gpt-4o",
            "--generations", "1", "--quiet", "--json",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "complete"
    assert len(server.requests) == 2 * 4
