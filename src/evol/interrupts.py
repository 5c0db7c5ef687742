"""Ctrl-C and SIGTERM: stop sending calls, keep what is done, and say how to resume."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

from evol.errors import Interrupted


async def until_signalled(work: Any) -> None:
    """Await `work`; SIGINT or SIGTERM cancels it (no new calls) and raises `Interrupted`."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    signals = (signal.SIGINT, signal.SIGTERM)
    installed = []
    for number in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(number, task.cancel)
            installed.append(number)
    try:
        await task
    except asyncio.CancelledError:
        raise Interrupted(
            "interrupted: everything finished so far is saved; run the same command to resume"
        ) from None
    finally:
        for number in installed:
            loop.remove_signal_handler(number)
