import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job

from pdm.launch import launch_training, processes_for
from pdm.steps import train_step

with job(snakemake) as cfg:  # noqa: F821
    wc = snakemake.wildcards  # noqa: F821
    stage1_dir = snakemake.input.get("stage1")  # noqa: F821 (LDM's and RDM's stage-1 folder, else None)
    model_dir = Path(snakemake.output.record).parent  # noqa: F821
    # one process per GPU the job was given (resources.gpu; docs/multigpu.md), data-parallel when more than one
    num_processes = processes_for(snakemake.resources.get("gpu", 0))  # noqa: F821
    if num_processes == 1:
        train_step(cfg, wc.method, int(wc.seed), model_dir, stage1_dir)
    else:
        launch_training(cfg, wc.method, int(wc.seed), model_dir, num_processes, stage1_dir, snakemake.threads)  # noqa: F821
