# pdm-bench workflow: trains every method of the config under one budget, samples, scores and reports.
#   snakemake --cores all                                  # the embedded default (config/default.yaml)
#   snakemake --cores all --config seeds=[0,1,2]           # overrides merge onto config/default.yaml
#   snakemake --cores all --configfile config/ci.yaml      # another experiment (replaces the default, no merging)
#   snakemake --workflow-profile workflow/profiles/slurm --configfile config/paper/cifar10.yaml   # SLURM (docs/cluster.md)
#   snakemake --cores all --configfile config/sweep_default.yaml   # FID against NFE over the default's models, no training
# profiles/default (keep going, rerun incomplete jobs, one GPU job at a time) is used unless another is named.
# Results land in results/{experiment}/ (see results/README.md).
import os
from pathlib import Path

# Every job inherits this: glibc hands each freed block above its mmap threshold (at most 32 MB by default) back to
# the OS, so every Inception batch and sampling step page-faults its activations in again. A 1 GiB threshold keeps
# them in the process: a scoring job of the default 15.8 -> 13.7 s (system time 3.0 -> 1.0 s), peak RSS 1.9 -> 2.3 GB
# (README, "Where the default run's time goes"). A value already set in the environment wins.
os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(2**30))

from pdm.config import coerce_overrides, merge_base
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

if not workflow.overwrite_configfiles:  # no --configfile: --config key=value overrides merge onto the default
    configfile: f"{workflow.basedir}/config/default.yaml"  # beside this Snakefile, also under --directory

coerce_overrides(config, workflow.config_settings.overwrite_config or {})  # `--config seeds=[0,1]` gives strings
# `base: other.yaml` in a config file: that file first, this one (and --config overrides) on top (pdm.config.merge_base);
# the base is found beside the --configfile that names it, else in config/. In place: the jobs see the merged config.
_base_dirs = [Path(f).parent for f in workflow.overwrite_configfiles or ()] + [Path(workflow.basedir) / "config"]
_merged = merge_base(config, _base_dirs)
config.clear()
config.update(_merged)
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

wildcard_constraints:
    method="|".join(METHODS),
    seed=r"\d+",

include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/common.smk"
include: "workflow/rules/curves.smk"
include: "workflow/rules/diagnostics.smk"


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
