import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job

from pdm.report import report

with job(snakemake) as cfg:  # noqa: F821
    out = snakemake.output  # noqa: F821
    results = Path(f"results/{cfg.experiment}")
    report(snakemake.input, Path(out.results).parent, Path(out.fid_plot).parent, results / "samples")  # noqa: F821
