# The two commands of the README: `make demo` and `make test`. Each creates the virtualenv
# (.venv) and installs the project into it when that has not been done yet.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck imports unit bench compose-test clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "agritrace needs Python 3.11, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --editable '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/agritrace demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

imports: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck imports unit

# Every benchmark (about 30 min on two cores); writes the tables into docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python -m bench --out docs/benchmarks.md

# compose.yaml's stack from images built here (no registry needed), started, checked and
# removed again; as root on Debian 12, where it installs Docker. See scripts/compose-test.sh.
compose-test:
	scripts/compose-test.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
