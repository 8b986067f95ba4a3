import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir)))  # noqa: F821 (snakemake injects `snakemake`)
from _job import job, point

from pdm.steps import evaluate_step

with job(snakemake) as cfg:  # noqa: F821
    wc, i = snakemake.wildcards, snakemake.input  # noqa: F821
    cfg, snapshot = point(cfg, wc)  # rules evaluate, evaluate_sweep and evaluate_snapshot
    model_dir, samples_dir = Path(i.train).parent, Path(i.samples).parent
    evaluate_step(cfg, wc.method, int(wc.seed), model_dir, samples_dir, i.refstats, snakemake.output[0],  # noqa: F821
                  snapshot=snapshot)
