import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job

from pdm.report import report

with job(snakemake) as cfg:  # noqa: F821
    i, out = snakemake.input, snakemake.output  # noqa: F821
    stage1_records = [Path(folder) / "stage1.json" for folder in i.stage1]
    report(i.records, Path(out.results).parent, Path(out.fid_plot).parent, grids=i.grids, stage1_paths=stage1_records,
           reference_method=cfg.report.reference_method, confidence=cfg.report.confidence)
