"""Shared by the rule scripts: the resolved config and the job's log file (stdout and stderr go there)."""

import contextlib

from pdm.config import resolve_config


@contextlib.contextmanager
def job(snakemake):
    with open(snakemake.log[0], "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield resolve_config(snakemake.config)
