"""Issue #25 attacked: the first hour's promises under inputs the authors did not try (a huge
progress interval, a symbolic link loop, a seed file through a pipe, --output-field alone, a dry
run of --batch, OVERWRITE=0, a key in the URL's query, a narrow terminal)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evol.cli import app
from tests.support.fake_server import FakeServer
from tests.support.make import demo_command
from tests.support.runs import refused_url, run_args, run_at, without_quiet, write_seeds
from tests.support.subprocesses import evol_child

SEEDS = [{"instruction": f"Task {i}: explain the idea"} for i in range(2)]


@pytest.mark.slow
def test_a_progress_interval_past_what_a_thread_can_wait_is_no_traceback(tmp_path: Path) -> None:
    """EVOL_PROGRESS_INTERVAL=1e10 is a number above 0, yet Event.wait(1e10) overflows."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    with FakeServer() as server:
        arguments = without_quiet(run_args(server, seeds, out, "--generations", "1"))
        child = evol_child(*arguments, env={"EVOL_PROGRESS_INTERVAL": "1e10"})
        _, stderr = child.communicate(timeout=600)
    assert child.returncode == 0, stderr
    assert "Traceback" not in stderr and "OverflowError" not in stderr
    assert "evol: progress: 4/4 steps (100%)" in stderr


def loop_at(tmp_path: Path) -> Path:
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    return tmp_path / "loop-a"


def test_a_symbolic_link_loop_as_run_out_is_one_line(evol, server, tmp_path: Path) -> None:
    seeds, loop = write_seeds(tmp_path / "seeds.jsonl", SEEDS), loop_at(tmp_path)
    result = evol(*run_args(server, seeds, loop))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"evol: error: {loop}: a loop of symbolic links; give --out another path"
    ]
    assert server.requests == []


def test_a_symbolic_link_loop_as_export_out_is_one_line(evol, server, tmp_path: Path) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    assert evol(*run_args(server, seeds, out, "--generations", "1")).exit_code == 0
    loop = loop_at(tmp_path)
    result = evol("export", out, "--out", loop)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"evol: error: {loop}: a loop of symbolic links; give --out another path"
    ]


