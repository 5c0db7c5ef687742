"""A wave's HTTP output row, the envelope of `evol.llm.ray.session`, read like a live reply: a
`Completion`, or the error the `openai` backend would have raised for that reply."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evol.errors import BackendError, TransientBackendError
from evol.llm.openai_api import (
    ReplyReader,
    body_message,
    json_or_text,
    parse_reply,
    status_error,
)
from evol.llm.protocol import Completion


def envelope_outcome(
    row: Mapping[str, Any], model: str, reader: ReplyReader
) -> Completion | Exception:
    """An HTTP envelope read as the `openai` backend reads a live reply with that status."""
    status, body, error = row.get("status") or 0, row.get("body"), row.get("error")
    if error is not None or body is None:
        # No reply to read (a reset, a timeout, a body over the cap): the request's failure.
        why = reader.secrets.cut(str(error or "no reply"))
        return TransientBackendError(f"{reader.where}: {why}")
    raw = body.encode()
    if 200 <= status < 300:
        try:
            return parse_reply(raw, reader.where, reader.secrets)
        except (TransientBackendError, BackendError) as failed:
            return failed
    headers = {
        name: value
        for name, value in (
            ("retry-after", row.get("retry_after")),
            ("retry-after-ms", row.get("retry_after_ms")),
            ("location", row.get("location")),
        )
        if value is not None
    }
    message = body_message(json_or_text(raw), "", reader.secrets)
    return status_error(
        reader.where, reader.key_source, model, status, message, headers, reader.secrets
    )
