# The two commands a new user runs: `make demo` and `make test`.
# Each creates .venv when missing and installs what it needs; only python3 is assumed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test test-unit check bench install models clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-run the install whenever pyproject.toml changes.
# The demo gets Gemini's library set (the gemini-env extra), so code written for Gemini runs.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[gemini-env]'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

# The model the real-model tests use (CI pulls it before `make test`).
models: $(VENV)/.installed
	$(BIN)/codeloop models pull qwen2.5-coder-0.5b

# A real local model answers (downloaded once into the user's cache, ~1.1 GB);
# `codeloop demo --replay` plays recorded turns instead.
demo: $(VENV)/.installed
	$(BIN)/codeloop demo

# Lint, format and types: a clean baseline, so any finding is new and fails `make test`.
check: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
# PYTEST_ARGS picks a kind, e.g. PYTEST_ARGS='-m integration' (README "Running the tests").
test: check
	@command -v bwrap >/dev/null 2>&1 || echo "make test: bubblewrap is not installed, so the sandbox's bwrap-level tests will be skipped (sudo apt-get install bubblewrap)" >&2
	$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

# The unit tests alone (doubles only, under 20 s): the quick loop while editing.
test-unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test-unit: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.perf.executors
	$(BIN)/python -m benchmarks.perf.batch

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