@pytest.mark.slow
def test_a_seed_file_through_a_pipe_is_named_as_one_not_as_empty(tmp_path: Path) -> None:
    """`evol validate <(head seeds.jsonl)`: the sniffer read the pipe, the reader found it empty
    and said 'the file holds no seeds'. evol reads a seed file more than once; a pipe is refused
    in words, and a FIFO without a writer does not hang the run."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", SEEDS)
    script = (
        "import subprocess, sys; "
        "feeder = subprocess.Popen(['cat', sys.argv[1]], stdout=subprocess.PIPE); "
        "path = f'/dev/fd/{feeder.stdout.fileno()}'; "
        "done = subprocess.run([sys.executable, '-m', 'evol', 'validate', path], "
        "pass_fds=[feeder.stdout.fileno()], capture_output=True, text=True); "
        "print(done.returncode); print(done.stderr.strip())"
    )
    printed = subprocess.run(
        [sys.executable, "-c", script, str(seeds)], capture_output=True, text=True, timeout=120
    ).stdout.splitlines()
    assert printed[0] == "2"
    assert "holds no seeds" not in printed[1]
    assert "not a regular file" in printed[1]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.slow
def test_a_fifo_without_a_writer_is_refused_not_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "seeds.jsonl"
    os.mkfifo(fifo)
    done = subprocess.run(
        [sys.executable, "-m", "evol", "validate", str(fifo)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"evol: error: {fifo}: not a regular file (a pipe, a FIFO or a device): evol reads "
        "the seed file more than once; save it to a file first"
    ]


def test_output_field_alone_overrides_the_detected_shape(evol, tmp_path: Path) -> None:
    """README: --instruction-field, --input-field and --output-field 'override the detection'.
    --output-field without --instruction-field was ignored: a Question,Answer file's answers
    went to metadata and every seed was answered again, at a price."""
    seeds = tmp_path / "qa.csv"
    seeds.write_text("Question,Answer,Context\nWhat is X?,X is x.,about X\n", encoding="utf-8")
    result = evol("validate", seeds, "--output-field", "Answer", "--input-field", "Context")
    assert result.exit_code == 0, result.stderr
    assert "with input: 1, with output: 1" in result.stdout
    assert "metadata fields" not in result.stdout


@pytest.mark.parametrize(
    ("extra", "refusal"),
    [
        (["--base-url", "http://127.0.0.1:9/v1", "--base-url", "http://127.0.0.1:10/v1"],
         "--batch takes one --base-url"),
        (["--base-url", "http://127.0.0.1:9/v1", "--rpm", "10"], "--rpm and --tpm pace live"),
        (["--base-url", "http://127.0.0.1:9/v1", "--backend", "openai-sdk"],
         "it works with the openai backend, not with --backend openai-sdk"),
    ],
)  # fmt: skip
def test_a_dry_run_of_batch_refuses_what_the_run_refuses(
    evol, tmp_path: Path, extra: list[str], refusal: str
) -> None:
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    real = evol("run", seeds, "--out", out, "--batch", *extra)
    assert real.exit_code == 2 and refusal in real.stderr
    dry = evol("run", seeds, "--out", out, "--batch", "--dry-run", *extra)
    assert dry.exit_code == 2
    assert refusal in dry.stderr
    assert not out.exists()


def test_a_dry_run_of_batch_names_the_backend_the_run_uses(evol, tmp_path: Path) -> None:
    """With nothing configured, --batch runs the openai backend at api.openai.com; its dry run
    planned the embedded model, '$0 (free: runs on this machine) at the Batch API rate'."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    dry = evol("run", seeds, "--out", out, "--batch", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "backend openai" in dry.stdout
    assert "free" not in dry.stdout
    assert "no API key for api.openai.com" in dry.stdout + dry.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("value", ["0", "no", "false"])
def test_overwrite_0_keeps_the_demo(value: str) -> None:
    """`make demo OVERWRITE=0` (meaning: don't) deleted the demo run: make's $(if) is true for
    any non-empty text."""
    assert "--overwrite" not in demo_command(OVERWRITE=value)


def test_a_redacted_query_key_keeps_the_messages_colon(evol, tmp_path: Path) -> None:
    """'cannot reach http://...?api-key=*** connection refused': the header rule took the ':'
    after the *** that display_url had put there for the key."""
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SEEDS), tmp_path / "run"
    url = refused_url()
    result = evol(*run_at(f"{url}?api-key=sk-SECRETKEY1", seeds, out))
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"evol: error: cannot reach {url}?api-key=***: connection refused; check --base-url"
    ]
    assert "SECRETKEY1" not in (out / "run.json").read_text()


def test_run_help_in_a_narrow_terminal_breaks_no_word(tmp_path: Path) -> None:
    """At COLUMNS=40 the options' column kept 36 characters and left 12 for the help, so
    words were cut in two ('extensi' / 'on)')."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "40"}, terminal_width=40)
    assert result.exit_code == 0
    words = result.stdout.split()
    assert "extension)." in words
    assert "instru" not in words and "extensi" not in words


@pytest.mark.parametrize(
    "echoed",
    [
        "Authorization: Bearer tok-0123456789abcdef",
        "Proxy-Authorization: Basic dXNlcjpwYXNzd29yZA==",
        "authorization: bearer tok-0123456789abcdef",
    ],
)
def test_a_bearer_credential_evol_does_not_know_is_redacted(echoed: str) -> None:
    """A credential header echoed by a server or a proxy, not evol's own key: the separator's
    `b?` (for a bytes repr, b'...') took the B of 'Bearer', the value rule then took 'earer',
    and the token itself stayed: 'Authorization: B*** tok-0123456789abcdef'."""
    from evol.secrets import redact

    shown = redact(echoed)
    assert echoed.split()[-1] not in shown
    assert shown.endswith(": ***")
