"""Curves without retraining (issue 7, item 6): config inheritance, the sweep's identities and checks, and a tiny
sweep + training curve through the real workflow over the models of a finished ci-like run, with no training job."""

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from pdm.config import ConfigError, load_config, load_raw, resolve_config
from pdm.identity import all_identities, training_differences, training_identity
from pdm.sweep import network_evaluations, snapshot_name


def changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if a[k] != b[k]}


# --- config inheritance --------------------------------------------------------------------------------------------
def test_base_merges_mappings_and_replaces_lists(tmp_path):
    (tmp_path / "parent.yaml").write_text(yaml.safe_dump(
        {"experiment": "p", "seeds": [0, 1], "data": {"dataset": "digits", "max_images": 64},
         "train": {"steps": 20, "lr": 0.001}, "methods": {"ddpm": {}}}))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../parent.yaml\nexperiment: c\nseeds: [2]\ntrain: {lr: 0.002}\n")
    (tmp_path / "grandchild.yaml").write_text("base: sub/child.yaml\nexperiment: g\n")
    raw = load_raw(tmp_path / "grandchild.yaml")
    assert raw["experiment"] == "g" and raw["seeds"] == [2] and "base" not in raw  # lists are replaced
    assert raw["train"] == {"steps": 20, "lr": 0.002} and raw["data"]["max_images"] == 64  # mappings merge


