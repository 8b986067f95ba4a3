import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job

from pdm.report import report

with job(snakemake) as cfg:  # noqa: F821
    i, out = snakemake.input, snakemake.output  # noqa: F821
    samples_root = Path(f"results/{cfg.experiment}/samples")
    report(i.records, Path(out.results).parent, Path(out.fid_plot).parent, samples_root, i.stage1)
