"""evol in a child process, the way a user's shell starts it: a watched `evol run` with its exit,
output and peak memory (run_evol), and a piped `python -m evol` (evol_child).

ENV is this process's environment without the developer's EVOL_* and OPENAI_* settings, taken
when this module is first imported: from a test module, after conftest's pytest_configure has
put the source tree on PYTHONPATH (so conftest must not import this module).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from tests.support.runs import write_seeds

ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
ONE_SEED = [{"id": "s0", "instruction": "Explain topic number 0 to a student"}]


@dataclass
class Child:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float


def run_evol(url: str, out: Path, *extra: object, env: dict | None = None, seeds=None) -> Child:
    """`evol run` in a child process; its exit, output and peak RSS. Killed after 120 s."""
    seed_file = write_seeds(out.parent / f"{out.name}-seeds.jsonl", seeds or ONE_SEED)
    command = [sys.executable, "-m", "evol", "run", str(seed_file), "--out", str(out)]
    command += ["--base-url", url, "--model", "fake-model", "--quiet", *map(str, extra)]
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(command, env={**ENV, **(env or {})}, stdout=stdout, stderr=stderr)
        # A time limit only against a hang; wait4 gives the child's own peak RSS.
        watchdog = threading.Timer(120, child.send_signal, args=(signal.SIGKILL,))
        watchdog.start()
        try:
            _pid, status, usage = os.wait4(child.pid, 0)
        finally:
            watchdog.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        return Child(
            returncode=child.returncode,
            stdout=stdout.read().decode(),
            stderr=stderr.read().decode(),
            peak_rss_mb=usage.ru_maxrss / 1024,
        )


def evol_child(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`python -m evol ARGS` with stdout and stderr piped (no terminal)."""
    command = [sys.executable, "-m", "evol", *map(str, args)]
    return subprocess.Popen(
        command,
        env={**ENV, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment as it is now, without EVOL_* and OPENAI_* settings, and with
    `extra` on top: for a child that must not pick up the developer's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVOL_", "OPENAI_"))}
    return {**env, **extra}
