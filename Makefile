# inference-club: two commands.
#
#   make run    create .venv if missing, install the package, start the hub
#   make test   install the test dependencies, then the formatting check, ruff, mypy (package,
#               tests and bench) and the whole pytest suite (strict markers, warnings as errors)
#
# Variables: PYTHON (interpreter that creates .venv), PORT, HOST, DATA_DIR (passed to
# `inference-club serve` when set; otherwise IC_PORT / IC_HOST / IC_DATA_DIR or the
# defaults apply), PYTEST_ARGS (extra pytest arguments, e.g. PYTEST_ARGS="-k cli -x").

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?=
HOST ?=
DATA_DIR ?=
PYTEST_ARGS ?=

# Installs are skipped while pyproject.toml is unchanged: the stamp names carry its hash.
PYPROJECT_HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
RUN_STAMP := $(VENV)/.installed-run-$(PYPROJECT_HASH)
TEST_STAMP := $(VENV)/.installed-test-$(PYPROJECT_HASH)

# llama-cpp-python (test extra) is built from source; a portable build, cached by pip.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Debian packages the test suite needs, as COMMAND:PACKAGE pairs. Installed by `make deps`
# when the command is missing and we run as root (CI); otherwise only reported.
# chromium: the dashboard's browser tests (driven by Playwright, never downloaded).
# nginx: the load balancer in front of the scale-out suite's hub replicas (run unprivileged).
DEB_DEPS := g++:g++ chromium:chromium nginx:nginx

.PHONY: help run test deps install install-test format lint typecheck pytest clean

# What ruff formats and checks; mypy reads its file list from pyproject.toml.
CODE := inference_club tests bench

help:
	@echo "make run    install and start the hub (PORT=, HOST=, DATA_DIR= optional)"
	@echo "make test   install the test dependencies and run ruff (format and lint), mypy and pytest"
	@echo "make format rewrite the code in ruff's format"
	@echo "make deps   install missing Debian packages the test suite needs (as root)"
	@echo "make clean  remove .venv and caches (keeps ./data)"

run: install
	$(BIN)/inference-club serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# All four checks run even when one fails, so one run shows every problem.
test: deps install-test
	@status=0; \
	$(BIN)/ruff format --check $(CODE) || status=1; \
	$(BIN)/ruff check $(CODE) || status=1; \
	$(BIN)/mypy || status=1; \
	$(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	exit $$status

format: install-test
	$(BIN)/ruff format $(CODE)

lint: install-test
	@status=0; \
	$(BIN)/ruff format --check $(CODE) || status=1; \
	$(BIN)/ruff check $(CODE) || status=1; \
	exit $$status

typecheck: install-test
	$(BIN)/mypy

pytest: install-test
	$(BIN)/pytest $(PYTEST_ARGS)

install: $(RUN_STAMP)
install-test: $(TEST_STAMP)

$(BIN)/python:
	@if ! $(PYTHON) -m venv $(VENV); then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "python venv module missing; installing python3-venv" >&2; \
	    rm -rf $(VENV); apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else \
	    echo "could not create $(VENV) with $(PYTHON) (Python 3.11+ with venv is needed; on Debian: apt-get install python3-venv)" >&2; exit 1; \
	  fi; \
	fi

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing inference-club and its dependencies into $(VENV) (under a minute)..."
	$(BIN)/python -m pip install --quiet -e .
	@rm -f $(VENV)/.installed-run-*
	@touch $@

# pip runs verbosely into $(INSTALL_LOG); the terminal gets one line per package and the
# compiler's progress in 5 % steps, and the log's end when pip fails.
INSTALL_LOG := $(VENV)/install-test.log
PROGRESS_FILTER := awk 'BEGIN { last = -5 } \
  /^(Collecting|Successfully installed|Building wheel for|  Building wheel for)/ { print; fflush(); next } \
  match($$0, /\[ *[0-9]+\/[0-9]+\]/) { split(substr($$0, RSTART + 1, RLENGTH - 2), n, "/"); \
    pct = int(100 * n[1] / n[2]); \
    if (pct >= last + 5 || n[1] == n[2]) { printf "  compiling llama.cpp: %3d%% (step %d of %d)\n", pct, n[1], n[2]; fflush(); last = pct }; next } \
  match($$0, /^\[ *[0-9]+%\]/) { pct = substr($$0, RSTART + 1, RLENGTH - 3) + 0; \
    if (pct >= last + 5) { printf "  compiling llama.cpp: %3d%%\n", pct; fflush(); last = pct } }'

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	@echo "Installing the test dependencies into $(VENV) (log: $(INSTALL_LOG))."
	@if ! $(BIN)/python -c 'import llama_cpp' >/dev/null 2>&1; then \
	  echo "The first time this compiles llama-cpp-python (a real llama.cpp engine the tests run against)"; \
	  echo "from source: about 5 minutes on a fast machine, up to 20 on 2 cores. Later runs reuse pip's cache."; \
	fi
	@set -o pipefail; $(BIN)/python -m pip install -v -e '.[test]' 2>&1 | tee $(INSTALL_LOG) \
	  | { $(PROGRESS_FILTER) || true; } \
	  || { echo "pip install failed; the end of $(INSTALL_LOG):" >&2; tail -n 40 $(INSTALL_LOG) >&2; exit 1; }
	@rm -f $(VENV)/.installed-run-* $(VENV)/.installed-test-*
	@touch $@ $(RUN_STAMP)

deps:
	@missing=""; \
	for pair in $(DEB_DEPS); do \
	  cmd="$${pair%%:*}"; \
	  command -v "$$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$$cmd" ] || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing" >&2; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (install them as root, or the tests that need them fail)" >&2; \
	  fi; \
	fi

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache inference_club.egg-info
