"""The cluster `--engine ray` runs on (evol.llm.ray.cluster): an address nothing answers at
stops the run at once, and a local Ray that evol starts itself lives as long as the run."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.fake_server import FakeServer
from tests.support.ray_cluster import (
    RAY_ENV,
    RAY_OPTIONS,
    VARIED,
    needs_ray,
    run_command,
)
from tests.support.runs import assert_valid_run, read_jsonl, write_seeds


@needs_ray
def test_a_cluster_nothing_answers_at_stops_the_run_at_once(
    evol, server: FakeServer, tmp_path: Path
) -> None:
    from tests.support.runs import refused_url

    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a tree"}])
    address = refused_url().removeprefix("http://").removesuffix("/v1")
    result = evol("run", seeds, "--out", tmp_path / "run", "--base-url", server.base_url,
                  "--engine", "ray", "--ray-address", address, "--quiet")  # fmt: skip
    assert result.exit_code == 2
    assert f"cannot start or join {address}" in result.stderr and "nothing answers" in result.stderr
    assert server.requests == []


@pytest.mark.slow
@needs_ray
def test_a_run_on_a_local_ray_that_evol_starts_itself_completes(tmp_path: Path) -> None:
    """No --ray-address: evol starts a local Ray, on the thread that lives as long as the run
    (a local Ray's head dies with the thread that started it: started on a wave's thread, it
    was gone after the first wave and the run never ended)."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", VARIED[:2])
    # A temp dir of its own: with no address, ray.init joins the cluster named in
    # $TMPDIR/ray/ray_current_cluster (the package's, another test's) if there is one.
    # Short: Ray's socket paths under it must fit in 107 bytes.
    alone = tempfile.mkdtemp(prefix="evol-ray-", dir="/tmp")
    env = os.environ | RAY_ENV | {"TMPDIR": alone}
    with FakeServer() as server:
        child = subprocess.Popen(
            run_command(server, seeds, tmp_path / "out", "--generations", "2", *RAY_OPTIONS),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            _, stderr = child.communicate(timeout=400)
        finally:  # the Ray agents that outlive ray.shutdown, killed with the session
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            shutil.rmtree(alone, ignore_errors=True)
    assert child.returncode == 0, stderr[-3000:]
    manifest = assert_valid_run(tmp_path / "out")
    assert manifest["status"] == "complete"
    assert len(read_jsonl(tmp_path / "out" / "dataset.jsonl")) >= 2
