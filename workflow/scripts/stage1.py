import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job

from pdm.steps import stage1_step

with job(snakemake) as cfg:  # noqa: F821
    wc = snakemake.wildcards  # noqa: F821
    stage1_step(cfg, wc.method, int(wc.seed), snakemake.output[0])  # noqa: F821
