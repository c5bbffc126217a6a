# The README's commands. `make demo` and `make test` each set up .venv first if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONHASHSEED := 0
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo shards test lint format notebooks clean

$(STAMP): pyproject.toml requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## Build the synthetic shards, then execute every notebook in order with the demo preset (outputs in runs/executed/).
demo: setup
	$(PY) tools/run_notebooks.py --preset demo --out runs/executed

## Only the synthetic shards (what 01 builds).
shards: setup
	$(PY) -m nbhelpers.data.prepare --source synthetic --preset demo

## Lint, every unit test, then the committed notebooks re-executed by nbval.
test: lint
	$(VENV)/bin/pytest -q -n 2 --durations=15 tests
	$(VENV)/bin/pytest -q --durations=12 --nbval-lax notebooks/

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Re-execute every notebook in place, in order, with the demo preset (what gets committed).
notebooks: setup
	$(PY) tools/run_notebooks.py --preset demo --in-place

clean:
	rm -rf runs data/shards
