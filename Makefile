# llmos-lab: two commands on a fresh machine.
#   make demo   set up .venv, the project and its offline assets, then run the quickstart notebook
#   make test   the same set-up (idempotent), then ruff and the whole test suite
#
# The browser test (tests/test_browser.py) drives Debian's chromium (or $CHROMIUM) through
# Playwright; `make test` installs chromium with apt-get when it is missing and you are root,
# and otherwise says why that test will skip. Playwright never downloads a browser here.
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

.PHONY: setup assets chromium demo test lint lab clean

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

chromium:
	@if [ -n "$$CHROMIUM" ]; then \
		command -v "$$CHROMIUM" >/dev/null \
			|| echo "note: CHROMIUM=$$CHROMIUM is not executable; tests/test_browser.py will skip"; \
	elif [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for tests/test_browser.py"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium >/dev/null; } \
			|| echo "note: could not install chromium; tests/test_browser.py will skip"; \
	else \
		echo "note: no /usr/bin/chromium and not root (or no apt-get), so tests/test_browser.py"; \
		echo "      will skip; install Debian's chromium, or set CHROMIUM=/path/to/chromium"; \
	fi

demo: setup
	time $(BIN)/llmos-lab run notebooks/01_quickstart.ipynb -o runs

test: setup chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests notebooks $(NBVAL) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

lab: setup
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info
