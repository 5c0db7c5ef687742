"""The registry's refusals for `--engine ray` (evol.llm.registry): an option the engine would not
use is refused, not ignored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evol.errors import (
    UsageError,
)
from evol.llm import BackendSettings, open_backend
from evol.llm.ray import RaySettings


def test_engine_ray_with_batch_or_another_backend_is_a_usage_error(tmp_path: Path) -> None:
    from evol.llm.batch import BatchSettings

    settings = BackendSettings(base_urls=["http://a/v1"])
    ray = RaySettings()
    with pytest.raises(UsageError, match="pick one"):
        open_backend(None, settings, batch=BatchSettings(state_dir=tmp_path), ray=ray)
    with pytest.raises(UsageError, match="not with --backend local"):
        open_backend("local", settings, ray=ray)
    with pytest.raises(UsageError, match="one --base-url"):
        open_backend(None, BackendSettings(base_urls=["http://a/v1", "http://b/v1"]), ray=ray)


@pytest.mark.parametrize(
    ("engine", "options", "refusal"),
    [
        ("live", {"ray_model": "m"}, "add --engine ray"),
        ("ray", {"batch": True}, "pick one"),
        ("ray", {"model_path": "m.gguf"}, "--model-path runs a GGUF"),
        ("ray", {"ray_model": "m", "requested": "openai"}, "drop --backend"),
        ("ray", {"ray_model": "m", "base_urls": ["http://a/v1"]}, "drop --base-url"),
        ("ray", {"requested": "local"}, "not with --backend local"),
        ("ray", {"base_urls": ["http://a/v1", "http://b/v1"]}, "one --base-url"),
        ("live", {"batch": True, "model_path": "m.gguf", "base_urls": ["http://a/v1", "http://b/v1"]}, None),
        ("ray", {"requested": "openai", "base_urls": ["http://a/v1"]}, None),
        ("ray", {"ray_model": "m"}, None),
    ],
)  # fmt: skip
def test_each_option_an_engine_would_not_use_is_refused(
    engine: str, options: dict[str, Any], refusal: str | None
) -> None:
    from evol.llm.registry import check_engine_options

    given = {"requested": None, "ray_model": None, "base_urls": [], "batch": False} | options
    requested = given.pop("requested")
    if refusal is None:
        check_engine_options(requested, engine=engine, **given)
    else:
        with pytest.raises(UsageError, match=refusal):
            check_engine_options(requested, engine=engine, **given)
