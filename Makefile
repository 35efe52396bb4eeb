# Build and test the executable book.
#
#   make book     strict HTML build -> _build/html/index.html
#   make test     make book, then pytest: unit tests, nbval on every chapter,
#                 HTML checks and the figure-regression proof, and every page
#                 opened in headless Chromium (screenshots in _build/screenshots)
#   make unit     the package's fast unit tests only (tests/unit, not marked slow)
#   make lint     ruff (lint and format check), import-linter's layer contract,
#                 the notebook normaliser's check and the markdown twins' check
#   make format   apply ruff's formatter and safe fixes (code cells of chapters too)
#   make browser  install Debian's chromium (apt-get) if /usr/bin/chromium is missing
#   make execute  re-run every chapter in place, normalise it and write its
#                 markdown twin book/md/NN_slug.md (the only way committed
#                 outputs should change); NB=book/02_x.ipynb restricts it
#   make bench    time `make book` and `make test` on a warm environment
#   make calibrate  refit the model, rewrite data/calibrated_parameters.csv
#   make lock     regenerate requirements.txt from TOP_DEPS
#   make clean    remove build output (keeps .venv); `make distclean` too

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
.DELETE_ON_ERROR:

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed.stamp
# Prefer python3.11; fall back to python3 (the venv recipe checks it is 3.11).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)

# Top-level dependencies; requirements.txt is their full, exact lock.
TOP_DEPS := jupyter-book==1.0.4.post1 numpy pandas scipy seaborn matplotlib \
            nbval pytest hypothesis ipykernel \
            sphinx-mathjax-offline ruff import-linter jupytext playwright pint tqdm

# Chapters are book/NN_slug.ipynb; book/_template.ipynb is not one.
CHAPTERS := $(sort $(wildcard book/[0-9][0-9]_*.ipynb))
NB ?= $(CHAPTERS)

.PHONY: venv book browser test unit lint format execute normalize check-notebooks bench calibrate lock clean distclean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: neither python3.11 nor python3 found" >&2; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
	  || { echo "error: $(PYTHON) is $$($(PYTHON) -V 2>&1); Python 3.11 is required" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

book: $(STAMP)
	rm -rf _build/html _build/.doctrees
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going
	@test -f _build/html/index.html \
	  || { echo "error: jupyter-book exited 0 but wrote no _build/html/index.html" >&2; exit 1; }
	@echo "book: _build/html/index.html"

# tests/book/test_browser.py opens the built book in Debian's chromium, driven
# by Playwright with executable_path set to it (no browser download). Installed
# only when missing; apt-get needs root (or sudo).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian's chromium for tests/test_browser.py"; \
	  $(SUDO) apt-get update -qq \
	  && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	@test -x $(CHROMIUM) || { echo "error: $(CHROMIUM) still missing" >&2; exit 1; }

test: book browser
	$(BIN)/python -m pytest

# The fast loop: the package's unit tests without notebooks, the browser or
# fits of the full model (those are marked slow and run in `make test`).
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -m "not slow" -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python tools/normalize_notebooks.py --check
	$(BIN)/python tools/twins.py --check

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
	$(BIN)/python tools/normalize_notebooks.py
	$(BIN)/python tools/twins.py

execute: $(STAMP)
	$(BIN)/ruff format --quiet $(NB)
	$(BIN)/python tools/execute_notebooks.py $(NB)
	$(BIN)/python tools/normalize_notebooks.py $(NB)
	$(BIN)/python tools/twins.py $(NB)

normalize: $(STAMP)
	$(BIN)/python tools/normalize_notebooks.py $(NB)

check-notebooks: $(STAMP)
	$(BIN)/python tools/normalize_notebooks.py --check $(NB)

bench: $(STAMP)
	$(BIN)/python tools/bench.py

# Refit the model to the measurements and store the result in
# data/calibrated_parameters.csv (tests fail if the stored fit is stale).
calibrate: $(STAMP)
	$(BIN)/python -m servingmodel.calibrate

lock:
	rm -rf _build/lockvenv
	$(PYTHON) -m venv _build/lockvenv
	_build/lockvenv/bin/python -m pip install --quiet $(TOP_DEPS)
	{ sed -n '/^#/p' requirements.txt; _build/lockvenv/bin/python -m pip freeze --exclude-editable; } > requirements.txt.new
	mv requirements.txt.new requirements.txt
	rm -rf _build/lockvenv

clean:
	rm -rf _build .pytest_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) src/*.egg-info
