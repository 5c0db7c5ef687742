"""The local Ray cluster the tests of `--engine ray` share (helpers in
tests/support/ray_cluster.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ray_cluster import HEAD_PIDS, RAY_ENV, accepts, forget_cluster, free_port


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[str]:
    """A local Ray head with 2 CPUs in a process group of its own, started once for the package
    (one cluster for all its modules, as for the one module they were); yields its address.
    Every process of it (raylet, GCS, workers, the agents that outlive `ray.shutdown`) is killed
    with the group at the end."""
    os.environ.update(RAY_ENV)
    port = free_port()
    ray_cli = Path(sys.executable).with_name("ray")
    process = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    HEAD_PIDS[address] = process.pid
    try:
        deadline = time.monotonic() + 120
        while not accepts(port):
            assert process.poll() is None, "ray start exited"
            assert time.monotonic() < deadline, "ray start did not listen within 120 s"
            time.sleep(0.2)
        yield address
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        forget_cluster(port)
