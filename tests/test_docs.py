"""The README and docs/ say what the code does: the CLI reference is what the commands print,
every command and option has help text, links and paths lead somewhere, options named exist."""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 300
# What the lead keeps (docs/mutation.md) and what is generated (docs/cli.md) are checked
# for links only.
GENERATED = {"cli.md"}
OTHERS_TEXT = {"mutation.md"}
PAGES = sorted(DOCS.glob("*.md"))
MARKDOWN = [README, *PAGES]
# Options of other programs that the examples use (Slurm, kubectl, mkdocs).
FOREIGN_OPTIONS = {
    "--job-name", "--array", "--time", "--parsable", "--dependency", "--wrap", "--for", "--strict"
}  # fmt: skip


def _load_cli_reference() -> Any:
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI_REFERENCE = _load_cli_reference()
COMMANDS = list(CLI_REFERENCE.commands(CLI_REFERENCE.root_command(), ("evol",)))
PARAMS = [
    (" ".join(path), param, ctx)
    for path, command, ctx in COMMANDS
    for param in command.get_params(ctx)
]


def _name(md: Path) -> str:
    return str(md.relative_to(ROOT))


def prose(text: str) -> str:
    """The text without fenced code blocks and inline code (where a link is only an example)."""
    text = re.sub(r"^(```|~~~).*?^\1", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def links(text: str) -> list[str]:
    """The targets of the Markdown links in `text`, outside code."""
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose(text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (MkDocs, in strict mode, checks its own at build)."""
    text = unicodedata.normalize("NFKC", heading).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(md: Path) -> set[str]:
    code_free = re.sub(r"^```.*?^```", "", md.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {github_slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", code_free, re.M)}


# The CLI reference --------------------------------------------------------------------------


def test_the_cli_reference_is_what_the_commands_print() -> None:
    written = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert written == CLI_REFERENCE.render(), "docs/cli.md is stale: run make docs"


def test_the_cli_reference_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text(CLI_REFERENCE.render().replace("--generations", "--rounds"))
    assert CLI_REFERENCE.main(["--check", str(stale)]) == 1
    assert CLI_REFERENCE.main([str(stale)]) == 0
    assert CLI_REFERENCE.main(["--check", str(stale)]) == 0
    assert stale.read_text() == CLI_REFERENCE.render()


def test_the_cli_reference_has_a_section_for_every_command() -> None:
    reference = (DOCS / "cli.md").read_text(encoding="utf-8")
    titles = re.findall(r"^## `(.+)`$", reference, re.MULTILINE)
    assert titles == [" ".join(path) for path, _, _ in COMMANDS]
    assert {"evol run", "evol score", "evol prompts show"} <= set(titles)


@pytest.mark.parametrize(
    ("path", "command"),
    [(" ".join(p), c) for p, c, _ in COMMANDS],
    ids=[" ".join(p) for p, _, _ in COMMANDS],
)
def test_every_command_has_help_text(path: str, command: Any) -> None:
    assert (command.help or "").strip(), f"{path} has no help text"
    assert not command.hidden, f"{path} is hidden from --help"


@pytest.mark.parametrize(
    ("path", "param", "ctx"), PARAMS, ids=[f"{p} {param.name}" for p, param, _ in PARAMS]
)
def test_every_option_and_argument_has_help_text(path: str, param: Any, ctx: Any) -> None:
    assert (getattr(param, "help", None) or "").strip(), f"{path} {param.name}: no help text"
    assert param.get_help_record(ctx) is not None, f"{path} {param.name}: hidden from --help"
