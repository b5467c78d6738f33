# The README's commands. `make study` and `make test` set up .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup study test lint bench lock clean-results

setup: $(VENV)/.installed

# Exact versions with hashes from requirements.lock (torch is the CPU wheel 2.13.0+cpu), then
# lenslab itself, editable, without resolving anything again.
$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
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

# Refresh the lock after editing pyproject.toml's dependencies: resolve, pin with hashes, and
# copy the pins into environment.yml. Commit all three files together.
lock: setup
	$(BIN)/pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --extra dev --generate-hashes --allow-unsafe --strip-extras \
	    --no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
	$(BIN)/python scripts/dev/sync_environment.py

# results/models/ (trained models, shared), results/logs/, results/<study>/ for each study.
clean-results:
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf .snakemake
