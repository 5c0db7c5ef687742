"""The import graph: leaf modules load alone, and lower layers never import higher ones."""

import subprocess
import sys


def loaded_evol_modules(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('evol')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_a_leaf_module_loads_without_the_pipeline_and_the_backends():
    assert loaded_evol_modules("import evol.textstats") == {"evol", "evol.version", "evol.textstats"}


def test_the_library_entry_points_still_load_on_first_use():
    loaded = loaded_evol_modules("import evol; evol.run; evol.RunConfig; evol.RunSummary; evol.arun")
    assert {"evol.pipeline", "evol.config", "evol.manifest"} <= loaded


def test_an_unknown_attribute_of_the_package_is_an_attribute_error():
    import evol

    try:
        evol.no_such_thing  # noqa: B018
    except AttributeError as error:
        assert "no_such_thing" in str(error)
    else:
        raise AssertionError("evol.no_such_thing resolved")
