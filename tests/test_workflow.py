"""The tiny config (config/ci.yaml) through the real Snakemake workflow, in temporary directories.

One complete run (conftest's `ci_run`, shared with tests/test_sweep.py) is used by the tests of this module: the end-to-end checks, the re-run transcript (a config edit
re-runs exactly the jobs whose identity it changes) and the kill test (a killed workflow, re-run, gives the same
tables).
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, snakemake  # ci_run: one ci run per session (conftest)

pytestmark = pytest.mark.workflow


def _ci_methods():
    import yaml

    from pdm.methods.registry import get_method_class

    names = sorted(yaml.safe_load((REPO / "config" / "ci.yaml").read_text())["methods"])
    classes = [get_method_class(n) for n in names]
    return names, sum(c.has_stage1 for c in classes), sum(c.has_prototypes for c in classes)


CI_METHODS, CI_STAGE1, CI_PROTOTYPE = _ci_methods()  # the ci config's methods; with stage 1; with diagnostics
N = len(CI_METHODS)


def planned_jobs(run: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: count} from a dry run's job stats table ({} when there is nothing to do)."""
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def planned_seeds(run: subprocess.CompletedProcess, rule: str) -> set[str]:
    text = run.stdout + run.stderr
    blocks = re.findall(rf"^rule {rule}:\n(.*?)(?:\n\n|\Z)", text, re.M | re.S)
    return {seed for block in blocks for seed in re.findall(r"seed=(\d+)", block)}


def test_ci_workflow_end_to_end(ci_run):
    out = ci_run / "results" / "ci"
    main = pd.read_csv(out / "tables" / "main.csv", dtype={"seed": str})
    per_seed = main[main["seed"] == "0"]
    assert sorted(per_seed["method"]) == CI_METHODS
    assert per_seed["FID"].notna().all() and (per_seed["FID"] > 0).all() and (per_seed["status"] == "ok").all()
    main_md = (out / "tables" / "main.md").read_text()
    assert "1 seed (bootstrap)" in main_md and "±" not in main_md and "ΔFID vs ddpm" in main_md  # issue 7
    assert {"FID low", "FID high", "KID low", "KID high", "ΔFID vs ddpm", "excludes 0"} <= set(main.columns)
    assert (out / "tables" / "main.tex").read_text().lstrip().startswith("\\begin{tabular}")
    for plot in ("fid_comparison.png", "fid_vs_cost.png", "samples_pdm_seed0.png"):
        assert (out / "plots" / plot).stat().st_size > 1000
    # prototype diagnostics for the methods whose class has prototypes (learnt from the class, not named)
    assert sorted(p.name for p in (out / "diagnostics").iterdir()) == ["pdm", "spdm"]
    for method, k in (("pdm", 4), ("spdm", 10)):  # ci: pdm K = 4, s-PDM K = the 10 classes
        diagnostics = json.loads((out / "diagnostics" / method / "seed0" / "diagnostics.json").read_text())
        assert len(diagnostics["usage_counts"]) == diagnostics["num_prototypes"] == k
        assert all((out / "diagnostics" / method / "seed0" / p).stat().st_size > 1000 for p in ("usage.png", "entropy.png", "pca.png"))

    record = json.loads((out / "metrics" / "pdm" / "seed0.json").read_text())
    assert record["extractor"].startswith("inception-v3") and len(record["extractor_tensors_sha256"]) == 64
    assert record["prototype_sampling"] == "frequency" and record["prototype_bank_bytes"] > 0
    assert record["is_mean"] is not None or "logits" in record["is_missing"]
    assert record["record_format"] >= 2 and record["git_commit"] and record["pdm_bench_version"]
    assert record["train_versions"]["torch"] and record["metric_versions"]["torch_fidelity"]  # both kept
    assert {"train_id", "sample_id", "eval_id", "refstats_id", "comparison_id"} <= record.keys()
    assert record["bootstrap_samples"] == len(record["fid_bootstrap"]) == len(record["kid_bootstrap"]) == 200
    assert record["fid_ci_low"] <= record["fid"] <= record["fid_ci_high"]
    assert record["evaluation_device"] == "cpu" and record["sampling_device"] == "cpu"
    rdm = json.loads((out / "metrics" / "rdm" / "seed0.json").read_text())
    assert rdm["encoder"].startswith("efficientnet_lite0") and rdm["external_memory_bytes"] > 18_000_000  # db + index + encoder
    ldm = json.loads((out / "metrics" / "ldm" / "seed0.json").read_text())
    assert ldm["stage1_seconds"] > 0 and ldm["stage1_weights_bytes"] > 0  # the decoder counts as LDM's weights
    for table in ("autoencoder", "retrieval"):
        assert (out / "tables" / f"{table}.md").exists()
    # progress folders are gone once their job has finished
    assert not list(out.glob("samples/*/seed*/chunks")) and not list(out.glob("metrics/*/*.work"))
    assert not list(out.glob("models/*/seed*/checkpoint")) and not list(out.glob("refstats/*.work"))


