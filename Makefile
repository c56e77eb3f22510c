# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint format bench bench-throughput bench-webhook-floor clean controlplane e2e e2e-oldest

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
	$(BIN)/ruff check machine_catalog extender machine_catalog_cli tests benchmarks tools e2e
	$(BIN)/ruff format --check machine_catalog extender machine_catalog_cli tests benchmarks tools e2e
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check machine_catalog extender machine_catalog_cli tests benchmarks tools e2e

format: $(STAMP)
	$(BIN)/ruff format machine_catalog extender machine_catalog_cli tests benchmarks tools e2e
	$(BIN)/ruff check --fix machine_catalog extender machine_catalog_cli tests benchmarks tools e2e

bench: $(STAMP)
	$(BIN)/python benchmarks/extender_latency.py
	$(BIN)/python benchmarks/fleet_simulation.py
	$(BIN)/python benchmarks/calibration_accuracy.py
	$(BIN)/python benchmarks/load_simulation.py

# Scheduling throughput on the real control plane (needs Go for the build; ~10-15 min):
# default-scheduler against the machine-catalog scheduler at 1,000 and 5,000 nodes.
bench-throughput: $(STAMP)
	bash e2e/controlplane/build.sh >/dev/null
	PYTHONPATH=e2e $(BIN)/python benchmarks/scheduling_throughput.py

# What any webhook served like ours adds to a pod create, beside ours (~10 min): the floor
# (parse the review, answer serve's recorded patch) at 1,000 and 5,000 nodes.
bench-webhook-floor: $(STAMP)
	bash e2e/controlplane/build.sh >/dev/null
	PYTHONPATH=e2e $(BIN)/python benchmarks/webhook_floor.py --json benchmarks/results/webhook_floor.json

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis

# The real control plane: builds etcd, kube-apiserver, kube-scheduler and
# kube-controller-manager from source once (e2e/controlplane, cached in
# ~/.cache/machine-catalog/controlplane), then runs the end-to-end suite against them.
controlplane:
	bash e2e/controlplane/build.sh

e2e: $(STAMP)
	bash e2e/controlplane/build.sh >/dev/null
	$(BIN)/python -m pytest -c e2e/pytest.ini e2e

# The scheduling and webhook tests (marker every_version) on the oldest Kubernetes the
# manifests support, built from e2e/controlplane/v1.34 into its own cache directory.
OLDEST_KUBERNETES := 1.34
e2e-oldest: $(STAMP)
	MC_KUBERNETES_VERSION=$(OLDEST_KUBERNETES) bash e2e/controlplane/build.sh >/dev/null
	MC_KUBERNETES_VERSION=$(OLDEST_KUBERNETES) $(BIN)/python -m pytest -c e2e/pytest.ini -m every_version e2e
