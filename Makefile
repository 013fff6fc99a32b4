# Targets the README names. `make setup` once, then `make demo` / `make test`. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help setup demo test test-fast lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q "torch==2.13.0" || $(BIN)/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install -q -e ".[test]"

setup: $(BIN)/python  ## create .venv with CPU torch and the project (editable, with test extras)

demo: setup  ## build the offline demo model and data, fit, then test the best checkpoint
	$(BIN)/python -m modules.data.demo demo_data
	$(BIN)/python main.py fit --config configs/demo.yaml
	$(BIN)/python main.py test --config configs/demo.yaml --ckpt_path best

test: setup  ## the full suite, as CI runs it (offline, CPU; ~11 minutes on 2 cores)
	# Two test processes, each test file kept in one (its module fixtures are built once): 11 instead of ~15 minutes.
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: setup  ## the edit loop: everything but end-to-end training runs (well under 2 minutes)
	$(BIN)/python -m pytest -m "not slow and not e2e"

lint: setup  ## ruff check and format check, as CI runs them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup  ## ruff format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:  ## remove run outputs and caches
	rm -rf logs demo_data .pytest_cache
