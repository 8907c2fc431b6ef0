# salseg — set-up, tests, demo and benchmarks. Every target installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_FLAGS ?=

.PHONY: install test test-all lint demo bench clean-demo

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

test: install
	$(PY) -m pytest -m "not slow" -q $(PYTEST_FLAGS)

test-all: install
	$(PY) -m pytest -q $(PYTEST_FLAGS)

lint: install
	$(VENV)/bin/ruff check salseg tests scripts benchmarks train.py eval.py predict.py

demo: install
	$(PY) scripts/demo.py

$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/run_all.py $(BENCH_FLAGS)

clean-demo:
	rm -rf outputs/demo
