"""The ci experiment through a real one-node SLURM cluster (snakemake-executor-plugin-slurm) equals the local run.

Not a dry run: workflow/scripts/slurm_local_cluster.py starts munged, slurmctld and slurmd on this machine (root,
Debian's `slurm-wlm` and `munge`), every job of config/ci.yaml goes through sbatch, and the tables are compared with
conftest's local `ci_run` (`--cores 2`). Skipped with the install command where SLURM or root is missing.
Slow: one more ci workflow, each job an sbatch submission (minutes); select with `pytest -m slurm`.
"""

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import REPO  # ci_run: the local ci run (conftest)

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

_spec = importlib.util.spec_from_file_location("slurm_local_cluster", REPO / "workflow" / "scripts" / "slurm_local_cluster.py")
slurm_local_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(slurm_local_cluster)

# The profile as users run it, with the overrides a CPU-only test node needs (docs/cluster.md): memory that fits the
# node (the profile's 16-32 GB may not), squeue for the job states (no accounting database), no account to guess
# (sacctmgr has none), a quick first status check. Partition: unset in the profile, so the cluster's default.
# On the command line, --default-resources and --set-resources replace the profile's lists as a whole.
TEST_CLUSTER_OVERRIDES = [
    "--jobs", "2",
    "--default-resources", "mem_mb=1000", "runtime=30",
    "--set-resources", "stage1:mem_mb=2000", "train:mem_mb=2000",
    "--slurm-status-command", "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks", "5",
    "--slurm-keep-successful-logs",
]
# efficiency.csv columns that are measurements of this run (wall clock, memory high-water mark), not results;
# every other column of it, and every column of main.csv, must be equal.
MEASURED_COLUMNS = ["stage-1 s", "train s", "device-hours", "train img/s", "sample img/s", "peak memory MiB"]


def _skip_reason() -> str | None:
    reason = slurm_local_cluster.missing_requirements()
    if reason is None and importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        reason = 'snakemake-executor-plugin-slurm not installed: pip install -e ".[slurm]"'
    return reason


@pytest.fixture(scope="session")
def slurm_cluster():
    """A one-node cluster for the session; its daemons are stopped (by pid) however the tests end."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # under /tmp itself: munged wants its socket's folder reachable by every user, pytest's tmp folders are 0700
    state_dir = Path(tempfile.mkdtemp(prefix="pdm-slurm-"))
    try:
        yield slurm_local_cluster.start(state_dir)
    finally:
        slurm_local_cluster.stop(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_ci_run(slurm_cluster, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("ci-slurm")
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(REPO / "config" / "ci.yaml"),
               "--workflow-profile", str(REPO / "workflow" / "profiles" / "slurm"), "--executor", "slurm",
               *TEST_CLUSTER_OVERRIDES]
    started = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env={**slurm_cluster, "HF_HUB_OFFLINE": "1"},
                         timeout=3600)
    print(f"\nci workflow through SLURM: {time.perf_counter() - started:.0f} s")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return workdir


def test_every_job_ran_as_a_slurm_job(slurm_ci_run, slurm_cluster):
    # the plugin writes one log per sbatch job, named by its SLURM job id; kept (--slurm-keep-successful-logs)
    logs = sorted((slurm_ci_run / ".snakemake" / "slurm_logs").rglob("*.log"))
    rules = {path.relative_to(slurm_ci_run / ".snakemake" / "slurm_logs").parts[0] for path in logs}
    assert {"rule_train", "rule_sample", "rule_evaluate", "rule_refstats", "rule_report"} <= rules, rules
    job_ids = {int(path.stem) for path in logs}
    assert len(job_ids) == len(logs)
    # squeue still lists the jobs that ended in the last MinJobAge (600 s): all of them completed
    listed = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True,
                            env=slurm_cluster, check=True).stdout.split("\n")
    states = {int(line.split()[0]): line.split()[1] for line in listed if line.strip()}
    assert states and set(states) <= job_ids and set(states.values()) == {"COMPLETED"}, states


def test_slurm_table_equals_local_table(slurm_ci_run, ci_run):
    slurm_tables, local_tables = slurm_ci_run / "results" / "ci" / "tables", ci_run / "results" / "ci" / "tables"
    # the main table (FID, KID, their intervals, ΔFID, clean-FID, prototypes used, params, status): byte for byte
    assert (slurm_tables / "main.csv").read_bytes() == (local_tables / "main.csv").read_bytes(), (
        (slurm_tables / "main.csv").read_text() + "\n---- local ----\n" + (local_tables / "main.csv").read_text())
    slurm, local = (pd.read_csv(t / "efficiency.csv") for t in (slurm_tables, local_tables))
    assert set(MEASURED_COLUMNS) < set(local.columns)
    pd.testing.assert_frame_equal(slurm.drop(columns=MEASURED_COLUMNS), local.drop(columns=MEASURED_COLUMNS),
                                  check_exact=True)


def test_slurm_samples_equal_local_samples(slurm_ci_run, ci_run):
    local_samples = sorted((ci_run / "results" / "ci" / "samples").glob("*/seed*/samples.npz"))
    assert local_samples
    for local_path in local_samples:
        slurm_path = slurm_ci_run / local_path.relative_to(ci_run)
        with np.load(local_path) as local, np.load(slurm_path) as slurm:
            assert sorted(local.files) == sorted(slurm.files)
            for name in local.files:
                assert np.array_equal(local[name], slurm[name]), f"{slurm_path}: {name} differs from the local run"
