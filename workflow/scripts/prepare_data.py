"""The prepare_data rule: `pdm-bench data prepare {dataset} --root {data_root}` (offline), its output in the log."""

import contextlib
import sys

from pdm.datasets.prepare import prepare

wildcards = snakemake.wildcards  # noqa: F821 (snakemake injects `snakemake`)
with open(snakemake.log[0], "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):  # noqa: F821
    try:
        prepare(wildcards.dataset, wildcards.data_root)
    except (ValueError, FileNotFoundError) as err:  # DataError: a missing or corrupt native file, named with the fix
        print(f"error: {err}\n(this job never downloads; to fetch the files run once: pdm-bench data prepare "
              f"{wildcards.dataset} --root {wildcards.data_root} --download)", file=log)
        sys.exit(1)
