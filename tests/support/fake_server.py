"""A real OpenAI-compatible HTTP server for the tests: scripted replies and injected faults.

It serves `/v1/models` and `/v1/chat/completions` on 127.0.0.1 from its own thread and event
loop, records every request, and answers deterministically from the request alone:

- an evolve request (holds `<instruction>`) gets the instruction back with a clause appended;
- a judge request (holds `<first>`) gets "Not Equal", or, when it asks for a JSON schema, the
  verdict object (different, an instruction);
- an answer check (holds `<task>`) gets "does_the_task", as JSON when it asks for the schema;
- anything else is an answer request and gets a short, plain answer.

Markers in a seed's text steer it, and survive evolution because the evolver keeps the text:
`[leak]` (the rewrite leaks prompt words), `[same]` (unchanged rewrite), `[empty]`, `[equal]`
(the judge says Equal), `[sorry]` and `[stop]` (bad answers), `[too-long]` (400 context
length on the evolve call), `[leak-once]` (leaks only the first time its lineage is evolved),
`[wrapped]` (the rewrite comes with a preamble, a label and quotes around it), `[think]` (a
think block before the rewrite), `[cut]` (the rewrite stops at the token limit),
`[cut-answer]` (the answer does), `[empty-answer]` (the answer is empty), `[unclear]` (the
judge's first reply has no verdict; the follow-up gets "Not Equal"), `[unclear-twice]`
(neither has one), `[understood]`, `[sure]`,
`[please]` and `[echo]` (answers that show the rewrite failed, after Auto Evol-Instruct),
`[chatty]` (the judge says the rewrite talks to the user), `[asks]` (the answer check says
the answer asks for information). `refuse_formats=("json_schema", "json_object")` makes it
refuse a request whose `response_format` is of those types (with `refuse_status`, 400 by
default), as a server without structured output does.
A responder returns the reply's text, or (text, finish_reason). A request with `n` gets n
choices, the responder asked once for each in turn (`ignore_n=True`: one choice, as
llama-cpp-python's server answers).
`VerifiableResponder` adds IFEval constraints: its evolver writes the requirement of an
add_verifiable_constraint prompt into the rewrite in IFEval's own words, and its answers meet
every constraint an instruction states with a known probability (see its docstring).

Run it by hand with `python -m tests.support.fake_server --port 8000 --latency 0.1`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.background_server import AppServer, error_response


@dataclass
class Fault:
    """One injected failure: an HTTP status, a hang, a garbled body or a dropped connection."""

    kind: str  # "status", "hang", "malformed", "drop"
    status: int = 500
    retry_after: float | str | None = None  # seconds, or the header's text as it is
    message: str | None = None  # the error's message (default: "injected <status>")


FaultPlan = Callable[[dict[str, Any]], Fault | None]


def fault_rates(seed: int = 0, **rates: float) -> FaultPlan:
    """Random faults at fixed rates, e.g. fault_rates(rate_429=0.1, rate_500=0.05, hang=0.02)."""
    rng = random.Random(seed)
    lock = threading.Lock()
    table = [
        ("rate_429", Fault("status", 429, retry_after=0.01)),
        ("rate_500", Fault("status", 500)),
        ("hang", Fault("hang")),
        ("malformed", Fault("malformed")),
        ("drop", Fault("drop")),
    ]

    def plan(_body: dict[str, Any]) -> Fault | None:
        with lock:
            draw = rng.random()
        for name, fault in table:
            rate = rates.get(name, 0.0)
            if draw < rate:
                return fault
            draw -= rate
        return None

    return plan


def scripted(*faults: Fault | None) -> FaultPlan:
    """The given faults for the first requests, in order, then none."""
    pending = list(faults)
    lock = threading.Lock()

    def plan(_body: dict[str, Any]) -> Fault | None:
        with lock:
            return pending.pop(0) if pending else None

    return plan


_CLAUSE_TEXT = " Also consider case {tag}."
_CLAUSE = re.compile(r" Also consider case [0-9a-f]{6}\.")


class ContextOverflow(Exception):
    """Raised by a responder to answer 400 context_length_exceeded."""


def _between(text: str, start: str, end: str) -> str:
    head, _, rest = text.partition(start)
    return rest.partition(end)[0].strip("\n") if rest else ""


@dataclass
class Responder:
    """The default script: deterministic replies keyed on the request and the seed markers."""

    evolved_once: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, body: dict[str, Any]) -> str | tuple[str, str]:
        turns = [m["content"] for m in body["messages"] if m["role"] == "user"]
        content = turns[0]
        structured = "response_format" in body
        if "<first>" in content:
            second = _between(content, "<second>\n", "\n</second>")
            return self.judge(second, asked_again=len(turns) > 1, structured=structured)
        if "<task>" in content:
            return self.check_answer(_between(content, "<task>\n", "\n</task>"), structured)
        if "<instruction>" in content:
            return self.evolve(_between(content, "<instruction>\n", "\n</instruction>"), content)
        return self.answer(content)

    def evolve(self, instruction: str, prompt: str) -> str | tuple[str, str]:
        if "[too-long]" in instruction:
            raise ContextOverflow
        if "[empty]" in instruction:
            return "   "
        if "[cut]" in instruction:
            return f"{instruction} and then also consider the", "length"
        if "[same]" in instruction:
            return instruction
        if "[leak]" in instruction:
            return f"{instruction} in more detail, as the given prompt asks"
        if "[leak-once]" in instruction:
            seed_text = _CLAUSE.sub("", instruction)
            with self.lock:
                first_time = seed_text not in self.evolved_once
                self.evolved_once.add(seed_text)
            if first_time:
                return f"The given prompt, rewritten: {instruction}"
        tag = hashlib.sha256(prompt.encode()).hexdigest()[:6]
        rewrite = f"{instruction}{_CLAUSE_TEXT.format(tag=tag)}"
        if "[wrapped]" in instruction:
            return f'Sure! Here is the rewritten instruction:\n**New instruction:** "{rewrite}"'
        if "[think]" in instruction:
            return f"<think>The user wants it harder. Let me add a case.</think>\n\n{rewrite}"
        return rewrite

    def judge(self, second: str, *, asked_again: bool = False, structured: bool = False) -> str:
        if "[unclear-twice]" in second or ("[unclear]" in second and not asked_again):
            return "Hmm, that is hard to say."
        if not structured:
            return "Equal" if "[equal]" in second else "Not Equal"
        verdict = "equal" if "[equal]" in second else "different"
        second_is = "talks_to_user" if "[chatty]" in second else "instruction"
        return json.dumps({"verdict": verdict, "second_is": second_is, "reason": "as marked"})

    def check_answer(self, task: str, structured: bool) -> str:
        choice = "asks_for_information" if "[asks]" in task else "does_the_task"
        if not structured:
            return f"My choice: {choice}."
        return json.dumps({"answer": choice, "reason": "as marked"})

    def answer(self, instruction: str) -> str | tuple[str, str]:
        if "[sorry]" in instruction:
            return "Sorry, I cannot help with that."
        if "[stop]" in instruction:
            return "It is what it is, and that is all."
        if "[cut-answer]" in instruction:
            return "Here is the first part of a long answer, which then", "length"
        if "[empty-answer]" in instruction:
            return ""
        if "[understood]" in instruction:
            return "Understood. What would you like me to do with it?"
        if "[sure]" in instruction:
            return "Sure! Which of the two cases do you mean?"
        if "[please]" in instruction:
            return "To do this, please provide the table of values you have in mind."
        if "[echo]" in instruction:
            return instruction
        tag = hashlib.sha256(instruction.encode()).hexdigest()[:8]
        return f"Here is a worked answer ({tag}): first define the terms, then give an example, then check it."


# IFEval's own descriptions (`evol.method.drawing.describe`), as the fake evolver writes them.
_NO_COMMA = "refrain from the use of any commas"
_LOWERCASE = "in all lowercase letters"
_END_PHRASE = re.compile(r"Finish your response with this exact phrase (.+?)\. No other words")
_POSTSCRIPT = re.compile(r"add a postscript starting with (P\.P\.S|P\.S\.)")
_KEYWORDS = re.compile(r"Include keywords \[([^\]]*)\] in the response")
_WORDS = re.compile(r"Answer with (less than|at least) (\d+) words")
_PLAIN = "the answer follows the request in plain words and keeps to every rule that was given."


def meets(instruction: str, attempt: int, pass_rate: float) -> bool:
    """Whether the fake answerer's answer number `attempt` (1, 2...) to `instruction` meets its
    constraints: a hash below `pass_rate`, the same in every process, so a test can tell."""
    digest = hashlib.sha256(f"{instruction}\0{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < pass_rate


def constrained_answer(instruction: str, *, meet: bool, length: int = 0) -> str:
    """An answer that meets every constraint `instruction` states in IFEval's words (of the
    kinds above), or one that fails each of them; about `length` words long, if that is more
    than the constraints need."""
    words = _WORDS.search(instruction)
    if not meet:
        short = "Xyz, Qvw."
        least = int(words[2]) + 1 if words and words[1] == "less than" else 0
        return " ".join([short] * max(1, least // 2 + 1 if least else 0, length // 2))
    parts = [_PLAIN] * max(1, length // 16)
    if words and words[1] == "at least":
        parts = [_PLAIN] * max(len(parts), int(words[2]) // 16 + 1)
    if keywords := _KEYWORDS.search(instruction):
        found = re.findall(r"'([^']*)'", keywords[1])
        parts.append(f"it names {' and '.join(found)} as asked.")
    if postscript := _POSTSCRIPT.search(instruction):
        parts.append(f"\n\n{postscript[1]} this note comes last.")
    if end := _END_PHRASE.search(instruction):
        parts.append(f" {end[1]}")
    answer = " ".join(parts)
    if _NO_COMMA in instruction:
        answer = answer.replace(",", "")
    return answer.lower() if _LOWERCASE in instruction else answer


@dataclass
class VerifiableResponder(Responder):
    """The default script, with verifiable constraints.

    The evolver appends the requirement of an add_verifiable_constraint prompt to the
    instruction as it is given (IFEval's description), unless the instruction holds
    `[drop-requirement]` (the rewrite loses it) or `[reverse]` (it says "less than" for "at
    least" and back). The judge, asked about requirements, says they are stated, unless the
    rewrite holds `[unstated]`. Answer number k to an instruction meets all of its constraints
    when `meets(instruction, k, pass_rate)` and k > `fail_first`, and fails each of them
    otherwise. `answers` counts the answers given per instruction (a resumed run's server can
    start from another's).
    """

    pass_rate: float = 1.0
    fail_first: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    length: int = 0  # words of every answer, at least (0: as short as the script's own)

    def evolve(self, instruction: str, prompt: str) -> str | tuple[str, str]:
        if "<requirement>" not in prompt:
            return super().evolve(instruction, prompt)
        requirement = _between(prompt, "<requirement>\n", "\n</requirement>")
        if "[drop-requirement]" in instruction:
            requirement = ""
        if "[reverse]" in instruction:
            swapped = {"less than": "at least", "at least": "less than"}
            requirement = re.sub("less than|at least", lambda m: swapped[m[0]], requirement)
        tag = hashlib.sha256(prompt.encode()).hexdigest()[:6]
        return f"{instruction} {requirement} (v{tag})".replace("  ", " ")

    def judge(self, second: str, *, asked_again: bool = False, structured: bool = False) -> str:
        reply = super().judge(second, asked_again=asked_again, structured=structured)
        if not structured or not reply.startswith("{"):
            return reply
        verdict = json.loads(reply)
        verdict["states_requirements"] = "no" if "[unstated]" in second else "yes"
        return json.dumps(verdict)

    def answer(self, instruction: str) -> str | tuple[str, str]:
        with self.lock:
            self.answers[instruction] += 1
            attempt = self.answers[instruction]
        if "Also consider" in instruction or "(v" not in instruction:
            plain = super().answer(instruction)
            if isinstance(plain, tuple) or not self.length:
                return plain
            return " ".join([plain, *[_PLAIN] * (self.length // 16)])
        meet = attempt > self.fail_first and meets(instruction, attempt, self.pass_rate)
        return constrained_answer(instruction, meet=meet, length=self.length)


# Phrases of the method text that steer `MethodResponder`'s evolver (evol optimize's tests).
GOOD_PHRASE = "Make the rewrite clearly differ from what it was given."
BAD_PHRASE = "Stay as close as you can to what you were given."
_TEMPLATE_BLOCK = re.compile(r'<template name="([a-z_]+)">\n(.*?)\n</template>', re.DOTALL)


def unit_hash(text: str) -> float:
    """A number in [0, 1) fixed by `text`, the same in every process."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


@dataclass
class MethodResponder(Responder):
    """A fake evolver whose failure rate depends on the method's wording, and a fake optimizer.

    The evolver hands back the instruction it was given unchanged (which the run eliminates)
    when `unit_hash(instruction)` falls below the method's rate: `bad_rate` when the evolve
    prompt holds BAD_PHRASE, else `good_rate` when it holds GOOD_PHRASE, else `base_rate`. The
    same seed draws the same hash under every method, so a lower rate fails a subset of the
    seeds a higher one fails.

    The optimizer answers an analysis request (it holds `<trajectories>`) with a fixed text,
    and proposal number k (`This is proposal k of m`) as `proposals[k - 1]` says: "good" (each
    template of the method with GOOD_PHRASE added), "bad" (BAD_PHRASE added), "drop" (each
    template without $instruction), "same" (the method unchanged), "none" (no template).
    """

    base_rate: float = 0.6
    good_rate: float = 0.1
    bad_rate: float = 0.9
    proposals: tuple[str, ...] = ("good", "bad", "drop")

    def __call__(self, body: dict[str, Any]) -> str | tuple[str, str]:
        content = first_user_turn(body)
        if "<trajectories>" in content:
            return "The rewrites come back unchanged: the method never asks for a visible change."
        if "<analysis>" in content:
            number = int(re.search(r"This is proposal (\d+) of", content)[1])  # type: ignore[index]
            kind = self.proposals[(number - 1) % len(self.proposals)]
            return self.propose(kind, _between(content, "<method>\n", "\n</method>"))
        return super().__call__(body)

    def propose(self, kind: str, method: str) -> str:
        blocks = []
        for name, text in _TEMPLATE_BLOCK.findall(method):
            if kind == "good":
                text = f"{text}\n{GOOD_PHRASE}"
            elif kind == "bad":
                text = f"{text}\n{BAD_PHRASE}"
            elif kind == "drop":
                text = text.replace("$instruction", "the instruction")
            elif kind == "none":
                continue
            blocks.append(f'<template name="{name}">\n{text}\n</template>')
        return "Here is my proposal.\n\n" + "\n\n".join(blocks)

    def evolve(self, instruction: str, prompt: str) -> str | tuple[str, str]:
        rate = (
            self.bad_rate
            if BAD_PHRASE in prompt
            else self.good_rate
            if GOOD_PHRASE in prompt
            else self.base_rate
        )
        if unit_hash(instruction) < rate:
            return instruction
        return super().evolve(instruction, prompt)


def replies_to(
    responder: Callable[[dict[str, Any]], Any], body: dict[str, Any], *, ignore_n: bool = False
) -> list[tuple[str, str]]:
    """The (text, finish_reason) of each choice to `body`: `n` of them (one if it asks for
    none, or `ignore_n`), the responder asked once for each, in order."""
    count = 1 if ignore_n else body.get("n") or 1
    replies = [responder(body) for _ in range(count)]
    return [reply if isinstance(reply, tuple) else (reply, "stop") for reply in replies]


def kind_of(body: dict[str, Any]) -> str:
    """What a recorded request asked for: evolve, judge or answer (or, of evol optimize's
    optimizer, analysis or proposal)."""
    content = first_user_turn(body)
    if "<trajectories>" in content:
        return "analysis"
    if "<analysis>" in content:
        return "proposal"
    if "<task>" in content:
        return "answer_check"
    return "judge" if "<first>" in content else "evolve" if "<instruction>" in content else "answer"


def first_user_turn(body: dict[str, Any]) -> str:
    """The request's first user message (a system turn or a judge's follow-up aside)."""
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


class FakeServer(AppServer):
    """An OpenAI-compatible server on 127.0.0.1 in a background thread."""

    kind = "fake"
    backlog = 4096

    def __init__(
        self,
        *,
        models: tuple[str, ...] = ("fake-model",),
        latency: float = 0.0,
        responder: Callable[[dict[str, Any]], str] | None = None,
        faults: FaultPlan | None = None,
        api_key: str | None = None,
        hang_seconds: float = 30.0,
        port: int = 0,
        max_rate: float | None = None,
        delay: Callable[[dict[str, Any]], float] | None = None,
        record: bool = True,
        hold: Callable[[dict[str, Any]], bool] | None = None,
        refuse_formats: tuple[str, ...] = (),
        refuse_status: int = 400,
        ignore_n: bool = False,
    ):
        self.models, self.latency = list(models), latency
        self.responder = responder or Responder()
        self.faults = faults
        self.api_key = api_key
        self.hang_seconds = hang_seconds
        self.port = port
        # Requests per second above which it answers 429 (None: no limit; may change while up).
        self.max_rate = max_rate
        self._allowance, self._allowance_at = 0.0, time.monotonic()
        self.delay = delay  # extra seconds for a request, on top of `latency`
        self.record = record  # False keeps counts only (benchmarks of 100,000s of requests)
        # Requests `hold` matches wait, unanswered, until `release()`: a test can then act
        # (kill the client, say) at a moment that does not depend on the machine's speed.
        self.hold = hold
        self.held = 0
        self.refuse_formats, self.refuse_status = refuse_formats, refuse_status
        self.ignore_n = ignore_n  # one choice whatever `n` asks, as llama-cpp-python's server
        self.served = 0
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each chat request
        self.finishes: list[float | None] = []  # when its handler ended; None while in flight
        self.headers: list[dict[str, str]] = []
        self.faults_sent: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0

    def requests_for(self, kind: str) -> list[dict[str, Any]]:
        """Recorded requests of one kind: evolve, judge or answer."""

        return [body for body in list(self.requests) if kind_of(body) == kind]

    def release(self) -> None:
        """Answer the held requests, and hold no more."""
        self.hold = None
        if self._loop and self._gate:
            self._loop.call_soon_threadsafe(self._gate.set)

    def _application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        # Azure OpenAI's layout: the deployment in the path, the API version in the query.
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        return app

    async def _models(self, request: web.Request) -> web.Response:
        if denied := self._check_key(request):
            return denied
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "fake"}
            for name in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if "deployment" in request.match_info:
            if "api-version" not in request.query:
                return error_response(404, "Resource not found (no api-version)", "404")
            body.setdefault("model", request.match_info["deployment"])
        serial = len(self.requests)
        self.served += 1
        if self.record:
            self.arrivals.append(time.monotonic())
            self.finishes.append(None)
            self.requests.append(body)
            self.headers.append(dict(request.headers))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.max_rate is not None and not self._within_rate():
                self.faults_sent["429"] += 1
                return error_response(
                    429, "Rate limit reached for requests.", "rate_limit_exceeded"
                )
            if denied := self._check_key(request):
                return denied
            if body.get("model") not in self.models:
                return error_response(
                    404, f"The model `{body.get('model')}` does not exist.", "model_not_found"
                )
            return await self._reply(request, body)
        finally:
            self.in_flight -= 1
            if self.record:
                self.finishes[serial] = time.monotonic()

    def _within_rate(self) -> bool:
        """A token bucket holding a fifth of a second's worth of requests."""
        assert self.max_rate is not None
        now = time.monotonic()
        burst = max(1.0, self.max_rate / 5)
        self._allowance = min(burst, self._allowance + (now - self._allowance_at) * self.max_rate)
        self._allowance_at = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    def in_flight_at(self, moment: float, slack: float = 0.01) -> list[dict[str, Any]]:
        """Requests sent before `moment` whose reply was not out `slack` seconds before it."""
        return [
            body
            for body, arrived, finished in zip(
                self.requests, self.arrivals, self.finishes, strict=True
            )
            if arrived <= moment and (finished is None or finished >= moment - slack)
        ]

    async def _reply(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        if self.hold and self.hold(body):
            assert self._gate is not None
            self.held += 1
            await self._gate.wait()
        if (body.get("response_format") or {}).get("type") in self.refuse_formats:
            kind = body["response_format"]["type"]
            message = f"response_format.type: Input should be 'text', not {kind!r}"
            return error_response(self.refuse_status, message, "bad_request")
        fault = self.faults(body) if self.faults else None
        if fault:
            self.faults_sent[fault.kind if fault.kind != "status" else str(fault.status)] += 1
            if fault.kind == "hang":
                await asyncio.sleep(self.hang_seconds)
            elif fault.kind == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=500)
            elif fault.kind == "malformed":
                return web.Response(
                    text='{"id": "x", "choices": [', content_type="application/json"
                )
            else:
                after = fault.retry_after
                headers = {} if after is None else {"Retry-After": str(after)}
                message = fault.message or f"injected {fault.status}"
                return error_response(fault.status, message, "injected", headers)
        pause = self.latency + (self.delay(body) if self.delay else 0.0)
        if pause:
            await asyncio.sleep(pause)
        try:
            replies = replies_to(self.responder, body, ignore_n=self.ignore_n)
        except ContextOverflow:
            return error_response(
                400,
                "This model's maximum context length is 4096 tokens. Please reduce the length of the messages.",
                "context_length_exceeded",
            )
        prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
        completion_tokens = sum(len(text.split()) for text, _ in replies)
        return web.json_response(
            {
                "id": f"chatcmpl-{self.served}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": index,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish_reason,
                    }
                    for index, (text, finish_reason) in enumerate(replies)
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    def _check_key(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        return error_response(401, "Incorrect API key provided.", "invalid_api_key")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--model", action="append", default=None)
    args = parser.parse_args()
    server = FakeServer(
        models=tuple(args.model or ["fake-model"]), latency=args.latency, port=args.port
    )
    server.start()
    print(f"fake OpenAI-compatible server on {server.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
