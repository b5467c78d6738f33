# The README's commands. `make study` and `make test` set up .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup study test lint bench clean-results

setup: $(VENV)/.installed

# torch is installed first and pinned: the CPU wheel (an unpinned torch pulls CUDA builds).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

study: setup
	$(BIN)/snakemake --cores all

# Tests never download: offline mode makes a missing hub model skip at once.
test: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

# results/models/ (trained models, shared), results/logs/, results/<study>/ for each study.
clean-results:
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf .snakemake
