"""The import graph: leaf modules load alone, and lower layers never import higher ones;
and no module is too long to read in one sitting."""

import shutil
import subprocess
import sys
from pathlib import Path

import grimp


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
