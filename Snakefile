# pdm-bench workflow: trains every method of the config under one budget, samples, scores and reports.
#   snakemake --cores all                                  # the embedded default (config/default.yaml)
#   snakemake --cores all --config seeds=[0,1,2]           # overrides merge onto config/default.yaml
#   snakemake --cores all --configfile config/ci.yaml      # another experiment (replaces the default, no merging)
#   snakemake --workflow-profile profiles/slurm --configfile config/paper/cifar10.yaml   # on a SLURM cluster
# profiles/default (keep going, rerun incomplete jobs, one GPU job at a time) is used unless another is named.
# Results land in results/{experiment}/ (see results/README.md).
from pdm.config import coerce_overrides
from pdm.identity import (
    evaluation_identity,
    refstats_identity,
    sampling_identity,
    stage1_identity,
    training_identity,
)
from pdm.methods.registry import get_method_class
from pdm.preflight import check_device_or_exit, preflight_or_exit

if not workflow.overwrite_configfiles:  # no --configfile: --config key=value overrides merge onto the default
    configfile: f"{workflow.basedir}/config/default.yaml"  # beside this Snakefile, also under --directory

coerce_overrides(config, workflow.config_settings.overwrite_config or {})  # `--config seeds=[0,1]` gives strings
# Validate against pdm/config.schema.yaml, fill defaults, check data: every input error surfaces here, before any
# job, as one message (no traceback). The GPU check waits for `onstart` (the first point where Snakemake knows
# whether the jobs run on this machine) except inside a cluster job, where this machine is the one that runs it.
CFG = preflight_or_exit(config, local=workflow.remote_exec)


onstart:
    if workflow.local_exec:
        check_device_or_exit(CFG)


EXP = CFG.experiment
METHODS = list(CFG.methods)
SEEDS = list(CFG.seeds)
STAGE1_METHODS = [m for m in METHODS if get_method_class(m).has_stage1]
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
include: "workflow/rules/diagnostics.smk"


rule all:
    input:
        rules.report.output,
        expand(f"{R}/diagnostics/{{method}}/seed{{seed}}/diagnostics.json", method=PROTOTYPE_METHODS, seed=SEEDS),
    default_target: True
