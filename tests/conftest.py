"""Shared fixtures: tiny configs (from config/ci.yaml), CPU only, no network."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread: on a busy 2-core machine, OpenMP threads competing for cores slow small ops by 10x or more.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def no_network():
    """No test may touch the network: any socket connection in this process fails loudly."""
    import socket

    def refuse(*args, **kwargs):
        raise RuntimeError("tests must not touch the network")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        yield


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.fixture
def ci_raw() -> dict:
    return yaml.safe_load((REPO / "config" / "ci.yaml").read_text())


@pytest.fixture
def make_cfg(ci_raw):
    """make_cfg(**overrides) -> ExperimentConfig built from config/ci.yaml with nested overrides merged in."""
    from pdm.config import resolve_config

    def build(override: dict | None = None, replace_methods: dict | None = None):
        raw = _merge(ci_raw, override or {})
        if replace_methods is not None:
            raw["methods"] = replace_methods
        return resolve_config(raw)

    return build


@pytest.fixture
def tiny_data():
    """16 synthetic 16x16 one-channel images in 4 classes: fast and independent of any download."""
    from pdm.data import ImageDataset

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 1, 16, 16), generator=generator, dtype=torch.uint8)
    return ImageDataset("tiny", images, torch.arange(16) % 4, ("a", "b", "c", "d"))


@pytest.fixture(scope="session")
def isolated_inception_cache(tmp_path_factory):
    """A private Inception weight cache (converted once per session) and torch hub dir (so no IS weights are found)."""
    import time

    from pdm.metrics import inception

    root = tmp_path_factory.mktemp("metrics-env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDM_BENCH_CACHE", str(root / "cache"))
        mp.setenv("TORCH_HOME", str(root / "torch-home"))
        mp.delenv(inception.IS_WEIGHTS_ENV, raising=False)
        started = time.perf_counter()
        path = inception.converted_weights_path()
        print(f"\nconverted weights in {time.perf_counter() - started:.1f} s -> {path}")
        yield root


def snakemake(workdir: Path, *extra: str, configfile=REPO / "config" / "ci.yaml", timeout=900) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--cores", "2", *extra]
    if configfile is not None:
        command[command.index("--cores"):command.index("--cores")] = ["--configfile", str(configfile)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory) -> Path:
    """One complete run of config/ci.yaml through the real workflow, shared by the workflow and sweep tests."""
    workdir = tmp_path_factory.mktemp("ci-workflow")
    run = snakemake(workdir)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return workdir


def train_until_first_checkpoint(cfg, method: str, seed: int, out_dir: Path) -> None:
    """Run pdm.trainer.train and stop it right after it saves its first resumable checkpoint, as a kill would."""
    import pdm.trainer as trainer

    class Interrupt(Exception):
        pass

    original = trainer.save_training_state

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        raise Interrupt

    trainer.save_training_state = save_then_stop
    try:
        with pytest.raises(Interrupt):
            trainer.train(cfg, method, seed, out_dir)
    finally:
        trainer.save_training_state = original
