import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job

from pdm.curves import sweep_report, training_curve_report

with job(snakemake) as cfg:  # noqa: F821
    out = snakemake.output  # noqa: F821
    make = sweep_report if Path(out.plot).name == "fid_vs_nfe.png" else training_curve_report
    make(snakemake.input.records, Path(out.table[0]).parent, Path(out.plot).parent,  # noqa: F821
         confidence=cfg.report.confidence)
