# `make demo`, `make test`, `make test-fast` and `make lint` each set up what they need (idempotently), then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: install
	$(BIN)/modelprint demo --seed 0

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# ruff (rules and the files' recorded exceptions in pyproject.toml), then the import-graph rule.
lint: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests/test_imports.py

bench: install
	$(BIN)/python benchmarks/bench_spectral_realworld.py --seed 0

clean:
	rm -rf $(VENV) out .pytest_cache
