# Every target builds its own virtual environment first, so a fresh clone needs only python3.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test demo bench lint typecheck clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

test: $(BIN)/.installed
	$(BIN)/ruff check batchmap tests tools
	$(BIN)/mypy
	$(BIN)/pytest -q

demo: $(BIN)/.installed
	$(BIN)/python tools/demo.py

bench: $(BIN)/.installed
	$(BIN)/python tools/bench.py

lint: $(BIN)/.installed
	$(BIN)/ruff check batchmap tests tools
	$(BIN)/ruff format --check batchmap tests tools

clean:
	rm -rf $(VENV) demo-out .pytest_cache .mypy_cache .ruff_cache
