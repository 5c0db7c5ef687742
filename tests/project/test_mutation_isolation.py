"""The pytest plugin that `make mutate` loads (tests/mutation_isolation.py): under a mutant, a
test that runs far past its clean time fails, and the children it left are killed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

# The plugin's limits, shrunk so that the hang is seen in seconds, and the clean time mutmut
# measured for the hanging test.
CONFTEST = """
import tests.mutation_isolation as plugin
plugin.HANG_FLOOR_S = 2.0
plugin.HANG_FACTOR = 1
plugin.CLEAN_DURATIONS = {"test_hang.py::test_waits_on_a_child": 0.1}
"""

TEST = """
import subprocess, sys
from pathlib import Path

def test_waits_on_a_child():
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)"]) as child:
        Path("child.pid").write_text(str(child.pid))
        child.communicate(timeout=600)
"""


def run_pytest(project: Path, mutant: str, sleep_s: int) -> subprocess.CompletedProcess[str]:
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_hang.py").write_text(TEST.replace("1000", str(sleep_s)))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MUTANT_UNDER_TEST": mutant}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-p", "tests.mutation_isolation", "--rootdir", str(project), str(project)]
    return subprocess.run(
        command, cwd=project, env=env, capture_output=True, text=True, timeout=600
    )


def test_a_test_that_hangs_under_a_mutant_fails_and_its_child_is_killed(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, "evol.dataset.merge.x_merge__mutmut_3", sleep_s=1000)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "over 2 s under a mutant (0.1 s clean): a hang" in result.stdout
    child = int((tmp_path / "child.pid").read_text())
    assert not Path(f"/proc/{child}").exists()


def test_the_clean_run_is_not_limited(tmp_path: Path) -> None:
    """mutmut's clean and stats runs set no mutant: a test slower there than the limit is
    timed, not failed."""
    result = run_pytest(tmp_path, "", sleep_s=3)
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_mutate_lets_pytest_cache_its_rewritten_test_modules(monkeypatch) -> None:
    """bench/mutation_score.py runs mutmut without PYTHONDONTWRITEBYTECODE, and with every
    other variable as it was."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "mutation_score", ROOT / "bench" / "mutation_score.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setenv("EVOL_SOMETHING", "kept")
    environment = module.mutmut_environment()
    assert "PYTHONDONTWRITEBYTECODE" not in environment
    assert environment["EVOL_SOMETHING"] == "kept" and environment["PATH"] == os.environ["PATH"]