def test_config_edits_rerun_exactly_what_they_change(ci_run):
    """The transcript of issue 6: identities as params make Snakemake re-run exactly the changed jobs."""
    added_seed = snakemake(ci_run, "--dry-run", "--config", "seeds=[0,1]")
    assert planned_jobs(added_seed) == {"stage1": CI_STAGE1, "train": N, "sample": N, "evaluate": N,
                                        "diagnostics": CI_PROTOTYPE, "report": 1, "all": 1}
    assert planned_seeds(added_seed, "train") == planned_seeds(added_seed, "evaluate") == {"1"}

    sampling = snakemake(ci_run, "--dry-run", "--config", "sample={steps: 7}")
    assert planned_jobs(sampling) == {"sample": N, "evaluate": N, "report": 1, "all": 1}  # no training

    training = snakemake(ci_run, "--dry-run", "--config", "train={lr: 0.0003}")
    assert planned_jobs(training) == {"train": N, "sample": N, "evaluate": N, "diagnostics": CI_PROTOTYPE,
                                      "report": 1, "all": 1}

    scoring = snakemake(ci_run, "--dry-run", "--config", "eval={num_real: 12}")
    assert planned_jobs(scoring) == {"refstats": 1, "evaluate": N, "report": 1, "all": 1}

    bootstrap = snakemake(ci_run, "--dry-run", "--config", "eval={bootstrap_samples: 50}")
    assert planned_jobs(bootstrap) == {"evaluate": N, "report": 1, "all": 1}  # replicates are evaluation output

    reporting = snakemake(ci_run, "--dry-run", "--config", "report={confidence: 0.9}")
    assert planned_jobs(reporting) == {"report": 1, "all": 1}  # report settings are in no job's identity

    assert planned_jobs(snakemake(ci_run, "--dry-run")) == {}  # no change: nothing to do


def test_killed_workflow_reruns_to_identical_tables(ci_run, tmp_path):
    """SIGKILL the whole running workflow at a random moment, run snakemake again: the same tables, bitwise."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
               "--configfile", str(REPO / "config" / "ci.yaml"), "--cores", "2"]
    job = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    delay = random.Random(time.time_ns()).uniform(12, 45)  # DAG build takes ~8 s; the whole run ~60 s
    try:
        job.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert job.returncode == -signal.SIGKILL, f"the workflow finished before the kill at {delay:.0f} s"
    assert not (tmp_path / "results" / "ci" / "tables" / "main.csv").exists()

    assert subprocess.run([*command, "--unlock"], capture_output=True, timeout=300).returncode == 0
    rerun = snakemake(tmp_path)  # profiles/default: --rerun-incomplete
    assert rerun.returncode == 0, f"killed at {delay:.0f} s: " + rerun.stdout[-3000:] + rerun.stderr[-3000:]
    for table in ("main.csv", "autoencoder.csv", "retrieval.csv"):
        fresh = (ci_run / "results" / "ci" / "tables" / table).read_bytes()
        again = (tmp_path / "results" / "ci" / "tables" / table).read_bytes()
        if table == "main.csv":
            assert fresh == again, f"main.csv differs after a kill at {delay:.0f} s"
        else:  # stage-1 tables carry timings: compare the measured qualities only
            a, b = (pd.read_csv(p) for p in (ci_run / "results/ci/tables" / table, tmp_path / "results/ci/tables" / table))
            quality = [c for c in a.columns if not c.endswith(" s")]
            pd.testing.assert_frame_equal(a[quality], b[quality])


def test_workflow_rejects_bad_config_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "config" / "ci.yaml").read_text().replace("steps: 20", "steps: 0"))
    run = snakemake(tmp_path, configfile=bad, timeout=300)
    assert run.returncode != 0
    assert "train.steps" in run.stdout + run.stderr and "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()


def test_config_overrides_merge_onto_the_default(tmp_path):
    """`--config key=value` without --configfile keeps config/default.yaml and changes only that key."""
    run = snakemake(tmp_path, "--dry-run", "--config", "seeds=[0,1,2]", configfile=None, timeout=300)
    jobs = planned_jobs(run)
    from pdm.config import load_config
    from pdm.methods.registry import get_method_class

    methods = load_config(REPO / "config" / "default.yaml").methods  # every default method x the three seeds
    assert jobs["train"] == 3 * len(methods)
    assert jobs["stage1"] == 3 * sum(get_method_class(m).has_stage1 for m in methods)
    assert "results/default/" in run.stdout + run.stderr
