import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job, point

from pdm.steps import sample_step

with job(snakemake) as cfg:  # noqa: F821
    wc = snakemake.wildcards  # noqa: F821
    cfg, snapshot = point(cfg, wc)  # rules sample, sample_sweep and sample_snapshot
    model_dir = Path(snakemake.input.record).parent  # noqa: F821
    sample_step(cfg, wc.method, int(wc.seed), model_dir, Path(snakemake.output.record).parent,  # noqa: F821
                snapshot=snapshot)
