# The paper tables across datasets: the same code path as `pdm-bench paper-tables` (pdm.cli), its output in the log.
import contextlib
import sys
from pathlib import Path

from pdm.cli import main

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821 (snakemake injects `snakemake`)
args = ["paper-tables", "--tables", *i.tables, "--out", str(Path(o.scores).parent),
        "--plots", str(Path(o.samples).parent), "--confidence", str(p.confidence)]
args += ["--published", i.published[0]] if i.published else []
with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # noqa: F821
    status = main(args)
sys.exit(status)
