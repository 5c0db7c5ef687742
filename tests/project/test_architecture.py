"""The import graph: leaf modules load alone, every module has its layer and lower layers never
import higher ones; and no module is too long to read in one sitting."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest


def loaded_evol_modules(statement: str) -> set[str]:
    code = (
        f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('evol')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_a_leaf_module_loads_without_the_pipeline_and_the_backends():
    assert loaded_evol_modules("import evol.method.textstats") == {
        "evol",
        "evol.version",
        "evol.method",  # a docstring, nothing more
        "evol.method.textstats",
    }


def test_the_library_entry_points_still_load_on_first_use():
    loaded = loaded_evol_modules(
        "import evol; evol.run; evol.RunConfig; evol.RunSummary; evol.arun"
    )
    assert {"evol.pipeline", "evol.config", "evol.rundir.manifest"} <= loaded


def test_an_unknown_attribute_of_the_package_is_an_attribute_error():
    import evol

    try:
        evol.no_such_thing  # noqa: B018
    except AttributeError as error:
        assert "no_such_thing" in str(error)
    else:
        raise AssertionError("evol.no_such_thing resolved")


def test_no_module_of_evol_imports_itself_back_through_another():
    graph = grimp.build_graph("evol")
    cycles = {
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if graph.find_shortest_chain(importer=imported, imported=module)
    }
    assert not cycles


def test_the_import_contracts_in_pyproject_hold():
    """The layers (cli > commands > engine/manifest > store/seeds/config > llm), the method's
    rules apart from files and LLMs, the store apart from LLMs: see [tool.importlinter]."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    command = (
        [str(lint_imports)]
        if lint_imports.exists()
        else [shutil.which("lint-imports") or "lint-imports"]
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def modules_named_by_layers(contracts: list[dict]) -> set[str]:
    """Every module a layer of a layers contract names, under each of the contract's containers
    (an optional layer's parentheses dropped)."""
    named = set()
    for contract in contracts:
        if contract["type"] != "layers":
            continue
        prefixes = [f"{container}." for container in contract.get("containers", [])] or [""]
        for layer in contract["layers"]:
            for tail in re.split(r"[|:]", layer):
                named.update(prefix + tail.strip().strip("()") for prefix in prefixes)
    return named


def unplaced_modules(graph: grimp.ImportGraph, named: set[str]) -> set[str]:
    """The modules no layer names. Left out: the root package (it contains every layer), and a
    package whose __init__ imports nothing of evol (a docstring: its modules are placed, it has
    no import that could point up)."""
    return {
        module
        for module in graph.modules
        if module not in named
        and module != "evol"
        and not (
            graph.find_children(module) and not graph.find_modules_directly_imported_by(module)
        )
    }


def graph_of(imports: dict[str, set[str]]) -> grimp.ImportGraph:
    graph = grimp.ImportGraph()
    for module, imported in imports.items():
        graph.add_module(module)
        for name in imported:
            graph.add_import(importer=module, imported=name)
    return graph


LAYERS = [
    {
        "type": "layers",
        "layers": ["evol.cli", "evol.run : evol.dataset.stats", "evol.llm", "evol.errors"],
    },
    {"type": "layers", "containers": ["evol.llm"], "layers": ["(registry) | dispatch", "protocol"]},
    {"type": "forbidden", "source_modules": ["evol.method"], "forbidden_modules": ["evol.llm"]},
]
PLACED = {
    "evol": {"evol.run"},
    "evol.cli": {"evol.run"},
    "evol.run": {"evol.errors"},
    "evol.dataset": set(),
    "evol.dataset.stats": set(),
    "evol.errors": set(),
    "evol.llm": {"evol.llm.registry"},
    "evol.llm.registry": set(),
    "evol.llm.dispatch": set(),
    "evol.llm.protocol": set(),
}


@pytest.mark.parametrize(
    ("added", "expected"),
    [
        ({}, set()),
        ({"evol.terminal": set()}, {"evol.terminal"}),  # a new top-level module
        ({"evol.llm.limits": {"evol.llm.protocol"}}, {"evol.llm.limits"}),  # in a package
        ({"evol.dataset.show": set()}, {"evol.dataset.show"}),  # beside a named sibling
        (
            {"evol.method": set(), "evol.method.dedup": set()},
            {"evol.method.dedup"},
        ),  # forbidden only
        ({"evol.dataset": {"evol.errors"}}, {"evol.dataset"}),  # a package __init__ that imports
        ({"evol.quality": set(), "evol.quality.scores": set()}, {"evol.quality.scores"}),
    ],
)
def test_a_module_that_no_layer_names_is_found(
    added: dict[str, set[str]], expected: set[str]
) -> None:
    named = modules_named_by_layers(LAYERS)
    assert unplaced_modules(graph_of(PLACED | added), named) == expected


def test_every_module_of_evol_is_named_by_a_layers_contract():
    """A new module names its layer in [tool.importlinter] (a package's own contract, where its
    package has one): an import from a lower layer into it then fails lint-imports."""
    contracts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"][
        "contracts"
    ]
    graph = grimp.build_graph("evol")
    assert len(graph.modules) > 100
    assert unplaced_modules(graph, modules_named_by_layers(contracts)) == set()


def test_ray_is_imported_only_by_the_ray_engine_and_only_when_a_wave_runs():
    """Ray costs seconds to import: a run without --engine ray never loads it, and only
    evol.llm.ray names it at all."""
    graph = grimp.build_graph("evol", include_external_packages=True)
    importers = graph.find_modules_that_directly_import("ray") if "ray" in graph.modules else set()
    assert all(module.startswith("evol.llm.ray.") for module in importers), importers
    code = (
        "import sys; from evol.cli import app; import evol.pipeline, evol.llm.ray; "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


SOURCE = Path(__file__).resolve().parents[2] / "src" / "evol"
MAX_MODULE_LINES = 400  # issue #23: one concern a module, none a grab bag


def test_no_module_of_evol_is_over_400_lines():
    lengths = {
        path.relative_to(SOURCE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in SOURCE.rglob("*.py")
    }
    assert len(lengths) > 30
    assert {name: n for name, n in lengths.items() if n > MAX_MODULE_LINES} == {}
