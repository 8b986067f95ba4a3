"""What a job needs to know about the machine it runs on: its device, its threads, the code and library versions.

One small module so that the trainer, the sampler, the metrics and the stage-1 jobs resolve these the same way
(and so that nothing has to import the trainer to ask which device to use).
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

from pdm import __version__

RECORD_FORMAT = 2  # bump when a record's fields change meaning; results/README.md documents every field
REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_device(cfg) -> str:
    """'cuda' or 'cpu' for `cfg.device` (auto: cuda where torch sees a GPU). The preflight rejects cuda without one."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no GPU; set device: auto or cpu")
    return "cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def setup_job(cfg) -> str:
    """Resolve the device and, on CPU, pin the job's torch threads (several jobs share the cores). Returns the device."""
    device = resolve_device(cfg)
    if device == "cpu":
        torch.set_num_threads(cfg.threads_per_job)
    return device


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the checkout the package runs from ('+dirty' when it has uncommitted changes), or 'unknown'."""
    try:
        run = functools.partial(subprocess.run, cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True)
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"  # an installed wheel, or no git on the machine


def cpu_model() -> str:
    """The CPU model name: scores and timings differ between CPU types, so every record carries it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    """Versions of the code that trained or sampled a model (the metric libraries record their own)."""
    import diffusers

    return {"pdm_bench": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


def provenance() -> dict:
    """Fields every record carries: its format, the package version, the git commit and the CPU model."""
    return {"record_format": RECORD_FORMAT, "pdm_bench_version": __version__, "git_commit": git_commit(),
            "cpu_model": cpu_model()}
