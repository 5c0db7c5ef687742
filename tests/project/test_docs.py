"""The README and docs/ say what the code does: the CLI reference is what the commands print,
every command and option has help text, links and paths lead somewhere, options named exist."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 300
# What the lead keeps (docs/mutation.md) and what is generated (docs/cli.md) are checked
# for links only.
GENERATED = {"cli.md"}
OTHERS_TEXT = {"mutation.md"}
PAGES = sorted(DOCS.glob("*.md"))
MARKDOWN = [README, *PAGES]
# Options of other programs that the examples use (Slurm, kubectl, mkdocs, vllm bench).
FOREIGN_OPTIONS = {
    "--job-name", "--array", "--time", "--parsable", "--dependency", "--wrap", "--for", "--strict",
    "--input-len", "--output-len", "--num-prompts",
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


# The README ---------------------------------------------------------------------------------


def test_the_readme_is_short_and_opens_with_make_demo_and_make_test() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES
    start = next(i for i, line in enumerate(lines) if line.startswith("```"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("```"))
    assert start < 10, "the quick start opens the README"
    assert [line.split("#")[0].strip() for line in lines[start + 1 : end]] == [
        "make demo",
        "make test",
    ]


def test_the_readme_plugin_is_the_one_the_tests_install() -> None:
    readme = README.read_text(encoding="utf-8")
    plugin = ROOT / "tests" / "plugin_echo"
    code = (plugin / "evol_echo.py").read_text(encoding="utf-8").split('"""', 2)[2].strip()
    assert f"```python\n{code}\n```" in readme
    entry_point = re.search(r'\[project\.entry-points\."evol\.backends"\]\n.+\n', (
        plugin / "pyproject.toml"
    ).read_text())  # fmt: skip
    assert entry_point and entry_point.group(0) in readme


def test_the_library_example_names_what_evol_exports() -> None:
    import evol
    from evol.rundir.manifest import RunSummary

    readme = README.read_text(encoding="utf-8")
    for name in re.findall(r"\bevol\.(\w+)\(", readme):
        assert hasattr(evol, name), f"the README calls evol.{name}, which evol does not export"
    for field in re.findall(r"\bsummary\.(\w+)", readme):
        assert field in RunSummary.model_fields, f"RunSummary has no {field}"


# Every page ---------------------------------------------------------------------------------


@pytest.mark.parametrize("md", MARKDOWN, ids=_name)
def test_every_relative_link_points_to_a_file_that_exists(md: Path) -> None:
    for target in links(md.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        found = (md.parent / path).resolve() if path else md
        assert found.exists(), f"{_name(md)}: {target} leads nowhere"
        if md.parent == DOCS:  # MkDocs builds the site from docs/ alone
            assert found.is_relative_to(DOCS), f"{_name(md)}: {target} is outside docs/"
        if anchor and found.suffix == ".md":
            assert anchor in anchors(found), f"{_name(md)}: no heading makes #{anchor}"


@pytest.mark.parametrize(
    "md", [m for m in MARKDOWN if m.name not in GENERATED | OTHERS_TEXT], ids=_name
)
def test_every_option_named_is_one_evol_takes(md: Path) -> None:
    known = {
        name
        for _, param, _ in PARAMS
        for name in (*param.opts, *getattr(param, "secondary_opts", ()))
    }
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?![\w-])", md.read_text()))
    assert named - known - FOREIGN_OPTIONS == set()


@pytest.mark.parametrize("md", [m for m in MARKDOWN if m.name not in OTHERS_TEXT], ids=_name)
def test_every_path_named_exists(md: Path) -> None:
    text = md.read_text(encoding="utf-8")
    for path in re.findall(r"`((?:src|tests|bench|examples|prompts|docs|\.ci)/[^`\s:]+)", text):
        assert (ROOT / path).exists(), f"{_name(md)} names {path}, which does not exist"


def test_every_module_of_the_layout_exists() -> None:
    layout = (DOCS / "development.md").read_text().split("## Layout", 1)[1]
    modules = re.findall(r"`((?:\w+/)*\w+\.py)`", layout)
    assert len(modules) > 30
    for module in modules:
        assert (ROOT / "src" / "evol" / module).exists(), f"src/evol/{module} does not exist"
    # ...and every module is in it, but the packages' docstrings and `python -m evol`.
    source = ROOT / "src" / "evol"
    every = {path.relative_to(source).as_posix() for path in source.rglob("*.py")}
    every -= {name for name in every if name.endswith(("__init__.py", "__main__.py"))}
    every |= {"cli/__init__.py", "seeds/__init__.py"}  # these hold code
    assert sorted(every - set(modules)) == []


def test_every_page_is_in_the_nav() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^strict: true$", config, re.MULTILINE)
    in_nav = re.findall(r"^\s+- (?:[^:\n]+: )?([\w-]+\.md)$", config, re.MULTILINE)
    assert sorted(in_nav) == sorted(page.name for page in PAGES)


def test_the_throughput_tables_are_the_ones_results_json_gives() -> None:
    """bench/throughput.py rewrites the tables between its markers from bench/results.json."""
    source = (ROOT / "bench" / "throughput.py").read_text()
    tables = next(
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef) and node.name == "readme_tables"
    )
    namespace: dict[str, Any] = {"Any": Any}
    exec(compile(ast.Module([tables], type_ignores=[]), "bench/throughput.py", "exec"), namespace)
    assert '/ "docs" / "performance.md"' in source
    figures = json.loads((ROOT / "bench" / "results.json").read_text())["throughput"]
    page = (DOCS / "performance.md").read_text()
    start, end = "<!-- bench:throughput -->", "<!-- /bench:throughput -->"
    shown = page[page.index(start) + len(start) : page.index(end)]
    assert shown == "\n" + namespace["readme_tables"](figures)
