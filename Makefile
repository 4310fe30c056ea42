# Every target builds its own virtual environment first, so a fresh clone needs only python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test test-fast demo bench chaos mutate wheel lint typecheck clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

test: $(BIN)/.installed
	$(BIN)/ruff check batchmap tests tools
	$(BIN)/mypy
	$(BIN)/pytest -q -n 4 --durations=15
	$(BIN)/python tools/check_wheel.py

# Everything but the socket and subprocess tests (the `e2e` marker): well under a minute.
test-fast: $(BIN)/.installed
	$(BIN)/pytest -q -m "not e2e" -n 2 --durations=5

demo: $(BIN)/.installed
	$(BIN)/python tools/demo.py

bench: $(BIN)/.installed
	$(BIN)/python -m tools.bench

# The real CLI against a fake server that misbehaves on purpose: rows lost, memory, time.
chaos: $(BIN)/.installed
	$(BIN)/python -m tools.bench chaos

# Occasional (minutes): one-line breaks of the code on a copy; the tests cited must fail.
mutate: $(BIN)/.installed
	$(BIN)/python tools/mutate.py

# The wheel alone: build, install in a clean venv, smoke-test (also the last step of `test`).
wheel: $(BIN)/.installed
	$(BIN)/python tools/check_wheel.py

lint: $(BIN)/.installed
	$(BIN)/ruff check batchmap tests tools
	$(BIN)/ruff format --check batchmap tests tools

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
