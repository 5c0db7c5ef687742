"""A promise of the error messages that the fourth round of mutation survivors (checks 4,741 on,
#22) found unpinned: an error body that is JSON but neither an object nor text (a list, a number,
null) is no message, and the error says what it can without it. Run on 4f7dc9e's tree, where the
mutants were found, as on `main`.
"""

from __future__ import annotations

import pytest

from evol.llm.openai_api import body_message, json_or_text
from evol.secrets import Secrets


@pytest.mark.parametrize("raw", [b"null", b"[1, 2]", b"42", b"true", b"  ", b""])
def test_an_error_body_that_holds_no_message_gives_the_fallback(raw: bytes) -> None:
    assert body_message(json_or_text(raw), "status 502", Secrets()) == "status 502"


def test_an_error_body_of_text_is_the_message_redacted() -> None:
    body = json_or_text(b"upstream sk-secret-key-123 timed out")
    assert body_message(body, "status 502", Secrets("sk-secret-key-123")) == (
        "upstream *** timed out"
    )
