"""The README's two commands, in the Makefile's own terms (`make -n` prints what would run)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.make import ROOT, demo_command

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@pytest.mark.parametrize(
    ("env", "out"),
    [
        ({}, "runs/demo-local"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"}, "runs/demo-api"),
        ({"OPENAI_API_KEY": "sk-test"}, "runs/demo-api"),
    ],
)
def test_the_demo_follows_the_configured_model_into_a_run_of_its_own(
    env: dict[str, str], out: str
) -> None:
    command = demo_command(**env)
    assert f"--out {out} " in command + " " and "--overwrite" not in command


def test_overwrite_starts_the_demo_again() -> None:
    assert demo_command(OVERWRITE="1").endswith("--overwrite")


def test_the_install_says_what_it_builds_and_hides_no_progress() -> None:
    printed = subprocess.run(
        ["make", "-n", "-B", "-C", str(ROOT), ".venv/.installed-local"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "builds llama-cpp-python from source" in printed
    installs = [line for line in printed.splitlines() if "pip install" in line and "-e" in line]
    assert installs and all("--quiet" not in line for line in installs)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("value", ["0", "no", "false"])
def test_overwrite_0_keeps_the_demo(value: str) -> None:
    """`make demo OVERWRITE=0` (meaning: don't) deleted the demo run: make's $(if) is true for
    any non-empty text."""
    assert "--overwrite" not in demo_command(OVERWRITE=value)
