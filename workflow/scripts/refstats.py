import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job

from pdm.steps import refstats_step

with job(snakemake) as cfg:  # noqa: F821
    refstats_step(cfg, snakemake.output[0])  # noqa: F821
