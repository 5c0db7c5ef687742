"""`ReplyFeed`: the driver's end of the `ReplySink` on the HTTP path. It starts the actor, runs
the thread that takes its replies as they come, and lets go of an ended wave's keys.

The actor itself runs on the cluster and lives in `evol.llm.ray.session`, which is pickled by
value onto the workers; this side stays out of it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from evol.llm.ray import session

# Seconds a take from the sink waits for a reply: how soon the drainer sees the run stop.
_TAKE_WAIT = 1.0


class ReplyFeed:
    """The `ReplySink` actor and the thread that drains it, started at most once. `actor` is
    None before the start, after `close`, and for good if Ray refused the actor: replies
    then come a batch at a time."""

    def __init__(self, stopping: threading.Event):
        self.actor: Any = None  # the ReplySink actor's handle
        self.thread: threading.Thread | None = None
        self._stopping = stopping  # the run stopped: the drainer leaves at its next take
        self._tried = False

    def start(self, deliver: Callable[[list[dict[str, Any]]], None]) -> None:
        """Start the actor (no CPU of its own) and the thread that drains it, which hands each
        take's rows to `deliver`; the second call does nothing."""
        if self._tried:
            return
        import ray

        self._tried = True
        ray.cloudpickle.register_pickle_by_value(session)  # the cluster need not have evol
        try:
            self.actor = ray.remote(num_cpus=0)(session.ReplySink).remote()
        except Exception:  # noqa: BLE001 (whatever Ray raises: no sink, the batches answer)
            return
        self.thread = threading.Thread(
            target=self._drain, args=(self.actor, deliver), name="evol-ray-sink", daemon=True
        )
        self.thread.start()

    def forget(self, keys: list[str]) -> None:
        """A wave ended: the sink may let go of its keys."""
        if self.actor is not None:
            with contextlib.suppress(Exception):
                self.actor.forget.remote(keys)

    def close(self, grace: float) -> None:
        """Kill the actor, and wait up to `grace` seconds for the drainer to see it gone."""
        if self.actor is not None:
            import ray

            with contextlib.suppress(Exception):  # gone already
                ray.kill(self.actor)
            self.actor = None
        if self.thread is not None:
            self.thread.join(grace)  # it stops at its next take (the sink's end, say)

    def _drain(self, sink: Any, deliver: Callable[[list[dict[str, Any]]], None]) -> None:
        """On a thread: take the replies from the sink as they come and deliver them.
        A sink that fails is left: the waves' own rows answer, a batch at a time."""
        import ray
        from ray.exceptions import GetTimeoutError

        taking = None
        while not self._stopping.is_set():
            if taking is None:
                taking = sink.take.remote(_TAKE_WAIT)
            try:
                rows = ray.get(taking, timeout=_TAKE_WAIT)
            except GetTimeoutError:  # the sink not started yet, or slow: the same take again
                continue
            except Exception:  # noqa: BLE001 (the sink died or was killed)
                return
            taking = None
            if rows:
                deliver(rows)
