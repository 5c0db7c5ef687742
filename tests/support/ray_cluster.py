"""A local Ray for the tests of `--engine ray` (tests/llm/ray/): the marker that skips them
without the ray extra, the environment a cluster runs in, the port and address helpers of the
`ray_cluster` fixture, and the `evol run` command line the runs on a cluster share."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
import tempfile
from pathlib import Path

import pytest

from evol.llm.openai_api import ReplyReader
from evol.secrets import Secrets
from tests.support.fake_server import FakeServer

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="needs the ray extra: pip install -e '.[dev]'"
)


READER = ReplyReader("http://server/v1", "OPENAI_API_KEY", Secrets.of("sk-secret", []))


# No telemetry; no token auth (Ray 2.60 turns it on for a new local cluster, with a token in
# ~/.ray that the test would share with whatever else runs Ray on this machine).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The `ray start` process of each cluster the `ray_cluster` fixture (tests/llm/ray/conftest.py) started, by address: its workers
# are its descendants.
HEAD_PIDS: dict[str, int] = {}


def forget_cluster(port: int) -> None:
    """Remove the address `ray start` left for later `ray.init()` calls, if it is this
    cluster's: killed, the cluster cannot remove it (`ray stop` would), and a `ray.init()`
    with no address would try to join the dead cluster."""
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    with contextlib.suppress(OSError):
        if current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def accepts(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_command(server: FakeServer, seeds: Path, out: Path, *extra: object) -> list[str]:
    return [
        sys.executable, "-m", "evol", "run", str(seeds), "--out", str(out),
        "--base-url", server.base_url, "--quiet", "--retry-max-wait", "0.05", *map(str, extra),
    ]  # fmt: skip


# Lineages that differ: kept, eliminated at each rule, cut, retried with its parent.
VARIED = [
    {"instruction": "Explain topic 0 in two sentences."},
    {"instruction": "[leak-once] Describe a river.", "output": "A river flows."},
    {"instruction": "[equal] Name a colour."},
    {"instruction": "[sorry] Solve the riddle."},
    {"instruction": "Summarize the sentence.", "input": "The cat slept all day."},
    {"instruction": "[too-long] Write an essay."},
]


RAY_OPTIONS = ("--engine", "ray", "--ray-batch-size", "4")
