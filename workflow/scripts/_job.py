"""Shared by the rule scripts: the resolved config and the job's log file (stdout and stderr go there).

An expected failure (bad input, a stale or foreign file, a diverged stage 1) ends the job with one line in its log
that names the problem and the fix; anything else keeps its traceback, since that is a bug to report.
"""

import contextlib
import sys

from pdm.config import resolve_config

EXPECTED = (ValueError, FileNotFoundError, FloatingPointError)  # ConfigError and DataError are ValueErrors


@contextlib.contextmanager
def job(snakemake):
    with open(snakemake.log[0], "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield resolve_config(snakemake.config)
        except EXPECTED as err:
            print(f"error: {err}", file=log)
            sys.exit(1)


def point(cfg, wildcards):
    """The config and snapshot of one job: a sweep point ({sampler}, {steps}) samples with that sampler and step
    count, a guidance point ({weight}) with that guidance weight, a training-curve point ({fraction}) the snapshot's
    weights (None: the final weights); else unchanged."""
    from pdm.sweep import FINAL

    if hasattr(wildcards, "sampler"):
        cfg = cfg.with_sampling(wildcards.sampler, int(wildcards.steps))
    if hasattr(wildcards, "weight"):  # a guidance-sweep point: the method's guidance weight, the experiment's sampler
        cfg = cfg.with_method_options(wildcards.method, guidance_weight=float(wildcards.weight))
    fraction = getattr(wildcards, "fraction", FINAL)
    return cfg, None if fraction == FINAL else float(fraction)
