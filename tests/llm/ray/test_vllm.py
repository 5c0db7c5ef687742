"""The vLLM path's rows (evol.llm.ray.vllm): the sampling params sent, a row built and read as
a completion, the processor's config; checked without a cluster."""

from __future__ import annotations

import json

import pytest

from evol.errors import (
    TransientBackendError,
)
from evol.llm import GenerationParams, LLMRequest
from evol.llm.protocol import Completion
from evol.llm.ray import session
from evol.llm.ray.vllm import sampling_params, vllm_outcome, vllm_row
from tests.support.ray_cluster import (
    READER,
    needs_ray,
)

SCHEMA = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": {"type": "object"}}}


@pytest.mark.parametrize(
    ("params", "sent"),
    [
        (GenerationParams(), {}),
        (GenerationParams(temperature=0.0, max_tokens=100), {"temperature": 0.0, "max_tokens": 100}),
        (GenerationParams(top_p=0.9, logprobs=True, top_logprobs=5), {"top_p": 0.9, "logprobs": 5}),
        (GenerationParams(logprobs=True), {"logprobs": 1}),
        (GenerationParams(response_format=SCHEMA), {"structured_outputs": {"json": {"type": "object"}}}),
        (GenerationParams(response_format={"type": "json_object"}), {}),
        (GenerationParams(n=3), {}),
    ],
)  # fmt: skip
def test_sampling_params_send_only_what_is_set(params: GenerationParams, sent: dict) -> None:
    assert sampling_params(params) == sent


def test_a_vllm_row_carries_json_text_and_is_grouped_by_its_options() -> None:
    request = LLMRequest([{"role": "user", "content": "hi"}], "m", GenerationParams(max_tokens=9))
    group, row = vllm_row(request)
    assert group == ("max_tokens",)
    assert json.loads(row["messages"]) == [{"role": "user", "content": "hi"}]
    assert json.loads(row["sampling"]) == {"max_tokens": 9}
    judged = LLMRequest([], "m", GenerationParams(temperature=0.0, response_format=SCHEMA))
    assert vllm_row(judged)[0] == ("structured_outputs", "temperature")
    worker_row = session.to_vllm({"key": "1", **row})
    assert worker_row == {"messages": [{"role": "user", "content": "hi"}], "sampling_params": {"max_tokens": 9}}  # fmt: skip


@pytest.mark.parametrize(
    ("row", "max_tokens", "expected"),
    [
        (
            {"generated_text": "ok", "num_input_tokens": 5, "num_generated_tokens": 2, "__inference_error__": ""},
            100,
            Completion(text="ok", prompt_tokens=5, completion_tokens=2, finish_reason="stop"),
        ),
        (  # as long as max_tokens: cut there, as OpenAI's "length"
            {"generated_text": "cut", "num_input_tokens": 5, "num_generated_tokens": 100},
            100,
            Completion(text="cut", prompt_tokens=5, completion_tokens=100, finish_reason="length"),
        ),
        (  # Arrow nulls and numpy-like integers
            {"generated_text": "", "num_input_tokens": None, "num_generated_tokens": True},
            None,
            Completion(text="", finish_reason="stop"),
        ),
        ({"__inference_error__": "prompt too long for sk-secret", "generated_text": None}, 10, TransientBackendError),
        ({"generated_text": None, "num_input_tokens": 3}, 10, TransientBackendError),
    ],
)  # fmt: skip
def test_a_vllm_row_is_read_as_a_completion(row: dict, max_tokens: int | None, expected) -> None:
    outcome = vllm_outcome(row, max_tokens, READER)
    if isinstance(expected, Completion):
        assert outcome == expected
    else:
        assert type(outcome) is expected and "sk-secret" not in str(outcome)


@needs_ray
def test_the_vllm_processor_config_is_built_from_the_options() -> None:
    from evol.llm.ray.vllm import vllm_config

    config = vllm_config("Qwen/Qwen2.5-0.5B-Instruct", tensor_parallel=2, replicas=3, batch_size=16)
    assert config.model_source == "Qwen/Qwen2.5-0.5B-Instruct"
    assert config.engine_kwargs["tensor_parallel_size"] == 2
    assert (config.concurrency, config.batch_size) == (3, 16)
    assert config.should_continue_on_error is True  # a failed row fails alone


def test_vllm_logprobs_become_openai_style_top_logprobs() -> None:
    row = {
        "generated_text": "7",
        "num_generated_tokens": 1,
        "logprobs": [
            {
                "22": {"logprob": -0.1, "rank": 1, "decoded_token": "7"},
                "23": {"logprob": -2.5, "rank": 2, "decoded_token": "8"},
            }
        ],
    }
    outcome = vllm_outcome(row, None, READER)
    assert isinstance(outcome, Completion)
    assert outcome.top_logprobs == [{"7": -0.1, "8": -2.5}]
