# The two commands a newcomer runs: `make serve` and `make test`.
# Both install the exact versions in requirements.lock, the ones the whole suite passed with.
SHELL  := bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
ARGS   ?=

PIP_VERSION := 26.3
UV_VERSION  := 0.13.9
# torch: the CPU build. Elsewhere, point pip at PyTorch's CPU wheel index for it; a plain
# `torch` from PyPI is a CUDA build of several GB.
TORCH        := torch==2.13.0+cpu
TORCH_WHEELS ?= /opt/wheels
FIND_TORCH   := $(if $(wildcard $(TORCH_WHEELS)),--find-links $(TORCH_WHEELS))
PIP_QUIET    := --quiet --no-warn-script-location

LATEST     ?= .venv-latest
LATEST_LOG := benchmarks/results/tmp/test-latest.log

.PHONY: serve serve-ray test install install-ray install-test lint lock test-latest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) "pip==$(PIP_VERSION)"

# The server and what it needs, at the locked versions (the lock as constraints).
install: $(BIN)/python
	$(BIN)/pip install $(PIP_QUIET) -c $(LOCK) setuptools wheel
	$(BIN)/pip install $(PIP_QUIET) -c $(LOCK) --no-build-isolation -e .

# Everything in the lock: the server, the test, hf (checkpoint conversion) and bench extras.
install-test: $(BIN)/python
	$(BIN)/pip install $(PIP_QUIET) $(FIND_TORCH) -r $(LOCK)
	$(BIN)/pip install $(PIP_QUIET) --no-deps --no-build-isolation -e .

serve: install
	$(BIN)/whisperwire serve $(ARGS)

# The server with Ray Serve (the ray extra), at the locked versions.
install-ray: install
	$(BIN)/pip install $(PIP_QUIET) -c $(LOCK) --no-build-isolation -e ".[ray]"

# Two replicas behind Ray's proxy on a Ray cluster started here (see the README).
serve-ray: install-ray
	$(BIN)/whisperwire serve --ray $(ARGS)

test: install-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -ra $(ARGS)

lint: install-test
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# Re-resolves every direct and transitive dependency to the newest versions pyproject.toml
# allows. Run `make test` on the result before committing it.
lock: $(BIN)/python
	$(BIN)/pip install $(PIP_QUIET) "uv==$(UV_VERSION)"
	printf '%s\n' "$(TORCH)" "setuptools>=68" wheel | $(BIN)/uv pip compile pyproject.toml - \
		--all-extras --upgrade $(FIND_TORCH) --python $(BIN)/python \
		--custom-compile-command "make lock" --quiet -o $(LOCK)

# The whole suite under the newest versions pyproject.toml allows (not the lock), in a separate
# environment: what a `pip install whisperwire` user gets today. torch stays the CPU build.
# Not part of CI; the versions and the result go into the README's development section.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	$(LATEST)/bin/pip install $(PIP_QUIET) $(FIND_TORCH) "$(TORCH)"
	$(LATEST)/bin/pip install $(PIP_QUIET) -e ".[test,hf,bench]"
	mkdir -p $(dir $(LATEST_LOG))
	$(LATEST)/bin/pip freeze --exclude-editable > $(LATEST)/versions.txt
	@echo "newest allowed versions: $(LATEST)/versions.txt"
	$(LATEST)/bin/ruff check .
	$(LATEST)/bin/python -m pytest -ra $(ARGS) 2>&1 | tee $(LATEST_LOG); exit $${PIPESTATUS[0]}

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
