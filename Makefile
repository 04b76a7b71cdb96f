# fedrobust: `make run` (main job) and `make test` (ruff + pytest). Both create .venv if needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Data root: an explicit FEDROBUST_DATA_ROOT wins; else the shared MedMNIST folder when present.
SHARED_DATA := $(abspath ../shared/data/medmnist)
ifeq ($(origin FEDROBUST_DATA_ROOT), undefined)
ifneq ($(wildcard $(SHARED_DATA)/*.npz),)
export FEDROBUST_DATA_ROOT := $(SHARED_DATA)
endif
endif
# Segmentation root (Kvasir-SEG under it): the same rule with FEDROBUST_SEG_ROOT.
SHARED_SEG := $(abspath ../shared/data/segmentation)
ifeq ($(origin FEDROBUST_SEG_ROOT), undefined)
ifneq ($(wildcard $(SHARED_SEG)/kvasir-seg/images),)
export FEDROBUST_SEG_ROOT := $(SHARED_SEG)
endif
endif
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1

.PHONY: install run test lint bench clean flwr-config

install: $(STAMP)

# torch first with its exact pin (the only spec that takes the local CPU build), then the rest.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	@if $(PY) -m pip list 2>/dev/null | grep -Ei '^(nvidia-|triton)'; then \
	  echo "error: CUDA packages (above) landed in $(VENV); torch must be pinned to the CPU build 2.13.0" >&2; \
	  exit 1; fi
	@touch $(STAMP)

run: install
	$(VENV)/bin/fedrobust simulate --config configs/quickstart.toml

# Keep [tool.flwr.app.config] in pyproject.toml equal to configs/quickstart.toml.
flwr-config: install
	$(PY) tools/sync_flwr_config.py

lint: install
	$(VENV)/bin/ruff check .

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

bench: install
	$(PY) benchmarks/centralized_accuracy.py
	$(PY) benchmarks/augment_overhead.py

clean:
	rm -rf runs .pytest_cache
