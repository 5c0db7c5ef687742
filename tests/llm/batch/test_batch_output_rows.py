"""The rows of a batch's output file as the backend reads them: every row within the cap is
read whole and every longer one is named as over it (a Hypothesis property of the row reader),
and a row no request of the batch asked, or a second row of a request, neither hides the rows
after it nor is kept (a whole batch run against the fake Batch API)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from evol.llm import BackendSettings, Completion, LLMRequest
from evol.llm.batch import (
    RESULTS_FILE,
    BatchBackend,
    BatchSettings,
    OversizeRow,
    bounded_lines,
    request_line,
)
from tests.support.batch_backend import MODEL, PARAMS, ask
from tests.support.batch_server import BatchServer

_ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


def _line(custom_id: str | None, size: int) -> bytes:
    """A row of `size` bytes (or its shortest), without its newline."""
    row: dict[str, Any] = {"response": {"body": ""}}
    if custom_id is not None:
        row = {"custom_id": custom_id} | row
    row["response"]["body"] = "x" * max(0, size - len(json.dumps(row)))
    return json.dumps(row).encode()


@given(
    cap=st.integers(60, 200),
    # each row's size from the cap: at it and a byte either side, or anywhere up to thrice it
    rows=st.lists(
        st.tuples(st.none() | _ids, st.sampled_from([-1, 0, 1]) | st.integers(-60, 400)),
        min_size=1,
        max_size=6,
    ),
    last_newline=st.booleans(),
)
def test_a_row_within_the_cap_is_read_whole_and_a_longer_one_is_named_by_its_id(
    cap: int, rows: list[tuple[str | None, int]], last_newline: bool
) -> None:
    lines = [_line(custom_id, cap + off) + b"\n" for custom_id, off in rows]
    if not last_newline:
        lines[-1] = lines[-1][:-1]
    read = list(bounded_lines(io.BytesIO(b"".join(lines)), cap))
    assert len(read) == len(lines)
    for line, (custom_id, _), got in zip(lines, rows, read, strict=True):
        if len(line.removesuffix(b"\n")) <= cap:  # the cap is on the row, not its newline
            assert got == line
        else:
            assert got == OversizeRow(custom_id, len(line))


class _ForeignRows(BatchServer):
    """A Batch API whose output files open with a row of a request no batch asked and a
    second copy of one of the batch's own rows, before the batch's rows."""

    def _finish(self, batch: Any) -> None:
        super()._finish(batch)
        file_id = batch.object.get("output_file_id")
        if file_id is None:
            return
        rows = self.files[file_id].splitlines(keepends=True)
        first = json.loads(rows[0])
        foreign = dict(first, custom_id="evol-asked-by-no-one")
        again = dict(first, id=first["id"] + "-again")
        extra = [json.dumps(foreign).encode() + b"\n", json.dumps(again).encode() + b"\n"]
        self.files[file_id] = b"".join([*extra, *rows])


async def _complete(backend: BatchBackend, text: str) -> Completion:
    return await backend.complete(LLMRequest(ask(text), MODEL, PARAMS))


def test_a_row_of_no_request_or_a_second_row_hides_no_row_after_it_and_is_not_kept(
    tmp_path: Path,
) -> None:
    texts = [f"question {n}" for n in range(6)]
    with _ForeignRows() as server:

        async def main() -> list[Completion | BaseException]:
            settings = {"quiet_period": 0.05, "poll_interval": 0.02, "retry_max_wait": 0.01}
            backend = BatchBackend(
                BackendSettings(base_urls=[server.base_url], api_key=SecretStr("sk-test")),
                BatchSettings(state_dir=tmp_path, **settings),
            )
            try:
                async with asyncio.timeout(600):  # a guard against a hang, never a pace
                    return await asyncio.gather(
                        *(_complete(backend, text) for text in texts), return_exceptions=True
                    )
            finally:
                await backend.aclose()

        replies = asyncio.run(main())
    assert all(isinstance(reply, Completion) for reply in replies), replies
    ids = [request_line([{"role": "user", "content": t}], MODEL, PARAMS)[0] for t in texts]
    assert len(server.batches) == 1, "every request was answered by its first batch"
    assert all(server.submitted[custom_id] == 1 for custom_id in ids), server.submitted
    kept = [json.loads(line)["custom_id"] for line in (tmp_path / RESULTS_FILE).open("rb")]
    assert sorted(kept) == sorted(ids), "results.jsonl holds each asked row once, no other"
