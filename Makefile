# ModelDeck developer entry points. `make test` is the whole CI gate (.ci/run calls it).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Rebuilt only when pyproject.toml changes (or .venv is deleted): a second `make install` is a no-op.
STAMP := $(VENV)/.installed
# Debian's Chromium: Playwright's own browser download is not reachable in CI.
CHROMIUM := /usr/bin/chromium
# apt-get needs root; CI runs as root, a workstation usually does not.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: install run test lint format e2e bench browser postgres clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "python3.11 (or python3) is required" >&2; exit 1; }
	@# Debian's python3 ships without venv/ensurepip; it comes from the pythonX.Y-venv package.
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  v=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y "python$$v-venv"; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

run: install
	$(BIN)/modeldeck demo --if-empty
	$(BIN)/modeldeck up

# Plain `pytest` runs every test, slow and e2e included: no marker is deselected by default.
# `make test` spreads the files over TEST_JOBS pytest-xdist workers (a file stays on one worker,
# the browser tests share one: tests/conftest.py); TEST_JOBS=0 runs them in this process.
TEST_JOBS ?= 2
test: install browser postgres
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_JOBS) --dist loadgroup --durations=25

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

e2e: install browser
	$(BIN)/pytest -m e2e

bench: install
	for script in bench/*.py; do \
	  [ -e "$$script" ] || continue; \
	  echo "== $$script"; \
	  $(BIN)/python "$$script"; \
	done

# Never `playwright install`: its download host is unreachable here; Debian's package is not.
# The emoji font only keeps the sidebar's status dots from showing as boxes in screenshots.
browser:
	@if [ -x $(CHROMIUM) ]; then \
	  echo "$(CHROMIUM) present"; \
	else \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y chromium fonts-noto-color-emoji; \
	fi

# PostgreSQL 15 for tests/test_postgres.py & co (a throwaway server per test session).
POSTGRES_BIN := /usr/lib/postgresql/15/bin
postgres:
	@if [ -x $(POSTGRES_BIN)/initdb ]; then \
	  echo "$(POSTGRES_BIN) present"; \
	else \
	  $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; \
	fi

# Leaves .venv and the data/ workspace alone: both are slow or impossible to rebuild.
clean:
	rm -rf .pytest_cache .ruff_cache .mypy_cache tests/e2e/screenshots bench/out *.egg-info build
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
