# llmos-lab: two commands on a fresh machine.
#   make demo   set up .venv, the project and its offline assets, then run the quickstart notebook
#   make test   the same set-up (idempotent), then ruff and the whole test suite
#
# TORCH is what pip installs first, before anything that depends on torch, so that accelerate
# and peft never pull a multi-GB CUDA build onto a CPU machine. On a GPU machine:
#   make test TORCH="torch --index-url https://download.pytorch.org/whl/cu128"
# or reuse a torch that is already installed system-wide:
#   make test TORCH= VENV_FLAGS=--system-site-packages

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
VENV_FLAGS ?=
TORCH ?= torch==2.13.0
EXTRAS ?= dev,ray
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.llmos-lab-installed
NBVAL := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/notebooks/sanitize.cfg

.PHONY: setup assets demo test lint lab clean

setup: $(STAMP) assets

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(strip $(TORCH))" ]; then \
		echo "installing $(TORCH) first"; $(BIN)/python -m pip install --quiet $(TORCH); fi
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

assets: $(STAMP)
	$(BIN)/llmos-lab assets install

demo: setup
	time $(BIN)/llmos-lab run notebooks/01_quickstart.ipynb -o runs

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests notebooks $(NBVAL) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

lab: setup
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
