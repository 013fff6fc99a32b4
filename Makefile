# Targets the README names. `make setup` once, then `make demo` / `make test`. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help setup demo test test-fast lint format clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

TORCH := torch==2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

# torch before the project, so the project's `torch==2.13.0` finds it installed. With an NVIDIA GPU (nvidia-smi or its
# driver present): the default build, which bundles CUDA (several GB). Without: the CPU build (a few hundred MB),
# from PyTorch's CPU index, unless the configured indexes already resolve torch to a +cpu build (a local mirror).
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 || [ -e /proc/driver/nvidia ]; then \
		echo "NVIDIA GPU found: installing $(TORCH), the default (CUDA) build"; \
		$(BIN)/pip install -q "$(TORCH)"; \
	elif $(BIN)/pip install -q --dry-run --ignore-installed --no-deps --report - "$(TORCH)" 2>/dev/null \
			| grep -q '"version": *"[^"]*+cpu"'; then \
		echo "No NVIDIA GPU: installing $(TORCH), a CPU build from the configured index"; \
		$(BIN)/pip install -q "$(TORCH)"; \
	else \
		echo "No NVIDIA GPU: installing $(TORCH), the CPU build from $(TORCH_CPU_INDEX)"; \
		$(BIN)/pip install -q "$(TORCH)" --index-url $(TORCH_CPU_INDEX); \
	fi
	$(BIN)/pip install -q -e ".[test]"

setup: $(BIN)/python  ## create .venv: torch (CPU build without an NVIDIA GPU), the project with test extras

demo: setup  ## build the offline demo model and data, fit, then test the best checkpoint
	$(BIN)/python main.py demo demo_data
	$(BIN)/python main.py fit --config configs/demo.yaml
	$(BIN)/python main.py test --config configs/demo.yaml --ckpt_path best

test: setup  ## the full suite, as CI runs it (offline, CPU only)
	# Two test processes, each test file kept in one, so its module fixtures are built once.
	$(BIN)/python -m pytest -n 2 --dist loadfile

test-fast: setup  ## the edit loop: everything but end-to-end training runs
	$(BIN)/python -m pytest -m "not slow and not e2e"

lint: setup  ## ruff check and format check, as CI runs them
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup  ## ruff format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:  ## remove run outputs and caches
	rm -rf logs demo_data .pytest_cache
