"""The progress of a long command on stderr: a bar on a terminal, else (CI, nohup, a pipe) a
line at a steady interval and one at the end. The library reports through two callbacks
(`evol.progress`); only the CLI draws."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

from evol.errors import UsageError
from evol.progress import Progress, format_progress
from evol.terminal import printable

T = TypeVar("T")
PROGRESS_INTERVAL = 30.0  # seconds between two progress lines when stderr is not a terminal
PROGRESS_INTERVAL_VARIABLE = "EVOL_PROGRESS_INTERVAL"


def with_progress(quiet: bool, work: Callable[[Any, Any], T]) -> T:
    """`work(on_progress, on_info)` with its progress shown on stderr: a bar on a terminal,
    else a line every EVOL_PROGRESS_INTERVAL seconds and one at the end; nothing with
    --quiet."""
    if quiet:
        return work(lambda _progress: None, lambda _message: None)
    if sys.stderr.isatty():
        return _with_bar(work)
    lines = _ProgressLines(progress_interval(), sys.stderr)
    try:
        result = work(lines.update, lines.info)
    except BaseException:
        lines.close(last=lines.moved)  # where a long run stopped; not a stop at start
        raise
    lines.close(last=True)
    return result


def _with_bar(work: Callable[[Any, Any], T]) -> T:
    from tqdm import tqdm  # only a terminal shows a bar: --quiet and CI never load it

    bar = tqdm(total=0, unit="step", file=sys.stderr, dynamic_ncols=True)

    def on_progress(progress: Progress) -> None:
        bar.unit, bar.total, bar.n = progress.unit, progress.total, progress.done
        bar.refresh()

    def on_info(message: str) -> None:  # a model's name, as a server gave it, may be in it
        tqdm.write(f"evol: {printable(message, lines=False)}", file=sys.stderr)

    try:
        return work(on_progress, on_info)
    finally:
        bar.close()


def progress_interval() -> float:
    """The seconds between two progress lines: EVOL_PROGRESS_INTERVAL, else 30."""
    text = os.environ.get(PROGRESS_INTERVAL_VARIABLE, "")
    if not text:
        return PROGRESS_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise UsageError(f"{PROGRESS_INTERVAL_VARIABLE} must be a number of seconds above 0")
    return min(seconds, threading.TIMEOUT_MAX)  # a longer wait overflows: only the last line


class _ProgressLines:
    """Progress as one line at a steady interval, from a thread of its own (a step may take
    minutes), and one line at the end."""

    def __init__(self, interval: float, stream: TextIO):
        self.interval, self.stream = interval, stream
        self.first: Progress | None = None
        self.latest: Progress | None = None
        self.since = 0.0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.ticker = threading.Thread(target=self.tick, daemon=True)
        self.ticker.start()

    def update(self, progress: Progress) -> None:
        if self.first is None:
            self.since = time.monotonic()
            self.first = progress
        self.latest = progress

    def info(self, message: str) -> None:
        self.say(f"evol: {message}")

    def tick(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.show(ended=False)
            except (OSError, ValueError):  # stderr went away (a pipe whose reader left)
                return

    def show(self, *, ended: bool) -> None:
        first, latest = self.first, self.latest
        if first is not None and latest is not None:
            elapsed = time.monotonic() - self.since
            self.say(f"evol: {format_progress(latest, first, elapsed, ended=ended)}")

    def say(self, line: str) -> None:
        with self.lock:
            self.stream.write(printable(line, lines=False) + "\n")
            self.stream.flush()

    @property
    def moved(self) -> bool:
        """Some step was done since the first report."""
        return self.latest is not self.first

    def close(self, *, last: bool) -> None:
        self.stopped.set()
        self.ticker.join()
        if last:
            self.show(ended=True)
