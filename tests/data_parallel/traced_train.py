"""`pdm-bench train` with a trace of what each training step saw, for tests/test_multiprocess.py.

Trains each method of $PDM_TRACE_METHODS (comma-separated) in turn into OUT/<method> (OUT: the --out given), with the
other train arguments unchanged: one launch (one process start-up) for every method. Records, per real training step
(not the budget probe), the dataset positions of this process's batch (observed in BatchStream.batch, which the
trainer's step calls) and the loss terms the step returned (the processes' mean), in OUT/<method>/rank{RANK}.json.
"""

import json
import os
import sys
from pathlib import Path

from pdm import cli, data, trainer

seen: list = []
trace: dict = {}
original_batch, original_step = data.BatchStream.batch, trainer._Run._step


def traced_batch(self, step, rank=0, world_size=1):
    out = original_batch(self, step, rank, world_size)
    seen.append(out[2].tolist())
    return out


def traced_step(self, step, optimizer, ema, probe=False):
    seen.clear()
    logs = original_step(self, step, optimizer, ema, probe)
    if not probe:
        trace["positions"][step] = seen[-1]
        trace["logs"][step] = {key: float(value) for key, value in logs.items()}
    return logs


data.BatchStream.batch, trainer._Run._step = traced_batch, traced_step
args = sys.argv[1:]
out = Path(args[args.index("--out") + 1])
for method in os.environ["PDM_TRACE_METHODS"].split(","):
    trace.update(positions={}, logs={})
    args[args.index("--method") + 1], args[args.index("--out") + 1] = method, str(out / method)
    status = cli.main(args)
    if status != 0:
        sys.exit(status)
    (out / method / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(trace))
