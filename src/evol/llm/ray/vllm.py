"""The vLLM path of `--engine ray` (`--ray-model`): a request as the row Ray's vLLM stage
takes (`messages`, `sampling_params`), the processor's config, and its output row as a
`Completion`. Untested on a GPU: evol's tests check these mappings on rows of that shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from evol.errors import TransientBackendError
from evol.llm.openai_api import ReplyReader
from evol.llm.protocol import Completion, GenerationParams, LLMRequest


def sampling_params(params: GenerationParams) -> dict[str, Any]:
    """The options set, as `vllm.SamplingParams` names them. Only those set: the provider's
    defaults stay its own, as on the HTTP path. A JSON schema becomes structured output;
    `top_logprobs` becomes vLLM's `logprobs` (a count); `n` is not sent (one choice a row)."""
    sent: dict[str, Any] = {}
    for name in ("temperature", "top_p", "max_tokens"):
        if (value := getattr(params, name)) is not None:
            sent[name] = value
    if params.logprobs:
        sent["logprobs"] = params.top_logprobs or 1
    form = params.response_format or {}
    schema = (form.get("json_schema") or {}).get("schema") if isinstance(form, dict) else None
    if schema is not None:
        sent["structured_outputs"] = {"json": schema}
    return sent


def vllm_row(request: LLMRequest) -> tuple[tuple[str, ...], dict[str, str]]:
    """The request's row (its messages and sampling params as JSON text) and its group: the
    sampling params' names. One wave holds one group: rows pass through Arrow, which would
    give a row another's keys as nulls (a `structured_outputs` of null fails vLLM)."""
    sampling = sampling_params(request.params)
    row = {
        "messages": orjson.dumps(request.messages).decode(),
        "sampling": orjson.dumps(sampling).decode(),
    }
    return tuple(sorted(sampling)), row


def vllm_outcome(
    row: Mapping[str, Any], max_tokens: int | None, reader: ReplyReader
) -> Completion | Exception:
    """A row of Ray's vLLM stage (`generated_text`, `num_input_tokens`,
    `num_generated_tokens`, `logprobs`; `__inference_error__` with should_continue_on_error)
    as a Completion. An inference error fails that request alone, asked again like a dropped
    reply. vLLM's row has no finish reason: a reply as long as `max_tokens` was cut there."""
    if error := row.get("__inference_error__"):
        return TransientBackendError(f"{reader.where}: {reader.secrets.cut(str(error))}")
    text = row.get("generated_text")
    if not isinstance(text, str):
        return TransientBackendError(f"{reader.where} sent a row with no generated_text")
    generated = _count(row.get("num_generated_tokens"))
    cut = max_tokens is not None and generated >= max_tokens
    return Completion(
        text=text,
        prompt_tokens=_count(row.get("num_input_tokens")),
        completion_tokens=generated,
        finish_reason="length" if cut else "stop",
        top_logprobs=_top_logprobs(row.get("logprobs")),
    )


def _count(value: object) -> int:
    """A token count as an int (Arrow may hand it over as a numpy integer, or null)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return 0
    return max(0, value.__index__())


def _top_logprobs(value: object) -> list[dict[str, float]] | None:
    """vLLM's logprobs (per token: token id -> {logprob, rank, decoded_token}) as OpenAI's
    top_logprobs read them: per token, each decoded token's log-probability."""
    if not isinstance(value, list):
        return None
    tokens: list[dict[str, float]] = []
    for position in value:
        entries = position.values() if isinstance(position, Mapping) else []
        tokens.append(
            {
                entry["decoded_token"]: float(entry["logprob"])
                for entry in entries
                if isinstance(entry, Mapping)
                and isinstance(entry.get("decoded_token"), str)
                and isinstance(entry.get("logprob"), int | float)
            }
        )
    return tokens


def vllm_config(model: str, *, tensor_parallel: int, replicas: int, batch_size: int) -> Any:
    """`vLLMEngineProcessorConfig` from evol's options: `replicas` engines of
    `tensor_parallel` GPUs each; a failed row fails alone (`should_continue_on_error`)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    return vLLMEngineProcessorConfig(
        model_source=model,
        engine_kwargs={"tensor_parallel_size": tensor_parallel},
        concurrency=replicas,
        batch_size=batch_size,
        should_continue_on_error=True,
    )
