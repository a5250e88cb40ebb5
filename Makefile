# The two commands of the README: `make demo` (set up + main job), `make test` (set up + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ../shared/data

.PHONY: setup demo test lint clean

$(BIN)/enn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel these machines hold (a newer release pulls GB of CUDA)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/enn

setup: $(BIN)/enn

demo: setup
	$(BIN)/enn demo --out runs/demo

test: lint
	ENN_DATA_DIR=$${ENN_DATA_DIR:-$(DATA_DIR)} $(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests examples scripts benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info
