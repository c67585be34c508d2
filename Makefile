# rnnmnist developer tasks. `make help` lists them; each sets up .venv/ first when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-nobf16 test-slow lint format docs train bench wheel wheel-smoke clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv/ and install rnnmnist (editable) with its dev and docs tools and every extra

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev,docs,all]'
	touch $@

test: install ## Run the test suite, then its precision tests as on a CPU without bf16 (real-data tests need RNNMNIST_DATA_DIR)
	$(BIN)/pytest -m "not slow" --durations=15
	RNNMNIST_DISABLE_BF16=1 $(BIN)/pytest -m "precision and not slow" -q

test-nobf16: install ## The whole suite as on a CPU without AVX-512 BF16 (bf16 forced off)
	RNNMNIST_DISABLE_BF16=1 $(BIN)/pytest -m "not slow"

test-slow: install ## The slow tests (hostile-input and signal matrices at full size); CI runs them too
	$(BIN)/pytest -m slow; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]  # 5: no test is marked slow

lint: install ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Reformat the code with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

docs: install ## Build the documentation site into site/; any warning (a broken link or anchor) fails it
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

train: install ## Train with the default recipe; pass flags with ARGS="--config seed"
	$(BIN)/rnnmnist train $(ARGS)

bench: install ## Run the benchmarks (minutes; needs the real MNIST in RNNMNIST_DATA_DIR)
	$(BIN)/python bench/run.py $(ARGS)

wheel: install ## Build dist/rnnmnist-VERSION-py3-none-any.whl (the presets and the serve page inside)
	rm -rf build dist
	$(BIN)/python -m build --wheel

wheel-smoke: wheel ## Install the wheel in a fresh venv outside the checkout; train, eval, predict from another folder
	bash .ci/wheel-smoke.sh dist/rnnmnist-*.whl

clean: ## Remove .venv/ and caches (runs/ is kept)
	rm -rf $(VENV) .pytest_cache .ruff_cache
