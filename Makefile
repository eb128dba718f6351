# inference-club: two commands.
#
#   make run    create .venv if missing, install the package, start the hub
#   make test   install the test dependencies, then ruff, mypy and the whole pytest suite
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
# Add e.g. chromium:chromium here when a test needs it.
DEB_DEPS := g++:g++

.PHONY: help run test deps install install-test lint typecheck pytest clean

help:
	@echo "make run    install and start the hub (PORT=, HOST=, DATA_DIR= optional)"
	@echo "make test   install the test dependencies and run ruff, mypy and pytest"
	@echo "make deps   install missing Debian packages the test suite needs (as root)"
	@echo "make clean  remove .venv and caches (keeps ./data)"

run: install
	$(BIN)/inference-club serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# All three checks run even when one fails, so one run shows every problem.
test: deps install-test
	@status=0; \
	$(BIN)/ruff check inference_club tests || status=1; \
	$(BIN)/mypy || status=1; \
	$(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	exit $$status

lint: install-test
	$(BIN)/ruff check inference_club tests

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
	$(BIN)/python -m pip install --quiet -e .
	@rm -f $(VENV)/.installed-run-*
	@touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-run-* $(VENV)/.installed-test-*
	@touch $@ $(RUN_STAMP)

deps:
	@missing=""; \
	for pair in $(DEB_DEPS); do \
	  command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
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
