# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the package metadata changes; the install is editable.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/machine-catalog serve

test: $(STAMP)
	$(BIN)/ruff check machine_catalog extender machine_catalog_cli tests benchmarks tools
	$(BIN)/ruff format --check machine_catalog extender machine_catalog_cli tests benchmarks tools
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check machine_catalog extender machine_catalog_cli tests benchmarks tools

format: $(STAMP)
	$(BIN)/ruff format machine_catalog extender machine_catalog_cli tests benchmarks tools
	$(BIN)/ruff check --fix machine_catalog extender machine_catalog_cli tests benchmarks tools

bench: $(STAMP)
	$(BIN)/python benchmarks/extender_latency.py
	$(BIN)/python benchmarks/fleet_simulation.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
