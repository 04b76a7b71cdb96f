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

# Which torch build: TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes the CPU wheel on an ordinary
# machine (empty: pip's own configuration, i.e. PyPI's CUDA build, or the local CPU build on these machines).
TORCH_INDEX_URL ?=
# FEDROBUST_CPU_ONLY=1 (what .ci/run sets) fails the install if CUDA packages land in the venv; unset, the guard is
# on where there is no NVIDIA driver (no nvidia-smi), off on a GPU machine.
ifeq ($(origin FEDROBUST_CPU_ONLY), undefined)
FEDROBUST_CPU_ONLY := $(if $(shell command -v nvidia-smi 2>/dev/null),0,1)
endif

# torch first with its exact pin (here the only spec that takes the local CPU build), then the rest.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL))
	$(PY) -m pip install --quiet -e '.[dev]'
	@if [ "$(FEDROBUST_CPU_ONLY)" = 1 ] && $(PY) -m pip list 2>/dev/null | grep -Ei '^(nvidia-|triton)'; then \
	  echo "error: CUDA packages (above) landed in $(VENV) on a CPU-only install (FEDROBUST_CPU_ONLY=1); pin" \
	       "torch==2.13.0 to the CPU build (TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu) or set" \
	       "FEDROBUST_CPU_ONLY=0 on a GPU machine" >&2; \
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
