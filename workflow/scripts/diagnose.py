import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job

from pdm.diagnostics import diagnose

with job(snakemake) as cfg:  # noqa: F821
    wc = snakemake.wildcards  # noqa: F821
    model_dir = Path(snakemake.input.record).parent  # noqa: F821
    diagnose(cfg, wc.method, int(wc.seed), model_dir, Path(snakemake.output.record).parent)  # noqa: F821
