"""The paper configs (config/paper/): each validates with no data present, carries the reference code's per-dataset
settings (github.com/b-faye/pdm), and all.yaml plans every dataset x method x seed in one workflow (a dry run)."""

import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from pdm.config import ConfigError, load_config
from pdm.data import manifest_path
from pdm.experiments import experiment_configs
from pdm.methods.registry import METHODS, get_method_class
from pdm.preflight import preflight

PAPER = REPO / "config" / "paper"
# dataset: (resolution, PDM's K, s-PDM's K = classes or Male values, images the reference generates and scores)
REFERENCE = {
    "cifar10": (32, 15, 10, 50000),
    "stl10": (96, 10, 10, 23000),
    "eurosat": (64, 10, 10, 27000),
    "celeba": (176, 2, 2, 20000),
    "tinyimagenet": (64, 200, 200, 50000),
}
PAPER_METHODS = {"pdm", "spdm", "ddpm", "cddpm", "protodiffusion", "ldm", "rdm"}  # the registry less our ablation
SEEDS = 3


@pytest.fixture(autouse=True)
def hub_reachable(monkeypatch):
    """As on a machine that can reach the Hugging Face hub: RDM's CLIP 'openai' weights (the reference's encoder) are
    then fetched when its encoder is built, so validation passes without touching the network. With HF_HUB_OFFLINE=1
    and no local weights the config is refused, naming methods.rdm.clip_weights (tests/test_rdm.py)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # for the snakemake subprocesses
    # in this process huggingface_hub read the variable when first imported (conftest sets it): ask it no more
    monkeypatch.setattr("baselines.retrieval.hub_offline", lambda: False)


def dry_run(workdir, *extra: str, configfile) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(configfile), "--cores", "2", "--dry-run", *extra]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=dict(os.environ), timeout=300)


@pytest.mark.parametrize("dataset", sorted(REFERENCE))
def test_paper_config_has_the_reference_settings(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data/ does not exist here: the checks must leave the data to its prepare job
    cfg = load_config(PAPER / f"{dataset}.yaml")
    preflight(cfg, local=False)
    assert not manifest_path(cfg.data).exists()
    resolution, k_pdm, k_spdm, count = REFERENCE[dataset]
    assert (cfg.data.dataset, cfg.data.resolution, cfg.data.channels) == (dataset, resolution, 3)
    assert cfg.model.block_out_channels == (128, 256, 256, 256)
    assert cfg.methods["pdm"]["num_prototypes"] == k_pdm
    assert cfg.methods["spdm"]["num_prototypes"] == k_spdm
    assert cfg.diffusion_for("pdm").num_train_timesteps == 2000  # DDPMScheduler(2000) in PDM, 1000 in s-PDM
    assert cfg.diffusion_for("spdm").num_train_timesteps == 1000
    assert set(cfg.methods) == PAPER_METHODS
    assert cfg.seeds == tuple(range(SEEDS)) and cfg.device == "cuda"
    assert cfg.sample.num_samples == cfg.eval.num_real == min(count, 50000)
    assert (cfg.sample.sampler, cfg.sample.steps) == ("ddpm", 1000)
    # 500 epochs of full batches of 64 of the reference's images; lr 1e-4, 500 warm-up steps: one budget for all
    assert (cfg.train.budget, cfg.train.steps, cfg.train.batch_size) == ("steps", 500 * (count // 64), 64)
    assert (cfg.train.lr, cfg.train.warmup_steps) == (1e-4, 500)
    assert all(cfg.train_for(m).batch_size == 64 and cfg.train_for(m).steps == cfg.train.steps for m in cfg.methods)


def test_every_paper_method_is_registered():
    assert PAPER_METHODS == {name for name in METHODS if name != "pdm_balanced"}
    assert all(get_method_class(name) for name in PAPER_METHODS)


def test_all_yaml_lists_every_dataset_once():
    experiments = experiment_configs(yaml.safe_load((PAPER / "all.yaml").read_text()), [PAPER])
    assert sorted(cfg["data"]["dataset"] for cfg in experiments.values()) == sorted(REFERENCE)
    assert sorted(experiments) == sorted(f"paper_{name}" for name in REFERENCE)


def test_experiment_list_errors_name_the_fix(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"experiment": "same", "data": {"dataset": "digits"}, "methods": {"ddpm": {}}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({"experiment": "same", "data": {"dataset": "digits"}, "methods": {"pdm": {}}}))
    with pytest.raises(ConfigError, match="both write results/same/.*distinct name"):
        experiment_configs({"experiments": ["a.yaml", "b.yaml"]}, [tmp_path])
    with pytest.raises(ConfigError, match="missing.yaml is not a file"):
        experiment_configs({"experiments": ["missing.yaml"]}, [tmp_path])
    with pytest.raises(ConfigError, match="non-empty list"):
        experiment_configs({"experiments": "a.yaml"}, [tmp_path])
    # keys beside `experiments` apply to every experiment
    shared = experiment_configs({"experiments": ["a.yaml"], "seeds": [4]}, [tmp_path])
    assert shared["same"]["seeds"] == [4]


def _job_counts(run: subprocess.CompletedProcess) -> dict[str, int]:
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-3000:]
    table = text.split("Job stats:", 1)[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.MULTILINE) if m[1] != "total"}


def _slurm_profile() -> list[str]:
    """The SLURM profile's flags where its executor plugin is installed (it is where the paper runs), else none."""
    pytest.importorskip("snakemake_executor_plugin_slurm", reason="pip install -e '.[slurm]' for the SLURM dry run")
    profile = next(p for p in (REPO / "workflow" / "profiles" / "slurm", REPO / "profiles" / "slurm") if p.is_dir())
    return ["--workflow-profile", str(profile)]


