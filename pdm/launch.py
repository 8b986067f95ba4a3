"""Data-parallel training launched by the train job itself: one process per GPU the job was given.

The workflow's train rule reads its `gpu` resource (pdm.launch.processes_for): 0 or 1 trains in the job's own
process as always; N > 1 starts N processes with torchrun (`torch.distributed.run --standalone`, what
`accelerate launch --multi_gpu` runs underneath; standalone picks a free rendezvous port, so several multi-GPU jobs
can share a node), each running `pdm-bench train` on its share of every global batch (pdm.shards, pdm.trainer).
The config the job resolved is written to a YAML file beside the outputs for the processes and removed after.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from pdm.config import ExperimentConfig, load_config
from pdm.io import atomic_path

CLI = ("-m", "pdm.cli")
TRAINING_FAILED = 3  # pdm.cli's exit status when training diverged: the failed train.json is written, not an error


def processes_for(gpus, device_count: int | None = None) -> int:
    """How many training processes a job given `gpus` GPUs (its resource; None or 0 on CPU) runs: one per GPU."""
    wanted = int(gpus or 0)
    if wanted <= 1:
        return 1
    if device_count is None:
        import torch

        device_count = torch.cuda.device_count()
    if device_count < wanted:
        raise ValueError(f"the train job was given gpu={wanted} but torch sees {device_count} GPU(s) here; give it at "
                         f"most {device_count} (--set-resources train:gpu={max(device_count, 1)}) or run it where "
                         f"{wanted} GPUs are visible (CUDA_VISIBLE_DEVICES, SLURM --gpus)")
    return wanted


def train_command(config_path: str | Path, method: str, seed: int, out: str | Path, num_processes: int,
                  stage1_dir: str | Path | None = None, program: tuple[str, ...] = CLI) -> list[str]:
    """The command that trains one method and seed in `num_processes` processes (1: plain `python -m pdm.cli`).

    `program` is what each process runs with the train arguments: the CLI (a test runs a tracing wrapper script).
    """
    train = [*program, "train", "--config", str(config_path), "--method", method, "--seed", str(seed),
             "--out", str(out)] + (["--stage1-dir", str(stage1_dir)] if stage1_dir is not None else [])
    if num_processes == 1:
        return [sys.executable, *train]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc_per_node", str(num_processes), *train]


def launch_training(cfg: ExperimentConfig, method: str, seed: int, out: str | Path, num_processes: int,
                    stage1_dir: str | Path | None = None, threads: int | None = None, program: tuple[str, ...] = CLI) -> int:
    """Train in `num_processes` processes, their output going to this process's stdout and stderr (the job log).

    Returns 0, or TRAINING_FAILED when training diverged (train.json then records why, and the job succeeds as a
    one-process job does); any other failure raises.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "launch_config.yaml"
    with atomic_path(config_path) as tmp:
        Path(tmp).write_text(yaml.safe_dump(dict(cfg.resolved), sort_keys=False))
    if load_config(config_path).hash != cfg.hash:  # the processes must train exactly the job's config
        raise RuntimeError(f"{config_path} does not reload as the job's config (hash {cfg.hash}); please report this")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (threads or num_processes) // num_processes)))
    try:
        sys.stdout.flush(), sys.stderr.flush()
        run = subprocess.run(train_command(config_path, method, seed, out, num_processes, stage1_dir, program), env=env,
                             stdout=sys.stdout, stderr=sys.stderr, check=False)
    finally:
        config_path.unlink(missing_ok=True)
    if run.returncode != 0 and _diverged(cfg, method, seed, out):
        return TRAINING_FAILED  # torchrun reports any failed process as 1: train.json tells a diverged run apart
    if run.returncode not in (0, TRAINING_FAILED):
        raise RuntimeError(f"data-parallel training of {method} seed {seed} in {num_processes} processes exited with "
                           f"status {run.returncode}; the processes' errors are above in this log")
    return run.returncode


def _diverged(cfg: ExperimentConfig, method: str, seed: int, out: Path) -> bool:
    """Whether this training run wrote a failed train.json (training diverged: a result, not a job error)."""
    from pdm.identity import training_identity
    from pdm.io import read_json

    try:
        record = read_json(out / "train.json")
    except (OSError, ValueError):
        return False
    return record.get("status") == "failed" and record.get("train_id") == training_identity(cfg, method, seed)
