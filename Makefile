# Plain task runner: every command the README mentions is a target here.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= ui,postgres,dev

.PHONY: help install run test test-fast train evaluate evaluate-drawn bench bench-learn bench-api bench-soak lint clean

# The development machines keep MNIST and real handwriting (USPS, Semeion) beside the repository, read-only:
# used when they are there and nothing else is set. Elsewhere MNIST is downloaded (checksums verified) and
# the classical models train without real handwriting (weaker on it: README's first section, docs/real.md).
ifneq ($(wildcard ../shared/mnist/SHA256SUMS),)
export DIGITLAB_MNIST_DIR ?= $(abspath ../shared/mnist)
endif
ifneq ($(wildcard ../shared/handwriting/SHA256SUMS),)
export DIGITLAB_HANDWRITING_DIR ?= $(abspath ../shared/handwriting)
endif

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/digitlab: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "digitlab needs Python 3.11+: make run PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[$(EXTRAS)]"
	@touch $@

install: $(BIN)/digitlab  ## create .venv and install digitlab with every extra but torch

run: install  ## train what is missing, then start the API and the UI (Ctrl-C stops both)
	$(BIN)/digitlab run

test: install  ## the whole suite: unit, PostgreSQL, API, browser
	$(BIN)/python -m pytest

test-fast: install  ## everything except the browser tests
	$(BIN)/python -m pytest -m "not browser"

train: install  ## train the four classical models on the full MNIST training set
	$(BIN)/digitlab train

evaluate: install  ## accuracy of the saved models on the MNIST test set
	$(BIN)/digitlab evaluate

evaluate-drawn: install  ## accuracy on digits re-drawn as canvas strokes
	$(BIN)/digitlab evaluate --drawn

bench: install  ## benchmarks: preprocessing, models, store (prints tables)
	$(BIN)/python bench/models_bench.py
	$(BIN)/python bench/preprocess_bench.py
	$(BIN)/python bench/store_bench.py

bench-learn: install  ## learning from users end to end (real handwriting posted through a scratch API, then digitlab learn)
	$(BIN)/python bench/learn_bench.py

bench-api: install  ## HTTP benchmark: starts an API server on a free port and drives it over loopback
	$(BIN)/python bench/api_bench.py --spawn

bench-soak: install  ## a minute of 64 clients: failures, every prediction stored once, memory of every process
	$(BIN)/python bench/soak_bench.py --spawn

lint: install  ## ruff check
	$(BIN)/ruff check src tests bench

clean:  ## remove the venv, caches and build output (not data/ or models/)
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
