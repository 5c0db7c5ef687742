"""The shapes seed rows come in, and how each gives an instruction, its input and its output.

Recognised without flags, by the keys a row has:

    self-instruct  {instruction, instances: [{input, output}, ...]}   input/output of instance 0
    dolly          {instruction, context, response}                    context is the input
    sharegpt       {conversations: [{from: human|gpt|system, value}]}  first user turn, then
    openai-chat    {messages: [{role: user|assistant|system, content}]}   the first reply to it
    alpaca         {instruction, input?, output?}
    prompt         {prompt | question, input?, output?}
    text           a line of a .txt file

Dotted paths (`instances.0.input`, `conversations.0.value`) name the fields of any other shape,
and override the detection. What a shape does not use stays in the seed's metadata; what it
consumed does not (Self-Instruct's first instance is the seed's input and output; the other
instances, if any, stay in `metadata["instances"]`). A system turn is kept as
`metadata["system"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from evol.seeds.containers import RowError, json_type

INSTRUCTION_FIELDS = ("instruction", "prompt", "question")
# Every top-level field a shape reads: a CSV/TSV column naming one is matched in any case.
FIELD_NAMES = (
    "id",
    *INSTRUCTION_FIELDS,
    "input",
    "output",
    "context",
    "response",
    "instances",
    "conversations",
    "messages",
)
_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "chatgpt", "bard", "model", "bot"}


@dataclass(frozen=True)
class FieldPaths:
    """Where to read a row's parts, as dotted paths; None: found by the row's shape."""

    instruction: str | None = None
    input: str | None = None
    output: str | None = None

    @property
    def given(self) -> bool:
        return self.instruction is not None


@dataclass
class Extracted:
    """What a row holds, in evol's terms."""

    shape: str
    instruction: Any
    where: str  # the field or path the instruction came from, for error messages
    input: Any = None
    output: Any = None
    metadata: dict[str, Any] = field(default_factory=dict)


def extract(row: Any, paths: FieldPaths) -> Extracted:
    """The instruction, input, output and metadata of one row; `RowError` when there is none."""
    if isinstance(row, str):
        return Extracted("text", row, "line")
    if not isinstance(row, dict):
        raise RowError(f"expected an object with an instruction, got {json_type(row)}")
    if paths.given:
        return _by_paths(row, paths)
    for applies, take in _SHAPES:
        if applies(row):
            return _with_paths(take(row), row, paths)
    keys = ", ".join(repr(key) for key in list(row)[:6])
    raise RowError(
        f"no 'instruction' / 'prompt' / 'question' field (keys: {keys}); name the field with "
        "--instruction-field (a dotted path such as conversations.0.value works)"
    )


def resolve(row: Any, path: str) -> Any:
    """The value at a dotted path (`a.0.b`: key a, item 0, key b); KeyError when absent."""
    value = row
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif (
            isinstance(value, list)
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            raise KeyError(path)
    return value


def _by_paths(row: dict[str, Any], paths: FieldPaths) -> Extracted:
    assert paths.instruction is not None
    try:
        instruction = resolve(row, paths.instruction)
    except KeyError:
        raise RowError(f"no field {paths.instruction!r}") from None
    input_path, output_path = paths.input or "input", paths.output or "output"
    used = {"id"} | {path.split(".")[0] for path in (paths.instruction, input_path, output_path)}
    return Extracted(
        "fields",
        instruction,
        paths.instruction,
        _optional(row, input_path),
        _optional(row, output_path),
        _rest(row, used),
    )


def _with_paths(found: Extracted, row: dict[str, Any], paths: FieldPaths) -> Extracted:
    """A detected shape with the input and output that --input-field and --output-field name
    in place of its own (the README: they override the detection)."""
    for part, path in (("input", paths.input), ("output", paths.output)):
        if path is not None:
            setattr(found, part, _optional(row, path))
            found.metadata.pop(path.split(".")[0], None)
    return found


def _optional(row: Any, path: str) -> Any:
    try:
        return resolve(row, path)
    except KeyError:
        return None


def _rest(row: dict[str, Any], used: set[str]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in used}


def _self_instruct(row: dict[str, Any]) -> Extracted:
    instances = row["instances"]
    if not isinstance(instances, list):
        raise RowError(f"'instances' must be a list, got {json_type(instances)}")
    first = instances[0] if instances else {}
    if not isinstance(first, dict):
        raise RowError(f"'instances.0' must be an object, got {json_type(first)}")
    metadata = _rest(row, {"id", "instruction", "instances"})
    if len(instances) > 1:
        metadata["instances"] = instances[1:]
    return Extracted(
        "self-instruct",
        row["instruction"],
        "instruction",
        first.get("input"),
        first.get("output"),
        metadata,
    )


def _dolly(row: dict[str, Any]) -> Extracted:
    metadata = _rest(row, {"id", "instruction", "context", "response"})
    return Extracted(
        "dolly",
        row["instruction"],
        "instruction",
        row.get("context"),
        row.get("response"),
        metadata,
    )


def _alpaca(row: dict[str, Any]) -> Extracted:
    metadata = _rest(row, {"id", "instruction", "input", "output"})
    return Extracted(
        "alpaca", row["instruction"], "instruction", row.get("input"), row.get("output"), metadata
    )


def _prompt(row: dict[str, Any]) -> Extracted:
    key = "prompt" if "prompt" in row else "question"
    metadata = _rest(row, {"id", key, "input", "output"})
    return Extracted("prompt", row[key], key, row.get("input"), row.get("output"), metadata)


def _conversation(shape: str, key: str, speaker: str, text: str, row: dict[str, Any]) -> Extracted:
    """A conversation list: the first user turn is the instruction, the first assistant turn
    after it the output; a system turn goes to metadata."""
    turns = row[key]
    if not isinstance(turns, list):
        raise RowError(f"{key!r} must be a list of turns, got {json_type(turns)}")
    instruction = output = system = where = None
    for number, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RowError(f"'{key}.{number}' must be an object, got {json_type(turn)}")
        who = str(turn.get(speaker, "")).lower()
        said = _turn_text(turn.get(text), f"{key}.{number}.{text}")
        if who == "system" and system is None:
            system = said
        elif who in _USER_ROLES and instruction is None:
            instruction, where = said, f"{key}.{number}.{text}"
        elif who in _ASSISTANT_ROLES and instruction is not None:
            output = said
            break
    if instruction is None:
        raise RowError(f"{key!r} has no user turn")
    metadata = _rest(row, {"id", key})
    if system is not None:
        metadata["system"] = system
    return Extracted(shape, instruction, str(where), None, output, metadata)


def _turn_text(content: Any, where: str) -> Any:
    """A turn's text; OpenAI's content may be a list of parts, whose text parts are joined."""
    if isinstance(content, list):
        texts = [
            part.get("text")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        if not all(isinstance(piece, str) for piece in texts):
            raise RowError(f"'{where}' has a text part that is not a string")
        return "\n".join(texts)
    return content


# In order: the first whose keys a row has gives its shape.
_SHAPES: list[tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], Extracted]]] = [
    (
        lambda row: "conversations" in row,
        partial(_conversation, "sharegpt", "conversations", "from", "value"),
    ),
    (
        lambda row: "messages" in row,
        partial(_conversation, "openai-chat", "messages", "role", "content"),
    ),
    (lambda row: "instruction" in row and "instances" in row, _self_instruct),
    (lambda row: "instruction" in row and ("context" in row or "response" in row), _dolly),
    (lambda row: "instruction" in row, _alpaca),
    (lambda row: "prompt" in row or "question" in row, _prompt),
]
