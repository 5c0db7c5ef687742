"""The optimizer model's calls in `evol optimize`: an analysis per batch of failed
trajectories, then one proposal per candidate. They go through the `Dispatcher` of every
call, with a journal keyed by step, batch and candidate number: after a kill -9, a rerun
replays the replies it holds instead of paying for them again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from evol.errors import BackendError, GarbledReply
from evol.llm import ChatBackend, GenerationParams, LLMRequest
from evol.llm.dispatch import CallFailed, CallRefused, Dispatcher
from evol.method.prompts import OPTIMIZE_ANALYSIS, OPTIMIZE_PROPOSE, PromptSet
from evol.optimize.config import OptimizeConfig
from evol.optimize.trajectories import Trajectory
from evol.rundir.journal import CallJournal

# An answer shown to the optimizer is cut to this many characters: its opening tells enough.
ANSWER_SHOWN = 1500


@dataclass(frozen=True)
class Refused:
    """A proposal the server refused for good: the candidate is refused with this reason."""

    refused: str


class Optimizer:
    """The optimizer model's calls: one per batch of failures, one per candidate."""

    def __init__(self, config: OptimizeConfig, backend: ChatBackend, journal: CallJournal):
        self.config, self.backend = config, backend
        # Its own calls are live, --batch or not (the evaluation runs are the batched ones).
        policy = config.call_policy(in_flight=config.concurrency)
        self.calls = Dispatcher(backend, policy, journal=journal)
        self.prompts = PromptSet.load(config.prompts_dir)
        self._model: str | None = config.optimizer_model or config.model

    async def model(self) -> str:
        if self._model is None:
            self._model = await self.backend.default_model()
        return self._model

    async def analyse(self, step: int, method: str, failures: list[Trajectory]) -> list[str]:
        """The optimizer's analysis of `failures`, one call per --analysis-batch of them."""
        size = self.config.analysis_batch
        batches = [failures[start : start + size] for start in range(0, len(failures), size)]
        template = self.prompts[OPTIMIZE_ANALYSIS]
        asks = [
            self.ask(
                step,
                f"analysis_{number}",
                template.render(method=method, trajectories=_show(batch)),
            )
            for number, batch in enumerate(batches, start=1)
        ]
        replies = await asyncio.gather(*asks)
        return [reply if isinstance(reply, str) else reply.refused for reply in replies]

    async def propose(self, step: int, method: str, analysis: str) -> list[str | Refused]:
        """The --candidates proposals, each the optimizer's reply as it is."""
        count = self.config.candidates
        template = self.prompts[OPTIMIZE_PROPOSE]
        asks = [
            self.ask(
                step,
                f"candidate_{number}",
                template.render(
                    method=method, analysis=analysis, number=str(number), count=str(count)
                ),
            )
            for number in range(1, count + 1)
        ]
        return list(await asyncio.gather(*asks))

    async def ask(self, step: int, key: str, prompt: str) -> str | Refused:
        request = LLMRequest(
            messages=[{"role": "user", "content": prompt}],
            model=await self.model(),
            params=GenerationParams(),
            role="optimizer",
            item=f"step{step}",
            key=key,
        )
        try:
            return (await self.calls.complete(request)).text
        except CallRefused as refused:
            return Refused(f"the optimizer's request was refused: {refused}")
        except CallFailed as failed:
            if isinstance(failed.error, GarbledReply):  # the same every time: no rerun helps
                tries = self.config.max_retries + 1
                return Refused(f"the optimizer's reply could not be read ({tries} tries): {failed}")
            raise BackendError(
                f"the optimizer's call step {step} {key} failed after retries: {failed}; run "
                "the same command again (calls already answered are not paid again)"
            ) from None


def _show(batch: list[Trajectory]) -> str:
    """Trajectories as the optimizer reads them."""
    return "\n\n".join(
        f"<trajectory>\noperation: {t.operation}\ngiven: {t.parent}\nrewrite: {t.rewrite}\n"
        f"answer: {t.answer[:ANSWER_SHOWN]}\nthrown away because: {t.outcome}\n</trajectory>"
        for t in batch
    )
