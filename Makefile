# salseg — set-up, tests, demo and benchmarks. Every target installs what it needs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_FLAGS ?=
# pinned versions of everything `.[dev]` installs; refreshed by `make lock` (README)
CONSTRAINTS := requirements/constraints.txt
LATEST := .venv-latest
LATEST_PY := $(LATEST)/bin/python

.PHONY: install browser test test-all test-latest lock lint demo bench clean-demo

install: $(STAMP)
	@echo "salseg is installed in $(VENV); in every new shell, first: source $(VENV)/bin/activate"

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	@touch $(STAMP)

# headless Chromium for the browser tests (tests/test_serve_browser.py): Debian's packages,
# installed when missing (root or passwordless sudo); without them those tests are skipped
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium chromium-driver; \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo apt-get install -y -qq chromium chromium-driver; \
	else echo "note: chromium/chromium-driver missing and no root: browser tests will be skipped"; fi

# the fast suite against the newest releases pyproject.toml allows, in a separate venv
# (.venv stays on the pinned versions)
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST_PY) -m pip install --upgrade --quiet pip
	$(LATEST_PY) -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST_PY) -m pytest -m "not slow" -q $(PYTEST_FLAGS)

# refresh the pins: only a set of releases that passed test-latest is written
lock: test-latest
	{ grep '^#' $(CONSTRAINTS); $(LATEST_PY) -m pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@echo "$(CONSTRAINTS) refreshed from $(LATEST); review and commit the diff"

test: install browser
	$(PY) -m pytest -m "not slow" -q $(PYTEST_FLAGS)

test-all: install browser
	$(PY) -m pytest -q $(PYTEST_FLAGS)

lint: install
	$(VENV)/bin/ruff check salseg tests scripts benchmarks train.py eval.py predict.py

demo: install
	$(PY) scripts/demo.py

# the bench extra's own packages (rembg, ...) are not pinned; what they share with .[dev] is
$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,bench]'
	@touch $@

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/run_all.py $(BENCH_FLAGS)

clean-demo:
	rm -rf outputs/demo
