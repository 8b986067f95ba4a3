import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job

from pdm.steps import train_step

with job(snakemake) as cfg:  # noqa: F821
    wc = snakemake.wildcards  # noqa: F821
    stage1_dir = snakemake.input.get("stage1")  # noqa: F821 (LDM's and RDM's stage-1 folder, else None)
    train_step(cfg, wc.method, int(wc.seed), Path(snakemake.output.record).parent, stage1_dir)  # noqa: F821
