import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job

from pdm.curves import guidance_report, sweep_report, training_curve_report
from pdm.html_tables import write_html_twin

REPORTS = {"fid_vs_nfe.png": sweep_report, "fid_vs_guidance.png": guidance_report,
           "fid_over_training.png": training_curve_report}

with job(snakemake) as cfg:  # noqa: F821
    out = snakemake.output  # noqa: F821
    make = REPORTS[Path(out.plot).name]
    make(snakemake.input.records, Path(out.table[0]).parent, Path(out.plot).parent,  # noqa: F821
         confidence=cfg.report.confidence)
    write_html_twin(out.table[1])  # tables/{name}.md -> .html for `snakemake --report`
