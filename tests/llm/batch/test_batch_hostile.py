"""Findings of the attack on the house's new parts (#23, helper attack23), each a regression
test: a live score after batches that hold paid replies, a stored answer without its status,
a batch list whose cursor cycles, NaN in run.json."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evol.errors import RunDirError, TransientBackendError
from evol.llm import BackendSettings
from evol.llm.batch.client import BatchClient
from evol.llm.batch.settings import BatchSettings
from evol.llm.batch.state import Results
from evol.rundir.manifest import load_manifest
from tests.support.batch_server import BatchServer, content_of
from tests.support.fake_server import FakeServer
from tests.support.scoring import ScoringResponder, make_run, score_args


@pytest.fixture
def made_run(evol, tmp_path: Path) -> Path:
    return make_run(evol, tmp_path)


def test_live_scoring_is_refused_while_ended_score_batches_hold_paid_replies(
    evol, made_run
) -> None:
    refuse_one = lambda line, _times: "error:400" if "[prose]" in content_of(line) else "ok"  # noqa: E731
    with BatchServer(responder=ScoringResponder(), row_fate=refuse_one) as server:
        batched = evol(*score_args(made_run, server.base_url, "--batch"))
        assert batched.exit_code == 1, batched.stderr  # a row refused: the scoring failed
    assert (made_run / "batch-score").is_dir()  # kept: its batches hold what was paid
    with FakeServer(responder=ScoringResponder()) as server:
        live = evol("score", made_run, "--base-url", server.base_url, "--quiet", "--answers")
        assert live.exit_code == 2 and "hold replies" in live.stderr
        assert server.requests == []


def test_a_complete_batched_scoring_forgets_its_batches_and_live_scoring_goes_on(
    evol, made_run
) -> None:
    with BatchServer(responder=ScoringResponder()) as server:
        assert evol(*score_args(made_run, server.base_url, "--batch")).exit_code == 0
    assert not (made_run / "batch-score").exists()
    with FakeServer(responder=ScoringResponder()) as server:
        live = evol("score", made_run, "--base-url", server.base_url, "--quiet", "--answers")
        assert live.exit_code == 0, live.stderr
        assert server.requests == []  # everything was scored by the batches


@pytest.mark.parametrize("row", [b'{"custom_id":"a"}\n', b'{"custom_id":"a","status_code":200}\n'])
def test_a_stored_answer_without_its_status_or_body_is_a_one_line_error(
    tmp_path: Path, row: bytes
) -> None:
    path = tmp_path / "results.jsonl"
    path.write_bytes(row)
    with pytest.raises(RunDirError, match=r"results\.jsonl:1: not a stored answer"):
        Results(path)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_run_json_holding_nan_or_infinity_is_damaged(tmp_path: Path, constant: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(
        f'{{"format_version": 2, "timings": {{"elapsed_s": {constant}}}}}'
    )
    with pytest.raises(RunDirError, match="is not a JSON value"):
        load_manifest(run)


class _SamePage(BaseHTTPRequestHandler):
    """Answers every list request with one page that says there is more: its cursor cycles."""

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:
        page = {"data": [{"id": "batch_other", "status": "in_progress"}], "has_more": True}
        body = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_batch_list_whose_cursor_cycles_is_no_proof_that_the_batch_is_absent(
    tmp_path: Path,
) -> None:
    """Reading it as absent would abandon the intent and submit its requests again."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SamePage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    async def find() -> object:
        client = BatchClient(
            BackendSettings(base_urls=[f"http://127.0.0.1:{httpd.server_port}/v1"], timeout=5),
            BatchSettings(state_dir=tmp_path),
        )
        try:
            return await client.find("token")
        finally:
            await client.close()

    try:
        with pytest.raises(TransientBackendError, match="without end"):
            asyncio.run(find())
    finally:
        httpd.shutdown()
        httpd.server_close()
