# Set-up from a fresh clone: `make demo` or `make test`; the venv is created on first use.
SHELL := /bin/bash
PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
LOCK_VENV := .venv-lock

.PHONY: help venv up down status demo lint test chromium chaos bench lock clean

help:
	@echo "make venv     create $(VENV)/ with the pinned dependencies (automatic for the targets below)"
	@echo "make up       start the local stack and a worker in the background; writes .devstack/env"
	@echo "make down     stop everything 'make up' started"
	@echo "make status   show what runs"
	@echo "make demo     run a real batch end to end on the local stack"
	@echo "make lint     ruff check and mypy (configured in pyproject.toml)"
	@echo "make test     lint, then the whole test suite (installs Debian's chromium for the web UI test when missing)"
	@echo "make chaos    run the chaos suite's long scenarios (about an hour); writes bench/results/chaos.json"
	@echo "make bench    run the 10,000-item benchmark"
	@echo "make lock     re-resolve pyproject.toml and rewrite constraints.txt"
	@echo "make clean    stop the stack, delete its state and the caches (keeps $(VENV)/)"

venv: $(INSTALLED)

# Re-installs only when the dependencies change.
$(INSTALLED): pyproject.toml constraints.txt
	test -x $(PYTHON) || $(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,test]'
	touch $@

up: venv
	$(PYTHON) -m devtools.devstack up

# No venv yet means nothing can be running.
down:
	@if [ -x $(PYTHON) ]; then $(PYTHON) -m devtools.devstack down; else echo "nothing was running"; fi

status:
	@if [ -x $(PYTHON) ]; then $(PYTHON) -m devtools.devstack status; else echo "nothing runs (no $(VENV)/ yet)"; fi

demo: venv
	$(PYTHON) -m devtools.demo

lint: venv
	$(PYTHON) -m ruff check .
	$(PYTHON) -m mypy

test: venv chromium lint
	$(PYTHON) -m pytest

# The web UI test drives Debian's chromium (a package registry CI reaches; Playwright never
# downloads a browser). Installed once, when missing.
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

chaos: venv
	$(PYTHON) -m bench.chaos

bench: venv
	$(PYTHON) -m bench.run_10k

# Resolves in a scratch venv so that nothing installed by hand ends up pinned.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON_BOOTSTRAP) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check '.[dev,test]'
	{ echo "# Exact versions of the whole dependency tree, for a reproducible install. Regenerate with: make lock"; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -v '^brightrun-batch'; } > constraints.txt
	rm -rf $(LOCK_VENV) build

clean: down
	rm -rf .devstack .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
