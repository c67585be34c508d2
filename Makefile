# rnnmnist developer tasks. `make help` lists them; each sets up .venv/ first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install test lint format train bench clean

help: ## List the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv/ and install rnnmnist (editable) with its dev tools and every extra

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,plot,export,tensorboard]'
	touch $@

test: install ## Run the test suite (real-data tests run when RNNMNIST_DATA_DIR is set)
	$(BIN)/pytest

lint: install ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Reformat the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

train: install ## Train with the default recipe; pass flags with ARGS="--config configs/seed.toml"
	$(BIN)/rnnmnist train $(ARGS)

bench: install ## Run the benchmarks (minutes; needs the real MNIST in RNNMNIST_DATA_DIR)
	$(BIN)/python bench/run.py $(ARGS)

clean: ## Remove .venv/ and caches (runs/ is kept)
	rm -rf $(VENV) .pytest_cache .ruff_cache
