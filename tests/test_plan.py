"""`pdm-bench plan` (pdm.plan, pdm.probe): the workflow's jobs, each with a prediction from real measured steps.

No timing thresholds: the machine is shared and noisy. What is checked is the job list (against Snakemake's own
dry run), the arithmetic (totals, scaling with the budget and the batch), and that the probes run the real code paths
without the data.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, snakemake
from pdm.config import ConfigError, load_config
from pdm.plan import data_shape, measure, predict, totals, workflow_jobs
from pdm.probe import DataShape, ProbeSettings

# ci.yaml with every family of jobs: sweep points, guidance weights and training snapshots
CURVES = {"sweep": {"samplers": ["ddim"], "steps": [3, 5], "guidance_weights": [0.0, 1.0]},
          "train": {"snapshots": [0.5]}}


def _config(tmp_path: Path, name: str, override: dict | None = None, methods: dict | None = None) -> Path:
    raw = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    for key, value in (override or {}).items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    if methods is not None:
        raw["methods"] = methods
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def dry_run_jobs(tmp_path: Path, configfile: Path) -> Counter:
    """(rule, method, seed, point) of every job a from-scratch `snakemake --dry-run` lists, the `all` target left out."""
    run = snakemake(tmp_path / "work", "--dry-run", configfile=configfile, timeout=600)
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    jobs = Counter()
    for rule, block in re.findall(r"^(?:local)?rule (\w+):\n(.*?)(?:\n\n|\Z)", text, re.M | re.S):
        if rule == "all":
            continue
        found = dict(re.findall(r"(\w+)=([^,\s]+)", (re.findall(r"wildcards: (.*)", block) or [""])[0]))
        point = (f"{found['sampler']}-{found['steps']}" if "sampler" in found else
                 f"w{found['weight']}" if "weight" in found else found.get("fraction", ""))
        jobs[rule, found.get("method", ""), int(found["seed"]) if "seed" in found else None, point] += 1
    return jobs


@pytest.mark.parametrize("override", [None, CURVES], ids=["ci", "ci+sweep+guidance+snapshots"])
def test_every_workflow_job_is_planned(tmp_path, override):
    configfile = _config(tmp_path, "plan", override)
    planned = Counter((j.rule, j.method, j.seed, j.point) for j in workflow_jobs(load_config(configfile)))
    assert planned == dry_run_jobs(tmp_path, configfile)


SMALL_METHODS = {"pdm": {"num_prototypes": 4}, "ldm": {"autoencoder_channels": [16, 32], "latent_channels": 2,
                                                        "autoencoder_steps": 20, "autoencoder_batch_size": 16}}


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One in-process measurement of a two-method ci config (PDM and LDM, whose stage 1 is probed too)."""
    path = _config(tmp_path_factory.mktemp("plan"), "small", methods=SMALL_METHODS)
    cfg = load_config(path)
    shape = data_shape(cfg, None, None)
    probe = ProbeSettings(batch_size=4, warmup_steps=1, timed_steps=1, device="cpu")
    return cfg, shape, measure(yaml.safe_load(path.read_text()), cfg, shape, probe, isolate=False)


def test_totals_are_the_sum_of_the_rows(measured):
    cfg, shape, m = measured
    table = predict(cfg, shape, m)
    assert len(table) == len(workflow_jobs(cfg))
    assert (table["device_hours"] >= 0).all() and (table.loc[table["job"] != "report", "device_hours"] > 0).all()
    total = totals(table)
    assert total["device_hours"] == pytest.approx(table["device_hours"].sum())
    assert total["gpu_days"] == pytest.approx(total["device_hours"] / 24)
    assert total["peak_memory_gib"] == table["peak_memory_gib"].max()
    # the probe batch (4) is below ci's batch sizes (16): those rows say they are extrapolated
    assert table.set_index(["job", "method"]).loc[("train", "pdm"), "basis"].startswith("extrapolated (batch 4 -> 16)")


def test_training_time_scales_with_the_budget(measured):
    cfg, shape, m = measured
    import dataclasses

    doubled = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=2 * cfg.train.steps))
    once, twice = (predict(c, shape, m).query("job == 'train'").set_index("method")["device_hours"] for c in (cfg, doubled))
    for method in cfg.methods:
        t = m["training", method]
        per_step_hours = t["seconds_per_step"] * cfg.train.batch_size / t["batch_size"] / 3600
        assert twice[method] - once[method] == pytest.approx(cfg.train.steps * per_step_hours)
    other = lambda table: table.query("job != 'train'")["device_hours"].to_numpy()  # noqa: E731
    assert other(predict(doubled, shape, m)) == pytest.approx(other(predict(cfg, shape, m)))


def test_sampling_scales_with_samples_and_steps(measured):
    cfg, shape, m = measured
    import dataclasses

    sample = lambda c: predict(c, shape, m).query("job == 'sample'").set_index("method")["device_hours"]  # noqa: E731
    more = dataclasses.replace(cfg, sample=dataclasses.replace(cfg.sample, num_samples=3 * cfg.sample.num_samples))
    assert sample(more).to_numpy() == pytest.approx(3 * sample(cfg).to_numpy())
    longer = sample(cfg.with_sampling(cfg.sample.sampler, 2 * cfg.sample.steps))
    assert (longer > sample(cfg)).all()


def test_plan_without_the_data_needs_its_size(tmp_path):
    path = _config(tmp_path, "folder", {"data": {"dataset": "imagefolder", "root": str(tmp_path / "absent")}})
    cfg = load_config(path)
    with pytest.raises(ConfigError, match="--dataset-size N --num-classes K"):
        data_shape(cfg, None, None)
    assert data_shape(cfg, 1000, 10) == DataShape(1, 16, 10, 256 - round(256 * cfg.data.holdout_fraction),
                                                  round(256 * cfg.data.holdout_fraction))  # ci's max_images: 256


def test_cli_plan_in_isolated_processes(tmp_path):
    """The command a user runs: each probe in its own process, Markdown on stdout, the table as CSV."""
    path = _config(tmp_path, "cli", methods={"ddpm": {}, "ldm": SMALL_METHODS["ldm"]})
    out = tmp_path / "plan.csv"
    run = subprocess.run([sys.executable, "-m", "pdm.cli", "plan", "--config", str(path), "--probe-steps", "1",
                          "--probe-batch-size", "4", "--out", str(out)], capture_output=True, text=True, timeout=900,
                         cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    table = pd.read_csv(out)
    assert len(table) == len(workflow_jobs(load_config(path)))
    assert set(table["job"]) == {"stage1", "train", "sample", "evaluate", "refstats", "report"}
    total = re.search(r"Total: ([\d.e+-]+) device-hours", run.stdout)
    assert total and float(total[1]) == pytest.approx(table["device_hours"].sum(), rel=1e-3)
    assert "each in its own process" in run.stdout and "extrapolated" in run.stdout


def test_cli_refuses_cuda_without_a_gpu(tmp_path):
    path = _config(tmp_path, "gpu", {"device": "cuda"})
    run = subprocess.run([sys.executable, "-m", "pdm.cli", "plan", "--config", str(path)], capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    if run.returncode == 0:
        pytest.skip("this machine has a GPU")
    assert run.returncode == 2 and "--device cpu" in run.stderr
