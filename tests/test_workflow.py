"""The tiny config (config/ci.yaml) through the real Snakemake workflow, in a temporary directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(REPO / "config" / "ci.yaml"), "--cores", "2", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def test_ci_workflow_end_to_end(tmp_path):
    run = snakemake(tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = tmp_path / "results" / "ci"

    main = pd.read_csv(out / "tables" / "main.csv")
    per_seed = main[main["seed"] == "0"]
    assert sorted(per_seed["method"]) == ["ddpm", "ldm", "pdm", "rdm", "spdm"]
    assert per_seed["FID"].notna().all() and (per_seed["FID"] > 0).all()
    assert "mean ± std" in (out / "tables" / "main.md").read_text()
    assert (out / "tables" / "main.tex").read_text().lstrip().startswith("\\begin{tabular}")
    for plot in ("fid_comparison.png", "fid_vs_cost.png", "samples_pdm_seed0.png"):
        assert (out / "plots" / plot).stat().st_size > 1000

    record = json.loads((out / "metrics" / "pdm" / "seed0.json").read_text())
    assert record["extractor"].startswith("inception-v3") and len(record["extractor_weights_sha256"]) == 64
    assert record["prototype_sampling"] == "frequency" and record["prototype_bank_bytes"] > 0
    assert record["is_mean"] is not None or "logits" in record["is_missing"]
    rdm = json.loads((out / "metrics" / "rdm" / "seed0.json").read_text())
    assert rdm["encoder"].startswith("efficientnet_lite0") and rdm["external_memory_bytes"] > 18_000_000  # db + index + encoder
    ldm = json.loads((out / "metrics" / "ldm" / "seed0.json").read_text())
    assert ldm["stage1_seconds"] > 0 and ldm["stage1_weights_bytes"] > 0  # the decoder counts as LDM's weights
    for table in ("autoencoder", "retrieval"):
        assert (out / "tables" / f"{table}.md").exists()

    again = snakemake(tmp_path, "--dry-run")  # everything is up to date: nothing to re-run
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_workflow_rejects_bad_config_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "config" / "ci.yaml").read_text().replace("steps: 20", "steps: 0"))
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                          "--configfile", str(bad), "--cores", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "train.steps" in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()
