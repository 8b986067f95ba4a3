# pdm-bench workflow: trains every method of the config under one budget, samples, scores and reports.
#   snakemake --cores all                                  # the embedded default (config/default.yaml)
#   snakemake --cores all --configfile config/ci.yaml      # another experiment (replaces the default, no merging)
#   snakemake --profile workflow/profiles/slurm --configfile config/paper/cifar10.yaml   # on a SLURM cluster
# Results land in results/{experiment}/ (see results/README.md).
from pdm.cli import preflight
from pdm.config import resolve_config
from pdm.methods.registry import get_method_class

if not config:  # only when no --configfile was given, so a config never inherits stray keys from the default
    configfile: "config/default.yaml"

# Validate against pdm/config.schema.yaml, fill defaults, check data: every config error surfaces here, before any job.
CFG = resolve_config(config)
preflight(CFG)

EXP = CFG.experiment
METHODS = list(CFG.methods)
SEEDS = list(CFG.seeds)
R = f"results/{EXP}"
REFSTATS = f"{R}/refstats/{CFG.data.dataset}{CFG.data.resolution}_inception.npz"

wildcard_constraints:
    method="|".join(METHODS),
    seed=r"\d+",

include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        rules.report.output,
    default_target: True
