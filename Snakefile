# pdm-bench workflow: trains every method of the config under one budget, samples, scores and reports.
#   snakemake --cores all                                  # the embedded default (config/default.yaml)
#   snakemake --cores all --config seeds=[0,1,2]           # overrides merge onto config/default.yaml
#   snakemake --cores all --configfile config/ci.yaml      # another experiment (replaces the default, no merging)
#   snakemake --cores all --configfile config/paper/cifar10.yaml  # one paper dataset (GPU scale, docs/paper.md)
#   snakemake --cores all --configfile config/paper/all.yaml      # every paper dataset in one workflow
#   snakemake --workflow-profile workflow/profiles/slurm --configfile config/paper/all.yaml   # on a SLURM cluster
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

from pdm.config import ConfigError, coerce_overrides, merge_base, resolve_config
from pdm.experiments import experiment_configs, is_multi_experiment
from pdm.preflight import check_device_or_exit

report: "workflow/report/workflow.rst"  # the front page of `snakemake --report`; docs/report.md


if not workflow.overwrite_configfiles:  # no --configfile: --config key=value overrides merge onto the default
    configfile: f"{workflow.basedir}/config/default.yaml"  # beside this Snakefile, also under --directory

coerce_overrides(config, workflow.config_settings.overwrite_config or {})  # `--config seeds=[0,1]` gives strings
# `base: other.yaml` in a config file: that file first, this one (and --config overrides) on top (pdm.config.merge_base);
# the base is found beside the --configfile that names it, else in config/. In place: the jobs see the merged config.
_base_dirs = [Path(f).parent for f in workflow.overwrite_configfiles or ()] + [Path(workflow.basedir) / "config"]
_merged = merge_base(config, _base_dirs)
config.clear()
config.update(_merged)

# Preparing a dataset (the paper's, pdm.data.PREPARED_DATASETS) is shared by every experiment that trains on it.
include: "workflow/rules/data.smk"

if not is_multi_experiment(config):  # one experiment: its rules under their own names (train, sample, evaluate, ...)
    # `include:` would restore the default target afterwards; its `rule all` is the default target here
    workflow.include("workflow/experiment.smk", overwrite_default_target=True)

else:  # `experiments: [a.yaml, ...]` (config/paper/all.yaml): one module per experiment, rules named {experiment}_train, ...
    try:
        EXPERIMENTS = experiment_configs(config, _base_dirs)
    except ConfigError as err:
        raise SystemExit(f"pdm-bench: error: {err}") from None
    for _experiment, _experiment_config in EXPERIMENTS.items():

        module:
            name: _experiment
            snakefile: "workflow/experiment.smk"
            config: _experiment_config

        _prefix = f"{_experiment}_"  # Snakemake resolves a module's name and rule prefix from these variables

        use rule * from _experiment as _prefix*

    onstart:  # a module's own `onstart` is not run (Snakemake runs the main Snakefile's only)
        if workflow.local_exec:
            for _experiment_config in EXPERIMENTS.values():
                check_device_or_exit(resolve_config(_experiment_config))

    PAPER_EXPERIMENTS = list(EXPERIMENTS)  # the paper's tables across datasets (workflow/rules/paper.smk)

    include: "workflow/rules/paper.smk"

    rule all:
        input:
            [getattr(rules, f"{name}_all").input for name in EXPERIMENTS],
            rules.paper_tables.output,
        default_target: True
