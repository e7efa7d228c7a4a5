# Two entry points: `make demo` runs the main job on the shipped model, `make test` runs the tests.
# Each creates (or reuses) .venv and installs what it needs.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean interop chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint,cluster]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/maxk demo

test: $(STAMP) chromium
	$(BIN)/python -m pytest -n 2 -q

# Debian's chromium for the report's browser test (tests/test_report_browser.py), installed when
# missing if we are root (CI is); otherwise that test fails unless MAXK_SKIP_BROWSER=1.
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing and we are not root: tests/test_report_browser.py will fail (MAXK_SKIP_BROWSER=1 skips it)"; fi; \
	fi

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

# ruff (lint and format) and pyright (basic mode), versions pinned in pyproject's "lint" extra.
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/pyright

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# TransformerLens interop tests, in their own venv with the optional extra (torch stays 2.13.0).
# Fails unless at least one test passed (a missing transformer_lens would only skip them).
TL_VENV := .venv-tl
TL_STAMP := $(TL_VENV)/.installed

$(TL_STAMP): pyproject.toml
	$(PYTHON) -m venv $(TL_VENV)
	$(TL_VENV)/bin/pip install --quiet --upgrade pip
	$(TL_VENV)/bin/pip install --quiet -e '.[test,transformer-lens]'
	touch $(TL_STAMP)

interop: $(TL_STAMP)
	@$(TL_VENV)/bin/python -c "import torch, transformer_lens; from importlib.metadata import version; \
	print('interop: torch', torch.__version__, '| transformer-lens', version('transformer-lens')); \
	assert torch.__version__.split('+')[0] == '2.13.0', 'torch is not the pinned 2.13.0'"
	@log=$$(mktemp); $(TL_VENV)/bin/python -m pytest -q -m interop tests/test_interop.py >$$log 2>&1; rc=$$?; \
	cat $$log; passed=$$(grep -Ec '[0-9]+ passed' $$log); rm -f $$log; \
	[ $$rc -eq 0 ] || exit $$rc; [ $$passed -gt 0 ] || { echo "interop: no test passed"; exit 1; }

clean:
	rm -rf $(VENV) .venv-tl