def test_base_errors_name_the_problem(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nexperiment: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nexperiment: b\n")
    with pytest.raises(ConfigError, match="inherits from itself"):
        load_raw(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml is not a file"):
        load_raw(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="was not merged in"):
        resolve_config({"base": "default.yaml", "experiment": "x"})


def test_sweep_default_shares_the_default_training_identity():
    default, sweep = load_config(REPO / "config" / "default.yaml"), load_config(REPO / "config" / "sweep_default.yaml")
    assert sweep.experiment == "sweep_default" and sweep.sweep.models_from == "default" and not sweep.trains
    for method in default.methods:
        assert training_identity(sweep, method, 0) == training_identity(default, method, 0)


# --- sweep settings and identities ---------------------------------------------------------------------------------
def test_sweep_config_checks(make_cfg):
    assert not make_cfg().sweep.enabled and make_cfg().trains  # no sweep by default
    with pytest.raises(ConfigError, match="sweep.steps is empty"):
        make_cfg({"sweep": {"samplers": ["ddim"]}})
    with pytest.raises(ConfigError, match="exceed .*100 training timesteps"):  # ci trains 100 timesteps
        make_cfg({"sweep": {"samplers": ["ddim"], "steps": [10, 250]}})
    with pytest.raises(ConfigError, match="'pmd' is not one of"):
        make_cfg({"sweep": {"samplers": ["ddim"], "steps": [10], "methods": ["pmd"]}})
    with pytest.raises(ConfigError, match="nothing to do"):
        make_cfg({"sweep": {"models_from": "default"}})
    with pytest.raises(ConfigError, match="sweep.samplers.0"):
        make_cfg({"sweep": {"samplers": ["euler"], "steps": [10]}})
    with pytest.raises(ConfigError, match="train.snapshots"):
        make_cfg({"train": {"snapshots": [1.0]}})  # the final weights are not a snapshot


def test_sweep_points_and_snapshots_never_retrain(make_cfg):
    base = make_cfg()
    ids = all_identities(base, "pdm", 0)
    point = base.with_sampling("dpmpp", 7)
    assert point.sample.sampler == "dpmpp" and point.resolved["sample"]["steps"] == 7 and base.sample.steps == 5
    assert changed(ids, all_identities(point, "pdm", 0)) == {"sample_id", "eval_id", "comparison_id"}
    assert changed(ids, all_identities(base, "pdm", 0, snapshot=0.5)) == {"sample_id", "eval_id"}
    # the snapshot fractions change no identity at all: the final weights do not depend on them
    assert changed(ids, all_identities(make_cfg({"train": {"snapshots": [0.25, 0.5]}}), "pdm", 0)) == set()
    assert changed(ids, all_identities(make_cfg({"sweep": {"samplers": ["ddim"], "steps": [3]}}), "pdm", 0)) == set()


def test_a_guidance_weight_is_a_sampling_point(make_cfg):
    """sweep.guidance_weights re-samples guided methods only: a point changes the sampling identity, never training."""
    base = make_cfg()
    ids = all_identities(base, "protodiffusion", 0)
    point = base.with_method_options("protodiffusion", guidance_weight=3.0)
    assert point.method_options("protodiffusion")["guidance_weight"] == 3.0
    assert base.method_options("protodiffusion")["guidance_weight"] == 1.8  # the original is unchanged
    assert changed(ids, all_identities(point, "protodiffusion", 0)) == {"sample_id", "eval_id"}
    assert make_cfg({"sweep": {"guidance_weights": [0, 1.8]}}).guidance_methods == ("protodiffusion",)
    with pytest.raises(ConfigError, match="none of the swept methods .*guidance_weight"):
        make_cfg({"sweep": {"guidance_weights": [1.0], "methods": ["ddpm", "pdm"]}})
    assert network_evaluations(point, "protodiffusion", "ddim", 5) == 10
    assert network_evaluations(point.with_method_options("protodiffusion", guidance_weight=0.0),
                               "protodiffusion", "ddim", 5) == 5


def test_training_differences_name_the_setting(make_cfg):
    a, b = make_cfg(), make_cfg({"train": {"lr": 0.0003}, "methods": {"pdm": {"num_prototypes": 5}}})
    assert training_differences(a, b, "pdm", 0) == [("methods.pdm.num_prototypes", 4, 5), ("train.lr", 0.0002, 0.0003)]
    assert training_differences(a, make_cfg({"sample": {"steps": 9}}), "pdm", 0) == []


def test_network_evaluations_per_image(make_cfg):
    cfg = make_cfg()
    for sampler in ("ddim", "ddpm", "dpmpp"):  # one U-Net call per step for each (DPM-Solver++ 2M is multistep)
        assert network_evaluations(cfg, "pdm", sampler, 10) == 10
    assert snapshot_name(0.5) == "0.5" and snapshot_name(0.25) == "0.25"


# --- the workflow: a sweep over another experiment's models, nothing retrained --------------------------------------
def _snakemake(workdir, configfile, *extra):
    from conftest import snakemake

    return snakemake(workdir, *extra, configfile=configfile)


@pytest.fixture(scope="module")
def trained(ci_run):
    """The session's finished ci run (conftest), with a snapshot of DDPM at half the budget made by hand (the
    trainer's part of train.snapshots writes the same layout: the files of weights/ plus snapshot.json)."""
    model = ci_run / "results" / "ci" / "models" / "ddpm" / "seed0"
    train = json.loads((model / "train.json").read_text())
    shutil.copytree(model / "weights", model / "snapshots" / "0.5", dirs_exist_ok=True)
    (model / "snapshots" / "0.5" / "snapshot.json").write_text(json.dumps(
        {"step": train["steps_done"] // 2, "fraction": 0.5, "train_id": train["train_id"]}))
    return ci_run


def _sweep_config(workdir: Path, name: str, **extra) -> Path:
    raw = {"base": str(REPO / "config" / "ci.yaml"), "experiment": "sweep", "train": {"snapshots": [0.5]},
           "sweep": {"models_from": "ci", "methods": ["ddpm"], "samplers": ["ddim", "dpmpp"], "steps": [3, 6]}}
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value}
    (workdir / name).write_text(yaml.safe_dump(raw))
    return workdir / name


@pytest.mark.workflow
def test_sweep_over_another_experiments_models_trains_nothing(trained):
    from test_workflow import planned_jobs

    config = _sweep_config(trained, "sweep.yaml")
    plan = planned_jobs(_snakemake(trained, config, "--dry-run"))
    # the models and the reference statistics are the ci run's: no stage1, train, sample, evaluate or refstats job
    assert plan == {"sample_sweep": 4, "evaluate_sweep": 4, "sweep_report": 1, "sample_snapshot": 2,
                    "evaluate_snapshot": 2, "training_curve": 1, "all": 1}
    run = _snakemake(trained, config)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    out = trained / "results" / "sweep"
    sweep = pd.read_csv(out / "tables" / "sweep.csv", dtype={"seed": str})
    assert sorted(zip(sweep["sampler"], sweep["steps"])) == [("ddim", 3), ("ddim", 6), ("dpmpp", 3), ("dpmpp", 6)]
    assert (sweep["method"] == "ddpm").all() and (sweep["NFE"] == sweep["steps"]).all()
    assert all(math.isfinite(v) and v > 0 for v in sweep["FID"]) and (sweep["FID low"] <= sweep["FID high"]).all()
    assert "NFE" in (out / "tables" / "sweep.md").read_text()
    curve = pd.read_csv(out / "tables" / "training_curve.csv", dtype={"seed": str})
    assert list(curve["fraction"]) == [0.5, 1.0] and list(curve["step"]) == [10, 20]
    assert curve["FID"].notna().all()
    for plot in ("fid_vs_nfe.png", "fid_over_training.png"):
        assert (out / "plots" / plot).stat().st_size > 1000
    record = json.loads((out / "sweep" / "metrics" / "ddpm" / "seed0" / "dpmpp-6.json").read_text())
    assert record["sampler"] == "dpmpp" and record["sampling_steps"] == 6 and record["nfe"] == 6
    ci_record = json.loads((trained / "results/ci/metrics/ddpm/seed0.json").read_text())
    assert record["train_id"] == ci_record["train_id"] and record["refstats_id"] == ci_record["refstats_id"]
    assert not (out / "models").exists() and not (out / "refstats").exists()  # nothing trained or recomputed
    assert planned_jobs(_snakemake(trained, config, "--dry-run")) == {}


@pytest.mark.workflow
def test_guidance_sweep_over_another_experiments_models_trains_nothing(trained):
    from test_workflow import planned_jobs

    config = _sweep_config(trained, "guidance.yaml", train={"snapshots": []},
                           sweep={"methods": ["protodiffusion"], "samplers": [], "steps": [], "guidance_weights": [0, 2]})
    plan = planned_jobs(_snakemake(trained, config, "--dry-run"))
    assert plan == {"sample_guidance": 2, "evaluate_guidance": 2, "guidance_report": 1, "all": 1}
    run = _snakemake(trained, config)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = trained / "results" / "sweep"
    table = pd.read_csv(out / "tables" / "guidance.csv", dtype={"seed": str})
    assert list(table["w"]) == [0.0, 2.0] and list(table["NFE"]) == [5, 10]  # ci samples ddim 5 steps; guided: x2
    # the guidance weight reaches the samples (it could not while ci's one-channel GroupNorm groups cancelled the
    # class embedding: README, "GroupNorm groups of one channel")
    assert all(math.isfinite(v) and v > 0 for v in table["FID"]) and table["FID"].nunique() == 2
    assert (out / "plots" / "fid_vs_guidance.png").stat().st_size > 1000
    record = json.loads((out / "guidance" / "metrics" / "protodiffusion" / "seed0" / "w2.json").read_text())
    ci_record = json.loads((trained / "results/ci/metrics/protodiffusion/seed0.json").read_text())
    assert record["guidance_weight"] == 2.0 and ci_record["guidance_weight"] == 1.8
    assert record["train_id"] == ci_record["train_id"] and record["sample_id"] != ci_record["sample_id"]


@pytest.mark.workflow
def test_sweep_refuses_models_of_other_settings_before_any_job(trained):
    run = _snakemake(trained, _sweep_config(trained, "other-lr.yaml", train={"lr": 0.0003}), "--dry-run")
    text = run.stdout + run.stderr
    assert run.returncode != 0 and "Traceback" not in text
    assert "train.lr: trained with 0.0002, this config has 0.0003" in text and "base:" in text

    run = _snakemake(trained, _sweep_config(trained, "nothing.yaml", sweep={"models_from": "nothing"}), "--dry-run")
    text = run.stdout + run.stderr
    assert run.returncode != 0 and "results/nothing/models/ddpm/seed0 has no trained model" in text
    assert "run experiment 'nothing' first" in text

    run = _snakemake(trained, _sweep_config(trained, "snap.yaml", train={"snapshots": [0.25]}), "--dry-run")
    assert run.returncode != 0 and "no snapshot at 0.25" in run.stdout + run.stderr


@pytest.mark.workflow
def test_a_sweep_inside_a_training_experiment_follows_its_training(tmp_path):
    """Without models_from the sweep and the training curve use the experiment's own models (after its training)."""
    from test_workflow import planned_jobs

    run = _snakemake(tmp_path, REPO / "config" / "ci.yaml", "--dry-run", "--config",
                     "sweep={samplers: [ddim, ddpm], steps: [3], methods: [pdm]}", "train={snapshots: [0.5]}")
    plan = planned_jobs(run)
    methods = len(yaml.safe_load((REPO / "config" / "ci.yaml").read_text())["methods"])  # one seed each
    assert plan["train"] == methods and plan["sample_sweep"] == plan["evaluate_sweep"] == 2
    assert plan["sweep_report"] == 1
    # the snapshot is the train job's output; the final point of the curve is the main evaluation's record
    assert plan["sample_snapshot"] == plan["evaluate_snapshot"] == methods and plan["training_curve"] == 1
    assert "results/ci/models/pdm/seed0/snapshots/0.5" in run.stdout + run.stderr


def test_sweep_table_summarises_seeds_and_keeps_failed_runs(tmp_path):
    """Several seeds: a 'mean (2 seeds)' row per point with a t interval; a failed run is a row of its own."""
    import numpy as np

    from pdm.curves import sweep_report

    rng = np.random.default_rng(0)
    paths = []
    for method in ("pdm", "ddpm"):
        for seed in (0, 1, 2):
            for steps in (5, 10):
                failed = method == "ddpm" and seed == 2
                fid = 100.0 / steps + seed
                record = {"method": method, "seed": seed, "sampler": "ddim", "sampling_steps": steps, "nfe": steps,
                          "status": "failed" if failed else "ok", "refstats_id": "r", "bootstrap_samples": 20,
                          "num_samples": 16, "num_real": 16, "extractor": "inception", "cpu_model": "cpu"}
                if not failed:
                    record.update(fid=fid, fid_bootstrap=list(fid + rng.normal(size=20)), kid_mean=0.1,
                                  kid_bootstrap=list(0.1 + 0.01 * rng.normal(size=20)), clean_fid=fid,
                                  sampling_images_per_second=10.0)
                paths.append(tmp_path / f"{method}-{seed}-{steps}.json")
                paths[-1].write_text(json.dumps(record))
    table = sweep_report(paths, tmp_path / "tables", tmp_path / "plots")
    means = table[table["seed"].str.startswith("mean")]
    assert list(means["seed"]) == ["mean (3 seeds)"] * 2 + ["mean (2 seeds)"] * 2
    pdm5 = means[(means["method"] == "pdm") & (means["steps"] == 5)].iloc[0]
    assert pdm5["FID"] == pytest.approx(21.0) and pdm5["FID low"] < 21.0 < pdm5["FID high"]
    assert (table["status"] == "failed").sum() == 2 and (tmp_path / "plots" / "fid_vs_nfe.png").stat().st_size > 1000
    assert "mean (2 seeds)" in (tmp_path / "tables" / "sweep.md").read_text()