def test_all_yaml_dry_run_plans_every_dataset_method_and_seed(tmp_path):
    """The whole paper in one DAG, through the SLURM profile, with no data present: 5 preparations, then per dataset
    one set of reference statistics and per method and seed one training, sampling and scoring job (~15 s)."""
    run = dry_run(tmp_path, *_slurm_profile(), configfile=PAPER / "all.yaml")
    counts = _job_counts(run)
    assert counts.pop("prepare_data") == len(REFERENCE)
    assert counts.pop("all") == 1
    assert counts.pop("paper_tables") == 1  # the dataset x method tables across the five (workflow/rules/paper.smk)
    runs = len(PAPER_METHODS) * SEEDS
    stage1 = sum(get_method_class(m).has_stage1 for m in PAPER_METHODS) * SEEDS
    prototypes = sum(get_method_class(m).has_prototypes for m in PAPER_METHODS) * SEEDS
    per_dataset = {"refstats": 1, "stage1": stage1, "train": runs, "sample": runs, "evaluate": runs,
                   "diagnostics": prototypes, "report": 1}
    assert counts == {f"paper_{d}_{rule}": n for d in REFERENCE for rule, n in per_dataset.items()}
    text = run.stdout + run.stderr
    # the rules declare their GPU themselves (the profile's set-resources name the unprefixed rules only)
    train_jobs = re.findall(r"^rule paper_\w+_train:\n(?:    .*\n)+", text, re.MULTILINE)  # its indented lines
    assert len(train_jobs) == len(REFERENCE) * runs and all("gpu=1" in job for job in train_jobs)
    prepared = re.findall(r"^rule prepare_data:\n(?:    .*\n)*?    wildcards: data_root=data, dataset=(\w+)", text, re.MULTILINE)
    assert sorted(prepared) == sorted(REFERENCE)  # into data/{dataset}/, shared by every method and seed


def test_single_experiment_workflow_is_unchanged(tmp_path):
    """The ci config still plans its jobs under the plain rule names (the Snakefile includes one experiment)."""
    counts = _job_counts(dry_run(tmp_path, configfile=REPO / "config" / "ci.yaml"))
    assert counts == {"refstats": 1, "stage1": 3, "train": 7, "diagnostics": 2, "sample": 7, "evaluate": 7,
                      "report": 1, "all": 1}
