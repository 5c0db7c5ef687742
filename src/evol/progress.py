"""Where a long command stands, as it tells its caller (the CLI draws the bar or the lines).

`evol run` counts steps (a seed's answer or one evolution round) and what they kept and
eliminated; `evol score` counts its calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    """`done` of `total` units, and what this process has sent so far."""

    done: int
    total: int
    unit: str = "step"
    calls: int | None = None  # requests sent by this process; None where each unit is a call
    kept: int | None = None
    eliminated: int | None = None


ProgressCallback = Callable[[Progress], None]


def format_progress(latest: Progress, first: Progress, elapsed: float, *, ended: bool) -> str:
    """One line on where a command stands: `first` is the first report of this process and
    `elapsed` the seconds since; the speed and the ETA count only what this process did.

    progress: 120/400 steps (30%), 88 kept, 32 eliminated, 4.1 calls/s, ETA 1m08s
    """
    done, total = latest.done, latest.total
    parts = [f"{done}/{total} {latest.unit}s ({_percent(done, total)})"]
    if latest.kept is not None:
        parts.append(f"{latest.kept} kept")
    if latest.eliminated is not None:
        parts.append(f"{latest.eliminated} eliminated")
    calls = latest.calls if latest.calls is not None else done - first.done
    parts.append(f"{calls / elapsed if elapsed > 0 else 0.0:.1f} calls/s")
    pace = (done - first.done) / elapsed if elapsed > 0 else 0.0
    if ended:
        parts.append(f"ended after {_duration(elapsed)}")
    elif done >= total:
        parts.append("ETA 0s")
    else:
        parts.append(f"ETA {_duration((total - done) / pace)}" if pace > 0 else "ETA unknown")
    return "progress: " + ", ".join(parts)


def _percent(done: int, total: int) -> str:
    return f"{100 * done // total}%" if total else "100%"


def _duration(seconds: float) -> str:
    """45s, 1m08s, 2h05m."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
