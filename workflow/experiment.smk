# One experiment: its rules, from a config that the Snakefile has loaded (base merged, --config overrides typed). The
# Snakefile includes this file for a single experiment, and loads it as one Snakemake module per experiment for a
# config that lists `experiments:` (config/paper/all.yaml), where every rule name gets the experiment's prefix.
from pathlib import Path

from pdm.data import PREPARED_DATASETS, manifest_path
from pdm.identity import (
    evaluation_identity,
    refstats_identity,
    sampling_identity,
    stage1_identity,
    training_identity,
)
from pdm.methods.registry import get_method_class
from pdm.preflight import check_device_or_exit, check_models_or_exit, preflight_or_exit
from pdm.checkpoint import snapshot_name
from pdm.sweep import FINAL, curve_fractions

# Validate against pdm/config.schema.yaml, fill defaults, check data: every input error surfaces here, before any
# job, as one message (no traceback). The GPU check waits for `onstart` (the first point where Snakemake knows
# whether the jobs run on this machine) except inside a cluster job, where this machine is the one that runs it.
CFG = preflight_or_exit(config, local=workflow.remote_exec)


onstart:
    if workflow.local_exec:
        check_device_or_exit(CFG)


EXP = CFG.experiment
if not CFG.trains:  # sweep.models_from: another experiment's models are plain inputs, checked before any job
    check_models_or_exit(CFG)
METHODS = list(CFG.methods)
SEEDS = list(CFG.seeds)
STAGE1_METHODS = [m for m in METHODS if get_method_class(m).has_stage1]
SNAPSHOTS = [snapshot_name(f) for f in CFG.train.snapshots]  # models/{method}/seed{seed}/snapshots/{name}/
PROTOTYPE_METHODS = [m for m in METHODS if get_method_class(m).has_prototypes]  # get the prototype diagnostics
R = f"results/{EXP}"
REFSTATS = f"{R}/refstats/{CFG.data.dataset}{CFG.data.resolution}_inception_{refstats_identity(CFG)}.npz"
# GPU jobs declare one GPU (profiles cap how many run at once): `device: cuda`, or `auto` where this machine has one.
GPUS_PER_JOB = 1 if CFG.device == "cuda" or (CFG.device == "auto" and __import__("torch").cuda.is_available()) else 0
# A prepared dataset (pdm.data.PREPARED_DATASETS) is an input of every job that reads the data: its manifest, made by
# the prepare_data rule (workflow/rules/data.smk) where it is missing.
DATA_INPUTS = [str(manifest_path(CFG.data))] if CFG.data.dataset in PREPARED_DATASETS else []

wildcard_constraints:
    method="|".join(METHODS),
    seed=r"\d+",

include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/common.smk"
include: "rules/curves.smk"
include: "rules/diagnostics.smk"


# An experiment that trains reports its methods; a sweep adds FID against NFE (and against the guidance weight);
# train.snapshots adds FID over training.
# With sweep.models_from, only the curves: nothing is trained.
rule all:
    input:
        rules.report.output if CFG.trains else [],
        rules.sweep_report.output if CFG.sweep.enabled else [],
        rules.guidance_report.output if CFG.sweep.guidance_weights else [],
        rules.training_curve.output if CFG.train.snapshots else [],
        expand(f"{R}/diagnostics/{{method}}/seed{{seed}}/diagnostics.json", method=PROTOTYPE_METHODS, seed=SEEDS)
        if CFG.trains
        else [],
    default_target: True
